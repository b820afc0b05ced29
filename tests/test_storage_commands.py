"""Every `storage` command through the CLI, run by a real primary agent on a real tiny Ceph.

One Ceph and one agent serve the whole module (pools and volumes get distinct names per
test); each command is a real request through ZooKeeper to the primary.
"""

from __future__ import annotations

import json
import queue
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pvc_tui.cli.main import main
from pvc_tui.cluster import ClusterClient, ClusterStore, StoreChange, layout
from pvc_tui.cluster.connection import wait_on_znode
from pvc_tui.cluster.storage import read_volumes
from pvc_tui.sandbox.zookeeper import ZooKeeperServer
from tests.conftest import ROLE_CREDENTIALS, StorageCluster, new_chroot, vm_xml


@dataclass
class Result:
    rc: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def cli(storage: StorageCluster, capsys: pytest.CaptureFixture[str]) -> Any:
    def run(*argv: str) -> Result:
        try:
            rc = main(["--zk", storage.hosts, *argv])
        except SystemExit as exc:  # argparse's usage errors
            rc = int(exc.code or 0)
        captured = capsys.readouterr()
        return Result(rc, captured.out, captured.err)

    return run


def ok(result: Result) -> Result:
    assert result.rc == 0, result.err
    return result


def refused(result: Result, text: str, rc: int = 2) -> None:
    assert result.rc == rc, (result.out, result.err)
    assert text in result.err, result.err
    assert result.err.count("\n") == 1, result.err  # one line


def volumes(cli: Any, pool: str = "rbd") -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in ok(cli("storage", "volume", "list", pool,
                                         "--format", "json")).json()}


def test_status_and_util(cli: Any) -> None:
    status = ok(cli("storage", "status", "--format", "json")).json()
    assert status["health"] == "HEALTH_OK" and status["primary"] == "hv1"
    assert [o["up"] for o in status["osds"]] == [True]
    text = ok(cli("storage", "status")).out
    assert "HEALTH_OK" in text and "1 (1 up, 1 in)" in text
    util = ok(cli("storage", "util")).out
    assert "raw size" in util and "rbd" in util


def test_pool_lifecycle(cli: Any) -> None:
    ok(cli("storage", "pool", "add", "p1", "--pgs", "8", "--replication", "size=1,min=1"))
    pools = {p["name"]: p for p in ok(cli("storage", "pool", "list", "--format", "json")).json()}
    assert pools["p1"]["pg_num"] == 8 and (pools["p1"]["size"], pools["p1"]["min_size"]) == (1, 1)
    refused(cli("storage", "pool", "add", "p1"), "pool p1 already exists")
    ok(cli("storage", "pool", "set-pgs", "p1", "16"))
    listing = ok(cli("storage", "pool", "list")).out
    assert any(line.split()[:3] == ["p1", str(pools["p1"]["id"]), "16"]
               for line in listing.splitlines()), listing
    refused(cli("storage", "pool", "remove", "p1"), "add --yes")
    assert "p1" in ok(cli("storage", "pool", "list")).out
    ok(cli("storage", "pool", "remove", "p1", "--yes"))
    assert "p1" not in ok(cli("storage", "pool", "list")).out
    refused(cli("storage", "pool", "remove", "p1", "--yes"), "pool p1 does not exist")
    refused(cli("storage", "pool", "set-pgs", "nopool", "8"), "pool nopool does not exist")


