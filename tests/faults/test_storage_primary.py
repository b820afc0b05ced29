"""The storage primary: one agent publishes Ceph's state; another takes over if it dies."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient

from pvc_tui.cluster import ClusterClient, OperationFailed, layout
from pvc_tui.cluster.connection import wait_on_znode
from pvc_tui.cluster.storage import StorageStatus, parse_status
from pvc_tui.sandbox.ceph import CephCluster, ceph_unavailable_reason, start_ceph, stop_ceph
from pvc_tui.sandbox.zookeeper import ZooKeeperServer
from tests.conftest import ROLE_CREDENTIALS, AgentFactory, new_chroot, require


@pytest.fixture
def ceph(tmp_path: Path) -> Iterator[CephCluster]:
    require(ceph_unavailable_reason())
    cluster = start_ceph(tmp_path / "ceph", osds=1)
    yield cluster
    stop_ceph(cluster)


def wait_status(client: ClusterClient, check: Any, timeout: float, what: str) -> StorageStatus:
    def on_data(data: bytes | None, stat: Any) -> StorageStatus | None:
        if data is None:
            return None
        status = parse_status(data)
        return status if check(status) else None

    return wait_on_znode(client.zk, layout.STORAGE_STATUS, on_data, timeout, lambda: what)


def stored(status: StorageStatus, name: str) -> int:
    pool = status.pool(name)
    return pool.stored if pool else -1


def test_one_primary_publishes_and_another_takes_over(
        client: ClusterClient, start_agent: AgentFactory, ceph: CephCluster) -> None:
    import rados
    import rbd

    agents = {name: start_agent(name, "--ceph-conf", str(ceph.conf)) for name in ("hv1", "hv2")}
    first = wait_status(client, lambda s: s.health == "HEALTH_OK" and s.pool("rbd")
                        and s.usage.get("num_osds") == 1, 30,
                        "no storage status with HEALTH_OK and the rbd pool")
    assert first.primary in agents and first.error == ""
    assert [(o.up, o.in_cluster) for o in first.osds] == [(True, True)]
    rbd_pool = first.pool("rbd")
    assert rbd_pool is not None and rbd_pool.size == 1 and first.usage["num_osds"] == 1

    # a write shows up in the pool's figures (the mgr reports every second)
    cluster = rados.Rados(conffile=str(ceph.conf))
    cluster.connect(timeout=10)
    try:
        with cluster.open_ioctx("rbd") as ioctx:
            rbd.RBD().create(ioctx, "vol1", 64 << 20)
            with rbd.Image(ioctx, "vol1") as image:
                image.write(b"x" * (4 << 20), 0)
    finally:
        cluster.shutdown()
    written = time.monotonic()
    wait_status(client, lambda s: stored(s, "rbd") >= 4 << 20, 30,
                "the write never showed in the pool's stored bytes")
    print(f"write -> pool stats published: {time.monotonic() - written:.2f} s")

    # the primary dies without a word: the other agent takes over once its session ends
    os.kill(agents[first.primary].ref.pid, signal.SIGKILL)
    killed = time.monotonic()
    other = next(n for n in agents if n != first.primary)
    after = wait_status(client, lambda s: s.primary == other and s.updated_at > time.time() - 2,
                        60, "no other agent took over as storage primary")
    print(f"primary killed -> {other} publishing: {time.monotonic() - killed:.2f} s")
    assert after.health == "HEALTH_OK", after.health_checks
    # ... and executes the next request
    volume = client.storage.volumes.add("rbd", "after-failover", 8 << 20)
    assert volume.size == 8 << 20
    assert "after-failover" in {v.name for v in client.storage.volumes.list("rbd")}


def test_primary_dying_mid_request_fails_clearly(zk_server: ZooKeeperServer) -> None:
    """The requester sees the claim vanish without a result: a clear failure, no hang.

    The dying primary is a second real ZooKeeper session that claims the request exactly
    as an agent does (one transaction) and then ends.
    """
    hosts = new_chroot(zk_server)
    with ClusterClient.connect(hosts, credentials=ROLE_CREDENTIALS["agent"]) as client:
        client.zk.ensure_path(layout.STORAGE_REQUESTS)
        client.zk.ensure_path(layout.STORAGE_CLAIMS)
        outcome: dict[str, Any] = {}

        def request() -> None:
            try:
                client.storage.volumes.add("rbd", "v1", 1 << 30)
            except OperationFailed as exc:
                outcome["error"] = str(exc)

        thread = threading.Thread(target=request)
        thread.start()
        primary = KazooClient(hosts=hosts, auth_data=[ROLE_CREDENTIALS["agent"].auth])
        primary.start(timeout=10)
        arrived = threading.Event()
        children: list[str] = []

        def on_children(event: object) -> None:
            arrived.set()

        while not (children := primary.get_children(layout.STORAGE_REQUESTS,
                                                    watch=on_children)):
            assert arrived.wait(10), "the request never arrived"
            arrived.clear()
        path = layout.storage_request_path(children[0])
        data, stat = primary.get(path)
        claimed = {**json.loads(data), "state": "claimed", "claimed_by": "hv9"}
        txn = primary.transaction()
        txn.set_data(path, layout.encode(claimed), version=stat.version)
        txn.create(layout.storage_claim_path(children[0]), b"hv9", ephemeral=True)
        assert not any(isinstance(r, Exception) for r in txn.commit())
        killed = time.monotonic()
        primary.stop()  # the session ends: its ephemeral claim goes
        primary.close()
        thread.join(timeout=10)
        assert not thread.is_alive(), "the requester hung"
        assert "storage primary hv9 stopped while running it" in outcome["error"]
        print(f"claim gone -> requester failed: {time.monotonic() - killed:.3f} s")


def test_changes_publish_at_once_between_full_scans(
        client: ClusterClient, start_agent: AgentFactory, ceph: CephCluster) -> None:
    """With a 30 s interval, what a command touched is published at once anyway."""
    start_agent("hv1", "--ceph-conf", str(ceph.conf), "--keepalive-interval", "30")
    wait_status(client, lambda s: s.pool("rbd") is not None, 30, "no storage status")

    def published(pool: str, name: str, present: bool = True) -> None:
        wait_on_znode(client.zk, layout.volume_path(pool, name),
                      lambda d, s: True if (d is not None) == present else None, 5,
                      lambda: f"{pool}/{name} {'not published' if present else 'still there'}")

    started = time.monotonic()
    client.storage.volumes.add("rbd", "quick", 8 << 20)
    published("rbd", "quick")
    client.storage.volumes.rename("rbd", "quick", "quicker")
    published("rbd", "quick", present=False)
    published("rbd", "quicker")
    client.storage.snapshots.add("rbd", "quicker", "s1")
    wait_on_znode(client.zk, layout.volume_path("rbd", "quicker"),
                  lambda d, s: True if d and b'"s1"' in d else None, 5,
                  lambda: "the snapshot was not published")
    client.storage.pools.add("gone", pgs=8)
    client.storage.volumes.add("gone", "v", 1 << 20)
    published("gone", "v")
    client.storage.pools.remove("gone")
    published("gone", "v", present=False)
    assert time.monotonic() - started < 25  # all before the next full scan


def test_primary_killed_mid_request_then_restarted(
        client: ClusterClient, start_agent: AgentFactory, ceph: CephCluster) -> None:
    """SIGKILL the primary while it copies a volume: the requester gets a clear failure
    (never a hang), the restarted agent serves again, and the copy exists at most once."""
    import rados
    import rbd

    agent = start_agent("hv1", "--ceph-conf", str(ceph.conf))
    wait_status(client, lambda s: s.pool("rbd") is not None, 30, "no storage status")
    client.storage.volumes.add("rbd", "big", 256 << 20)
    cluster = rados.Rados(conffile=str(ceph.conf))
    cluster.connect(timeout=10)
    try:  # real data, so that a full copy takes a while
        with cluster.open_ioctx("rbd") as ioctx, rbd.Image(ioctx, "big") as image:
            for i in range(48):
                image.write(bytes([i]) * (4 << 20), i * (4 << 20))
    finally:
        cluster.shutdown()
    outcome: dict[str, Any] = {}

    def copy() -> None:
        try:
            outcome["volume"] = client.storage.volumes.clone("rbd", "big", "big-copy")
        except OperationFailed as exc:
            outcome["error"] = str(exc)

    claimed = threading.Event()

    def on_claims(children: list[str]) -> bool:
        if children:
            claimed.set()
        return not claimed.is_set()

    from kazoo.recipe.watchers import ChildrenWatch

    ChildrenWatch(client.zk, layout.STORAGE_CLAIMS, on_claims)
    thread = threading.Thread(target=copy)
    thread.start()
    assert claimed.wait(30), "the copy was never claimed"
    os.kill(agent.ref.pid, signal.SIGKILL)
    agent.proc.wait(timeout=10)
    thread.join(timeout=60)
    assert not thread.is_alive(), "the requester hung"
    print(f"copy with its primary killed: {outcome}")
    if "error" in outcome:
        assert "stopped while running it" in outcome["error"], outcome
    start_agent("hv1", "--ceph-conf", str(ceph.conf))
    client.storage.claim_timeout = 30.0
    names = [v.name for v in client.storage.volumes.list("rbd")]
    assert names.count("big-copy") <= 1 and names.count("big") == 1
    client.storage.volumes.add("rbd", "after-restart", 1 << 20)


def test_malformed_requests_are_answered_and_the_primary_serves_on(
        client: ClusterClient, start_agent: AgentFactory, ceph: CephCluster) -> None:
    """Requests written by a buggy client (not JSON, a list, an unknown command, bad
    arguments, a newer schema): each is answered as invalid with its reason; the primary
    carries on serving."""
    agent = start_agent("hv1", "--ceph-conf", str(ceph.conf))
    wait_status(client, lambda s: s.pool("rbd") is not None, 30, "no storage status")
    bad = {
        "bad-json": b"\xff{",
        "bad-list": b"[]",
        "bad-command": json.dumps({"command": "rm -rf /", "args": {}}).encode(),
        "bad-args": json.dumps({"command": "volume.add", "args": {"size": "x"}}).encode(),
        "bad-schema": json.dumps({"schema": 99, "command": "pool.list"}).encode(),
    }
    for name, data in bad.items():
        client.zk.create(layout.storage_request_path(name), data)

    def answered(data: bytes | None, stat: Any) -> dict[str, Any] | None:
        try:
            record = json.loads(data or b"")
        except ValueError:
            return None
        return record if isinstance(record, dict) and record.get("state") == "done" else None

    for name in bad:
        record = wait_on_znode(client.zk, layout.storage_request_path(name), answered, 15,
                               lambda name=name: f"{name} never answered")  # type: ignore[misc]
        assert record["ok"] is False and record["error_kind"] in ("invalid", "not found"), (
            name, record)
        assert record["error"] and "\n" not in record["error"]
    client.storage.volumes.add("rbd", "after-bad", 8 << 20)
    assert "after-bad" in [v.name for v in client.storage.volumes.list("rbd")]
    assert agent.proc.poll() is None and "Traceback" not in agent.log_text()
