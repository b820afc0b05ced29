"""The storage primary: one agent publishes Ceph's state; another takes over if it dies."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pvc_tui.cluster import ClusterClient, layout
from pvc_tui.cluster.connection import wait_on_znode
from pvc_tui.cluster.storage import StorageStatus
from pvc_tui.sandbox.ceph import CephCluster, ceph_unavailable_reason, start_ceph, stop_ceph
from tests.conftest import AgentFactory, require


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
        status = StorageStatus.from_record(layout.decode(data, layout.STORAGE_STATUS_FIELDS))
        return status if check(status) else None

    return wait_on_znode(client.zk, layout.STORAGE_STATUS, on_data, timeout, lambda: what)


def pool(status: StorageStatus, name: str) -> dict[str, Any]:
    return next((p for p in status.pools if p["name"] == name), {})


def test_one_primary_publishes_and_another_takes_over(
        client: ClusterClient, start_agent: AgentFactory, ceph: CephCluster) -> None:
    import rados
    import rbd

    agents = {name: start_agent(name, "--ceph-conf", str(ceph.conf)) for name in ("hv1", "hv2")}
    first = wait_status(client, lambda s: s.health == "HEALTH_OK" and pool(s, "rbd"), 30,
                        "no storage status with HEALTH_OK and the rbd pool")
    assert first.primary in agents and first.error == ""
    assert [o["status"] for o in first.osds] == ["up"]
    assert pool(first, "rbd")["size"] == 1 and first.usage["num_osds"] == 1

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
    wait_status(client, lambda s: pool(s, "rbd").get("stored", 0) >= 4 << 20, 30,
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