def test_volume_lifecycle(cli: Any, storage: StorageCluster) -> None:
    ok(cli("storage", "volume", "add", "rbd", "v1", "64M"))
    assert volumes(cli)["v1"]["size"] == 64 << 20
    refused(cli("storage", "volume", "add", "rbd", "v1", "64M"), "rbd/v1 already exists")
    ok(cli("storage", "volume", "resize", "rbd", "v1", "128M"))
    refused(cli("storage", "volume", "resize", "rbd", "v1", "32M"), "--allow-shrink")
    assert volumes(cli)["v1"]["size"] == 128 << 20  # unchanged
    ok(cli("storage", "volume", "resize", "rbd", "v1", "32M", "--allow-shrink"))
    assert volumes(cli)["v1"]["size"] == 32 << 20
    ok(cli("storage", "volume", "rename", "rbd", "v1", "v2"))
    ok(cli("storage", "volume", "clone", "rbd", "v2", "v3"))
    ok(cli("storage", "volume", "snapshot", "add", "rbd", "v2", "s1"))
    refused(cli("storage", "volume", "snapshot", "add", "rbd", "v2", "s1"), "already exists")
    out = ok(cli("storage", "volume", "clone", "rbd", "v2", "v4", "--snapshot", "s1")).out
    assert "clone of rbd/v2@s1" in out
    listed = volumes(cli)
    assert "v1" not in listed and listed["v3"]["parent"] == ""
    assert listed["v4"]["parent"] == "rbd/v2@s1" and listed["v3"]["size"] == 32 << 20
    snaps = ok(cli("storage", "volume", "snapshot", "list", "rbd", "v2", "--format",
                   "json")).json()
    assert [(s["volume"], s["name"]) for s in snaps] == [("v2", "s1")]
    assert "v2" in ok(cli("storage", "volume", "snapshot", "list")).out
    ok(cli("storage", "volume", "snapshot", "rollback", "rbd", "v2", "s1"))
    refused(cli("storage", "volume", "remove", "rbd", "v2", "--yes"), "has snapshots", rc=1)
    refused(cli("storage", "volume", "snapshot", "remove", "rbd", "v2", "s1"), "has clones",
            rc=1)
    for name in ("v4", "v3"):
        ok(cli("storage", "volume", "remove", "rbd", name, "--yes"))
    ok(cli("storage", "volume", "snapshot", "remove", "rbd", "v2", "s1"))
    ok(cli("storage", "volume", "remove", "rbd", "v2", "--yes"))
    assert not {"v2", "v3", "v4"} & set(volumes(cli))
    refused(cli("storage", "volume", "remove", "rbd", "v2", "--yes"), "does not exist")

    # the primary publishes the volumes too, promptly after each change
    ok(cli("storage", "volume", "add", "rbd", "pub1", "8M"))
    published = wait_on_znode(
        storage.client.zk, layout.volume_path("rbd", "pub1"),
        lambda d, s: d or None, 10, lambda: "volume record never published")
    assert json.loads(published)["size"] == 8 << 20
    assert any(v.name == "pub1" for v in read_volumes(storage.client.zk))


def test_osd_commands(cli: Any) -> None:
    osds = ok(cli("storage", "osd", "list", "--format", "json")).json()
    assert [(o["id"], o["up"], o["in_cluster"]) for o in osds] == [(0, True, True)]
    ok(cli("storage", "osd", "out", "0"))
    assert ok(cli("storage", "osd", "list", "--format", "json")).json()[0]["in_cluster"] is False
    ok(cli("storage", "osd", "in", "osd.0"))
    assert ok(cli("storage", "osd", "list", "--format", "json")).json()[0]["in_cluster"] is True
    ok(cli("storage", "osd", "set", "noout"))
    assert "noout" in ok(cli("storage", "status", "--format", "json")).json()["flags"]
    ok(cli("storage", "osd", "unset", "noout"))
    assert "noout" not in ok(cli("storage", "status", "--format", "json")).json()["flags"]
    refused(cli("storage", "osd", "in", "9"), "osd.9 does not exist")
    refused(cli("storage", "osd", "out", "x"), "invalid OSD id")
    refused(cli("storage", "osd", "set", "nosuchflag"), "invalid OSD flag")


@pytest.mark.parametrize(("argv", "text"), [
    (("volume", "add", "rbd", "bad/name", "1G"), "invalid volume name"),
    (("volume", "add", "rbd", "-x", "1G"), "error"),
    (("volume", "add", "rbd", "ok1", "10"), "invalid size"),
    (("volume", "add", "rbd", "ok1", "10Q"), "invalid size"),
    (("volume", "add", "rbd", "ok1", "0G"), "invalid size"),
    (("volume", "add", "nopool", "ok1", "1G"), "pool nopool does not exist"),
    (("pool", "add", ".hidden"), "invalid pool name"),
    (("pool", "add", "p9", "--pgs", "100"), "power of two"),
    (("pool", "add", "p9", "--pgs", "65536"), "power of two"),
    (("pool", "add", "p9", "--replication", "size=1,min=2"), "min <= size"),
    (("pool", "add", "p9", "--replication", "3"), "size=N,min=M"),
    (("pool", "add", "x" * 101), "invalid pool name"),
    (("volume", "snapshot", "add", "rbd", "nope", "s@1"), "invalid snapshot name"),
    (("volume", "snapshot", "add", "rbd", "nope", "s1"), "rbd/nope does not exist"),
    (("volume", "remove", "rbd", "nope"), "add --yes"),
])
def test_bad_input_changes_nothing(cli: Any, argv: tuple[str, ...], text: str) -> None:
    before = ok(cli("storage", "volume", "list", "--format", "json")).json()
    pools = ok(cli("storage", "pool", "list", "--format", "json")).json()
    refused(cli("storage", *argv), text)
    assert ok(cli("storage", "volume", "list", "--format", "json")).json() == before
    assert [p["name"] for p in ok(cli("storage", "pool", "list", "--format",
                                      "json")).json()] == [p["name"] for p in pools]


