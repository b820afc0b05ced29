"""ClusterStore against a real ZooKeeper: the first snapshot, diffs, and resynchronising
after the connection drops or the session expires (through a loopback TCP proxy)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kazoo.client import KazooClient

from pvc_tui.cluster import ClusterClient, ClusterUnavailable, layout
from pvc_tui.cluster.store import ClusterStore, StoreChange
from tests.conftest import ROLE_CREDENTIALS, vm_xml


def register_node(client: ClusterClient, name: str, alive: bool = True) -> None:
    """A node record (and liveness znode) as an agent writes them."""
    client.zk.create(layout.node_path(name), layout.encode(layout.new_node_record(
        name=name, daemon_state="run", cpu_count=8, mem_total_mib=16384)))
    if alive:
        client.zk.create(layout.node_alive_path(name), layout.alive_data(name, 1),
                         ephemeral=True)


class Recorder:
    """Collects a store's changes; checks each is already in the snapshot it sees."""

    def __init__(self, store: ClusterStore) -> None:
        self.store = store
        self.changes: list[StoreChange] = []
        self.threads: set[str] = set()
        self.cond = threading.Condition()
        store.subscribe(self.on_change)

    def on_change(self, change: StoreChange) -> None:
        snap = self.store.snapshot()  # would deadlock if called under the store's lock
        table = {"node": snap.nodes, "vm": snap.vms, "invalid": snap.invalid}.get(change.kind)
        consistent = table is None or table.get(change.key) == change.new
        with self.cond:
            self.threads.add(threading.current_thread().name)
            self.changes.append(change if consistent else StoreChange(
                "invalid", "INCONSISTENT", change, None))
            self.cond.notify_all()

    def wait_for(self, pred: Callable[[StoreChange], Any], timeout: float = 5) -> StoreChange:
        with self.cond:
            assert self.cond.wait_for(lambda: any(pred(c) for c in self.changes),
                                      timeout), self.changes
            return next(c for c in self.changes if pred(c))

    def clear(self) -> None:
        with self.cond:
            self.changes.clear()


class Proxy:
    """A loopback TCP proxy to ZooKeeper that can cut its connections and refuse new ones."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.server = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.server.getsockname()[1]}"
        self.open = threading.Event()
        self.open.set()
        self.flowing = threading.Event()  # cleared: bytes are held, connections kept
        self.flowing.set()
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.server.accept()
            except OSError:
                return  # closed
            if not self.open.is_set():
                down.close()
                continue
            up = socket.create_connection(self.target)
            with self.lock:
                self.sockets += [down, up]
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                self.flowing.wait()
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Drop every connection and refuse new ones until `resume`."""
        self.open.clear()
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def resume(self) -> None:
        self.open.set()

    def close(self) -> None:
        self.server.close()
        self.cut()
        self.flowing.set()


@pytest.fixture
def proxy(zk_hosts: str) -> Iterator[Proxy]:
    p = Proxy(zk_hosts.split("/", 1)[0])
    yield p
    p.close()


@pytest.fixture
def watched(zk_hosts: str, proxy: Proxy) -> Iterator[tuple[ClusterStore, Recorder]]:
    """A store on its own client, connected through the proxy; started by the test."""
    watcher = ClusterClient.connect(proxy.address + "/" + zk_hosts.split("/", 1)[1],
                                     credentials=ROLE_CREDENTIALS["agent"])
    store = ClusterStore(watcher.zk)
    yield store, Recorder(store)
    store.stop()
    watcher.close()


