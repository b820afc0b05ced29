"""The cluster library against a real ZooKeeper: validation, atomic writes, races, waits."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from pvc_tui.cluster import (
    AlreadyExists,
    ClusterClient,
    ClusterUnavailable,
    InvalidRequest,
    NotFound,
    WaitTimeout,
    layout,
)
from pvc_tui.sandbox.zookeeper import free_port
from tests.conftest import ROLE_CREDENTIALS, dump_tree, vm_xml


def register_node(client: ClusterClient, name: str) -> None:
    """A node record as an agent writes it (real record in the real server)."""
    client.zk.create(layout.node_path(name), layout.encode(layout.new_node_record(
        name=name, daemon_state="run")))


def test_define_places_vm_with_desired_state(client: ClusterClient) -> None:
    register_node(client, "hv1")
    vm = client.define_vm(vm_xml("web1", memory_mib=1024, vcpus=2), "hv1")
    assert (vm.name, vm.node, vm.state, vm.memory_mib, vm.vcpus) == ("web1", "hv1", "stop", 1024, 2)
    assert client.get_vm(vm.uuid) == client.get_vm("web1")
    assert "<name>web1</name>" in client.get_vm_xml("web1")
    started = client.define_vm(vm_xml("web2"), "hv1", start=True)
    assert started.state == "start"


@pytest.mark.parametrize("case", ["unknown node", "duplicate name", "duplicate uuid",
                                  "malformed xml", "bad node name"])
def test_bad_define_changes_nothing(client: ClusterClient, case: str) -> None:
    register_node(client, "hv1")
    first = client.define_vm(vm_xml("web1"), "hv1")
    before = dump_tree(client.zk)
    expected: type[Exception]
    if case == "unknown node":
        expected, call = NotFound, lambda: client.define_vm(vm_xml("web2"), "hv9")
    elif case == "duplicate name":
        expected, call = AlreadyExists, lambda: client.define_vm(vm_xml("web1"), "hv1")
    elif case == "duplicate uuid":
        expected, call = AlreadyExists, lambda: client.define_vm(
            vm_xml("web2", uuid_=first.uuid), "hv1")
    elif case == "malformed xml":
        expected, call = InvalidRequest, lambda: client.define_vm("<domain>", "hv1")
    else:
        expected, call = InvalidRequest, lambda: client.define_vm(vm_xml("web2"), "../x")
    with pytest.raises(expected):
        call()
    assert dump_tree(client.zk) == before


def test_list_filters_and_unknown_names(client: ClusterClient) -> None:
    for node in ("hv1", "hv2"):
        register_node(client, node)
    client.define_vm(vm_xml("a"), "hv1", start=True)
    client.define_vm(vm_xml("b"), "hv2")
    client.define_vm(vm_xml("c"), "hv2", start=True)
    assert [v.name for v in client.list_vms()] == ["a", "b", "c"]
    assert [v.name for v in client.list_vms(node="hv2")] == ["b", "c"]
    assert [v.name for v in client.list_vms(state="start")] == ["a", "c"]
    with pytest.raises(NotFound):
        client.list_vms(node="hv9")
    with pytest.raises(InvalidRequest, match="unknown state"):
        client.list_vms(state="running")
    with pytest.raises(NotFound):
        client.get_vm("nope")
    with pytest.raises(NotFound):
        client.start_vm("nope")


def test_racing_writers_lose_no_update(client: ClusterClient, zk_hosts: str) -> None:
    """Many operators change one record at once: every change lands exactly once."""
    register_node(client, "hv1")
    client.define_vm(vm_xml("web1", vcpus=1), "hv1")
    others = [ClusterClient.connect(zk_hosts, credentials=ROLE_CREDENTIALS["agent"])
              for _ in range(6)]
    barrier = threading.Barrier(len(others))

    def bump(c: ClusterClient) -> None:
        barrier.wait()
        for _ in range(5):
            c.update_vm("web1", lambda r: r.__setitem__("vcpus", r["vcpus"] + 1))

    threads = [threading.Thread(target=bump, args=(c,)) for c in others]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in others:
        c.close()
    assert client.get_vm("web1").vcpus == 1 + 6 * 5


def test_restart_of_a_stopped_vm_is_refused(client: ClusterClient) -> None:
    register_node(client, "hv1")
    client.define_vm(vm_xml("web1"), "hv1")
    before = dump_tree(client.zk)
    with pytest.raises(InvalidRequest, match="use start"):
        client.restart_vm("web1")
    assert dump_tree(client.zk) == before


def test_undefine_removes_every_record(client: ClusterClient) -> None:
    register_node(client, "hv1")
    vm = client.define_vm(vm_xml("web1"), "hv1")
    client.undefine_vm("web1")
    assert not client.zk.exists(layout.vm_path(vm.uuid))
    assert not client.zk.exists(layout.vm_name_path("web1"))
    client.define_vm(vm_xml("web1"), "hv1")  # the name is free again


def test_wait_without_agent_times_out_and_says_why(client: ClusterClient) -> None:
    register_node(client, "hv1")  # a record, but no live agent
    client.define_vm(vm_xml("web1"), "hv1")
    with pytest.raises(WaitTimeout, match="hv1's agent is dead"):
        client.start_vm("web1", wait=True, timeout=0.5)
    assert client.get_vm("web1").state == "start"  # the request stands


def test_newer_schema_is_refused(client: ClusterClient, zk_hosts: str) -> None:
    client.zk.set(layout.SCHEMA_VERSION_PATH, b"99")
    with pytest.raises(InvalidRequest, match="newer than this program"):
        ClusterClient.connect(zk_hosts, credentials=ROLE_CREDENTIALS["agent"])


def test_unreachable_zookeeper_fails_within_the_timeout() -> None:
    began = time.monotonic()
    with pytest.raises(ClusterUnavailable, match="cannot reach ZooKeeper"):
        ClusterClient.connect(f"127.0.0.1:{free_port()}", timeout=1.0)
    assert time.monotonic() - began < 5  # a bound on hanging, not a speed target


def test_store_follows_changes_as_diffs(client: ClusterClient, zk_hosts: str) -> None:
    from pvc_tui.cluster import ClusterStore, StoreChange

    register_node(client, "hv1")
    client.zk.create(layout.node_alive_path("hv1"), b"1")
    watcher = ClusterClient.connect(zk_hosts, credentials=ROLE_CREDENTIALS["agent"])
    store = ClusterStore(watcher.zk)
    changes: list[StoreChange] = []
    cond = threading.Condition()

    def on_change(change: StoreChange) -> None:
        with cond:
            changes.append(change)
            cond.notify_all()

    def wait_for(pred: Any) -> StoreChange:
        with cond:
            assert cond.wait_for(lambda: any(pred(c) for c in changes), timeout=5), changes
            return next(c for c in changes if pred(c))

    store.subscribe(on_change)
    store.start()
    wait_for(lambda c: c.kind == "node" and c.new and c.new.alive)
    vm = client.define_vm(vm_xml("web1"), "hv1")
    wait_for(lambda c: c.kind == "vm" and c.old is None and c.new.name == "web1")
    client.start_vm("web1")
    change = wait_for(lambda c: c.kind == "vm" and c.new and c.new.state == "start")
    assert change.old.state == "stop"
    client.zk.set(layout.vm_path(vm.uuid), b"{not json")
    wait_for(lambda c: c.kind == "invalid" and c.new is not None)
    assert vm.uuid not in store.snapshot().vms and store.snapshot().invalid
    client.zk.delete(layout.node_alive_path("hv1"))
    wait_for(lambda c: c.kind == "node" and c.new and c.new.daemon_state == "dead")
    client.zk.delete(layout.vm_path(vm.uuid), recursive=True)
    wait_for(lambda c: c.kind == "invalid" and c.new is None)
    assert store.snapshot().nodes["hv1"].daemon_state == "dead"
    assert not store.snapshot().invalid
    store.stop()
    watcher.close()