def test_storage_used_by_a_vm_needs_force(cli: Any, storage: StorageCluster) -> None:
    ok(cli("storage", "pool", "add", "vmpool", "--pgs", "8"))
    ok(cli("storage", "volume", "add", "vmpool", "disk1", "16M"))
    disk = ("<devices><disk type='network' device='disk'><source protocol='rbd' "
            "name='vmpool/disk1'/><target dev='vda' bus='virtio'/></disk></devices>")
    storage.client.define_vm(vm_xml("usesdisk").replace("</domain>", disk + "</domain>"),
                             "hv1")
    refused(cli("storage", "volume", "remove", "vmpool", "disk1", "--yes"),
            "used by VM usesdisk: add --force")
    refused(cli("storage", "volume", "rename", "vmpool", "disk1", "disk2"), "usesdisk")
    refused(cli("storage", "pool", "remove", "vmpool", "--yes"), "used by VM usesdisk")
    ok(cli("storage", "volume", "snapshot", "add", "vmpool", "disk1", "s1"))
    refused(cli("storage", "volume", "snapshot", "rollback", "vmpool", "disk1", "s1"),
            "used by VM usesdisk: add --force")
    ok(cli("storage", "volume", "snapshot", "rollback", "vmpool", "disk1", "s1", "--force"))
    ok(cli("storage", "volume", "snapshot", "remove", "vmpool", "disk1", "s1"))
    assert "disk1" in volumes(cli, "vmpool")
    result = ok(cli("storage", "volume", "remove", "vmpool", "disk1", "--yes", "--force"))
    assert "used by VM usesdisk" in result.err
    assert "disk1" not in volumes(cli, "vmpool")
    ok(cli("storage", "pool", "remove", "vmpool", "--yes", "--force"))


def test_stats_after_writes(storage: StorageCluster) -> None:
    import rados
    import rbd

    storage.client.storage.volumes.add("rbd", "written", 32 << 20)
    cluster = rados.Rados(conffile=str(storage.ceph.conf))
    cluster.connect(timeout=10)
    try:
        with cluster.open_ioctx("rbd") as ioctx, rbd.Image(ioctx, "written") as image:
            image.write(b"y" * (8 << 20), 0)
    finally:
        cluster.shutdown()
    volume = next(v for v in storage.client.storage.volumes.list("rbd") if v.name == "written")
    assert volume.used == 8 << 20

    def grown(data: bytes | None, stat: Any) -> bool | None:
        pools = json.loads(data or b"{}").get("pools", [])
        return True if any(p["name"] == "rbd" and p["stored"] >= 8 << 20 for p in pools) \
            else None

    wait_on_znode(storage.client.zk, layout.STORAGE_STATUS, grown, 30,
                  lambda: "the write never showed in the published pool stats")


def test_unclaimed_request_fails_clearly_and_is_withdrawn(
        zk_server: ZooKeeperServer, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    hosts = new_chroot(zk_server)  # a cluster with no storage primary
    rc = main(["--zk", hosts, "storage", "--claim-timeout", "0.5", "volume", "add", "rbd",
               "v1", "1G"])
    err = capsys.readouterr().err
    assert rc == 1 and "no storage primary took the request within 0.5 s" in err
    with ClusterClient.connect(hosts, credentials=ROLE_CREDENTIALS["agent"]) as client:
        assert client.zk.get_children(layout.STORAGE_REQUESTS) == []


def test_store_follows_storage(storage: StorageCluster) -> None:
    """The dashboard's data: status and volumes arrive through watches, changes as diffs."""
    changes: queue.SimpleQueue[StoreChange] = queue.SimpleQueue()
    store = ClusterStore(storage.client.zk)
    store.subscribe(changes.put)
    store.start()
    try:
        status = store.snapshot().storage
        assert status is not None and status.health == "HEALTH_OK"
        storage.client.storage.volumes.add("rbd", "watched", 4 << 20)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            change = changes.get(timeout=max(0.0, deadline - time.monotonic()))
            if change.kind == "volume" and change.new is not None \
                    and change.new.name == "watched":
                break
        assert store.snapshot().volumes[layout.volume_key("rbd", "watched")].size == 4 << 20
        storage.client.storage.volumes.remove("rbd", "watched")
        while True:
            change = changes.get(timeout=10)
            if change.kind == "volume" and change.new is None and "watched" in change.key:
                break
    finally:
        store.stop()