def test_start_returns_a_complete_snapshot(
        client: ClusterClient, watched: tuple[ClusterStore, Recorder]) -> None:
    store, rec = watched
    register_node(client, "hv1")
    register_node(client, "hv2", alive=False)
    client.zk.create(layout.node_path("junk"), b"\xff")
    uuids = {client.define_vm(vm_xml(f"vm{i:02d}"), f"hv{1 + i % 2}").uuid
             for i in range(40)}
    bad = client.define_vm(vm_xml("bad"), "hv1").uuid
    client.zk.set(layout.vm_path(bad), b"[1, 2]")
    store.start()
    snap = store.snapshot()
    assert set(snap.vms) == uuids
    assert (snap.nodes["hv1"].alive, snap.nodes["hv1"].daemon_state) == (True, "run")
    assert (snap.nodes["hv2"].alive, snap.nodes["hv2"].daemon_state) == (False, "dead")
    assert set(snap.nodes) == {"hv1", "hv2"}
    assert set(snap.invalid) == {layout.vm_path(bad), layout.node_path("junk")}
    assert "not a JSON object" in snap.invalid[layout.vm_path(bad)].reason
    assert snap.connection == "connected"
    # every record arrived as a diff, on the store's thread, never under its lock
    assert {c.key for c in rec.changes if c.kind == "vm"} == uuids
    assert not [c for c in rec.changes if c.key == "INCONSISTENT"]
    assert rec.threads == {"cluster-store"}


def test_changes_arrive_as_diffs(
        client: ClusterClient, watched: tuple[ClusterStore, Recorder]) -> None:
    store, rec = watched
    register_node(client, "hv1")
    store.start()
    vm = client.define_vm(vm_xml("web1"), "hv1")
    added = rec.wait_for(lambda c: c.kind == "vm" and c.key == vm.uuid)
    assert added.old is None and added.new.name == "web1"
    client.start_vm("web1")
    changed = rec.wait_for(lambda c: c.kind == "vm" and c.new and c.new.state == "start")
    assert changed.old.state == "stop"
    client.undefine_vm("web1", force=True)
    removed = rec.wait_for(lambda c: c.kind == "vm" and c.new is None)
    assert removed.old.state == "start" and vm.uuid not in store.snapshot().vms
    register_node(client, "hv2")
    rec.wait_for(lambda c: c.kind == "node" and c.key == "hv2" and c.new.alive)
    client.zk.delete(layout.node_path("hv2"), recursive=True)
    rec.wait_for(lambda c: c.kind == "node" and c.key == "hv2" and c.new is None)
    assert set(store.snapshot().nodes) == {"hv1"}
    assert not [c for c in rec.changes if c.key == "INCONSISTENT"]


def test_liveness_znode_gone_means_dead(
        client: ClusterClient, watched: tuple[ClusterStore, Recorder]) -> None:
    store, rec = watched
    register_node(client, "hv1")
    store.start()
    assert store.snapshot().nodes["hv1"].alive
    client.zk.delete(layout.node_alive_path("hv1"))
    dead = rec.wait_for(lambda c: c.kind == "node" and c.new.daemon_state == "dead")
    assert dead.old.alive and not dead.new.alive
    client.zk.create(layout.node_alive_path("hv1"), layout.alive_data("hv1", 2))
    rec.wait_for(lambda c: c.kind == "node" and c.new.alive and c.old and not c.old.alive)
    assert store.snapshot().nodes["hv1"].daemon_state == "run"


def test_undecodable_vm_is_invalid_then_recovers(
        client: ClusterClient, watched: tuple[ClusterStore, Recorder]) -> None:
    store, rec = watched
    register_node(client, "hv1")
    vm = client.define_vm(vm_xml("web1"), "hv1")
    store.start()
    good, _ = client.zk.get(layout.vm_path(vm.uuid))
    client.zk.set(layout.vm_path(vm.uuid), b"{not json")
    bad = rec.wait_for(lambda c: c.kind == "invalid" and c.new is not None)
    assert bad.key == layout.vm_path(vm.uuid) and "not JSON" in bad.new.reason
    gone = rec.wait_for(lambda c: c.kind == "vm" and c.new is None)
    assert gone.old.name == "web1" and vm.uuid not in store.snapshot().vms
    client.zk.set(layout.vm_path(vm.uuid), good)
    rec.wait_for(lambda c: c.kind == "invalid" and c.new is None)
    back = rec.wait_for(lambda c: c.kind == "vm" and c.new is not None and c.old is None
                        and c.new.version == 2)
    assert back.new.name == "web1"
    assert not store.snapshot().invalid and vm.uuid in store.snapshot().vms


def _change_meanwhile(client: ClusterClient) -> tuple[str, str, str]:
    """Undefine web1, define web3, start web2: the changes the store must catch up on."""
    gone = client.undefine_vm("web1").uuid
    new = client.define_vm(vm_xml("web3"), "hv1").uuid
    started = client.start_vm("web2").uuid
    return gone, new, started


def _assert_caught_up(store: ClusterStore, rec: Recorder,
                      gone: str, new: str, started: str) -> None:
    rec.wait_for(lambda c: c.kind == "vm" and c.key == gone and c.new is None)
    rec.wait_for(lambda c: c.kind == "vm" and c.key == new and c.old is None)
    rec.wait_for(lambda c: c.kind == "vm" and c.key == started and c.new.state == "start")
    snap = store.snapshot()
    assert gone not in snap.vms and new in snap.vms and snap.vms[started].state == "start"
    assert {vm.name for vm in snap.vms.values()} == {"web2", "web3"}
    assert snap.connection == "connected"
    # only what changed: web2's one change, no re-announcement of unchanged records
    assert [c.key for c in rec.changes if c.kind in ("vm", "node")].count(started) == 1
    assert not [c for c in rec.changes if c.kind == "node"]


def test_resync_after_reconnect_in_same_session(
        client: ClusterClient, watched: tuple[ClusterStore, Recorder], proxy: Proxy) -> None:
    """kazoo drops its watches with the connection: changes made while it was down
    must still arrive, and the store must keep following afterwards."""
    store, rec = watched
    register_node(client, "hv1")
    client.define_vm(vm_xml("web1"), "hv1")
    client.define_vm(vm_xml("web2"), "hv1")
    store.start()
    session = store._zk.client_id
    rec.clear()
    proxy.cut()
    rec.wait_for(lambda c: c.kind == "connection" and c.new == "reconnecting")
    gone, new, started = _change_meanwhile(client)
    proxy.resume()
    rec.wait_for(lambda c: c.kind == "connection" and c.new == "connected")
    _assert_caught_up(store, rec, gone, new, started)
    assert store._zk.client_id == session  # the same session: no expiry involved
    client.stop_vm("web3")
    rec.wait_for(lambda c: c.kind == "vm" and c.key == new and c.new.state == "stop")


def test_resync_after_session_expiry(
        client: ClusterClient, zk_hosts: str, watched: tuple[ClusterStore, Recorder],
        proxy: Proxy) -> None:
    store, rec = watched
    register_node(client, "hv1")
    client.define_vm(vm_xml("web1"), "hv1")
    client.define_vm(vm_xml("web2"), "hv1")
    store.start()
    session = store._zk.client_id
    rec.clear()
    proxy.cut()
    # Expire the store's session the way a server does: another client takes it over,
    # then closes it.
    thief = KazooClient(hosts=zk_hosts.split("/")[0], client_id=session)
    thief.start(timeout=5)
    thief.stop()
    thief.close()
    gone, new, started = _change_meanwhile(client)
    proxy.resume()
    rec.wait_for(lambda c: c.kind == "connection" and c.new == "lost")
    rec.wait_for(lambda c: c.kind == "connection" and c.old == "lost"
                 and c.new == "connected")
    _assert_caught_up(store, rec, gone, new, started)
    assert store._zk.client_id[0] != session[0]  # a new session, found by itself
    client.stop_vm("web3")
    rec.wait_for(lambda c: c.kind == "vm" and c.key == new and c.new.state == "stop")


def test_start_without_zookeeper_fails_clearly(
        zk_hosts: str, watched: tuple[ClusterStore, Recorder], proxy: Proxy) -> None:
    zk = KazooClient(hosts=zk_hosts)  # never started: not connected
    with pytest.raises(ClusterUnavailable, match="not connected to ZooKeeper"):
        ClusterStore(zk).start()
    store, _ = watched
    proxy.flowing.clear()  # connected, but no answer comes back
    began = time.monotonic()
    with pytest.raises(ClusterUnavailable, match="could not read the cluster"):
        store.start(timeout=1)
    assert time.monotonic() - began < 3
    proxy.flowing.set()
