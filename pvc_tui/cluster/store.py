"""A watch-driven, always-current snapshot of the cluster, emitting diffs.

`ClusterStore` keeps one ZooKeeper watch per node record, per node liveness znode and
per VM record (plus the two child lists), so an update costs one read of the changed
record, never a rescan. Listeners receive `StoreChange` diffs on kazoo's callback
thread: they must only hand them on (e.g. post a message) and never block.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from kazoo.client import KazooClient, KazooState
from kazoo.recipe.watchers import ChildrenWatch, DataWatch

from pvc_tui.cluster import layout
from pvc_tui.cluster.models import VM, Node


@dataclass(frozen=True)
class StoreChange:
    """One diff: a record appeared (old None), changed, or vanished (new None)."""

    kind: Literal["node", "vm", "invalid", "connection"]
    key: str
    old: Any
    new: Any


@dataclass(frozen=True)
class InvalidRecord:
    """A znode whose content could not be read as a record, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class ClusterSnapshot:
    """An immutable view of the whole cluster at one moment."""

    nodes: MappingProxyType[str, Node] = field(default_factory=lambda: MappingProxyType({}))
    vms: MappingProxyType[str, VM] = field(default_factory=lambda: MappingProxyType({}))
    invalid: MappingProxyType[str, InvalidRecord] = field(
        default_factory=lambda: MappingProxyType({})
    )
    connection: str = "connected"


Listener = Callable[[StoreChange], None]


class ClusterStore:
    """Keeps nodes and VMs current through watches; call `start()` once."""

    def __init__(self, zk: KazooClient) -> None:
        self._zk = zk
        self._lock = threading.Lock()
        self._nodes: dict[str, Node] = {}
        self._node_raw: dict[str, tuple[dict[str, Any], int]] = {}
        self._node_alive: dict[str, bool] = {}
        self._vms: dict[str, VM] = {}
        self._invalid: dict[str, InvalidRecord] = {}
        self._watched_nodes: set[str] = set()
        self._watched_vms: set[str] = set()
        self._listeners: list[Listener] = []
        self._connection = "connected" if zk.connected else "lost"
        self._stopped = False

    def subscribe(self, listener: Listener) -> None:
        """Call `listener` with every future change."""
        self._listeners.append(listener)

    def start(self) -> None:
        """Register the watches; the snapshot is complete when this returns."""
        self._zk.add_listener(self._on_connection)
        ChildrenWatch(self._zk, layout.NODES, self._on_node_children)
        ChildrenWatch(self._zk, layout.VMS, self._on_vm_children)

    def stop(self) -> None:
        """Stop emitting changes (watches end at their next event)."""
        self._stopped = True
        self._zk.remove_listener(self._on_connection)

    def snapshot(self) -> ClusterSnapshot:
        """The current state, as an immutable view."""
        with self._lock:
            return ClusterSnapshot(
                nodes=MappingProxyType(dict(self._nodes)),
                vms=MappingProxyType(dict(self._vms)),
                invalid=MappingProxyType(dict(self._invalid)),
                connection=self._connection,
            )

    # ---- watch callbacks (kazoo's thread) -------------------------------------------

    def _emit(self, change: StoreChange) -> None:
        for listener in list(self._listeners):
            listener(change)

    def _on_connection(self, state: str) -> None:
        new = {KazooState.CONNECTED: "connected", KazooState.SUSPENDED: "reconnecting",
               KazooState.LOST: "lost"}.get(state, str(state).lower())
        with self._lock:
            old, self._connection = self._connection, new
        if old != new:
            self._emit(StoreChange("connection", "zookeeper", old, new))

    def _on_node_children(self, children: list[str]) -> bool:
        if self._stopped:
            return False
        for name in set(children) - self._watched_nodes:
            self._watched_nodes.add(name)
            DataWatch(self._zk, layout.node_path(name), self._node_watcher(name))
            DataWatch(self._zk, layout.node_alive_path(name), self._alive_watcher(name))
        return True

    def _on_vm_children(self, children: list[str]) -> bool:
        if self._stopped:
            return False
        for uuid in set(children) - self._watched_vms:
            self._watched_vms.add(uuid)
            DataWatch(self._zk, layout.vm_path(uuid), self._vm_watcher(uuid))
        return True

    def _node_watcher(self, name: str) -> Callable[..., bool]:
        path = layout.node_path(name)

        def on_data(data: bytes | None, stat: Any, event: Any = None) -> bool:
            if self._stopped:
                return False
            if data is None:
                self._watched_nodes.discard(name)
                with self._lock:
                    self._node_raw.pop(name, None)
                self._set("node", name, None, self._nodes)
                self._set("invalid", path, None, self._invalid)
                return False
            try:
                record = layout.decode(data, layout.NODE_FIELDS)
            except layout.RecordError as exc:
                self._set("invalid", path, InvalidRecord(path, str(exc)), self._invalid)
                return True
            self._set("invalid", path, None, self._invalid)
            with self._lock:
                self._node_raw[name] = (record, stat.version)
            self._refresh_node(name)
            return True

        return on_data

    def _alive_watcher(self, name: str) -> Callable[..., bool]:
        def on_data(data: bytes | None, stat: Any, event: Any = None) -> bool:
            if self._stopped:
                return False
            with self._lock:
                self._node_alive[name] = stat is not None
            self._refresh_node(name)
            return name in self._watched_nodes

        return on_data

    def _refresh_node(self, name: str) -> None:
        with self._lock:
            raw = self._node_raw.get(name)
            alive = self._node_alive.get(name, False)
        if raw is not None:
            self._set("node", name, Node.from_record(raw[0], raw[1], alive), self._nodes)

    def _vm_watcher(self, uuid: str) -> Callable[..., bool]:
        path = layout.vm_path(uuid)

        def on_data(data: bytes | None, stat: Any, event: Any = None) -> bool:
            if self._stopped:
                return False
            if data is None:
                self._watched_vms.discard(uuid)
                self._set("vm", uuid, None, self._vms)
                self._set("invalid", path, None, self._invalid)
                return False
            try:
                vm = VM.from_record(layout.decode(data, layout.VM_FIELDS), stat.version)
            except layout.RecordError as exc:
                self._set("invalid", path, InvalidRecord(path, str(exc)), self._invalid)
                self._set("vm", uuid, None, self._vms)
                return True
            self._set("invalid", path, None, self._invalid)
            self._set("vm", uuid, vm, self._vms)
            return True

        return on_data

    def _set(self, kind: Literal["node", "vm", "invalid"], key: str, new: Any,
             table: dict[str, Any]) -> None:
        with self._lock:
            old = table.get(key)
            if old == new:
                return
            if new is None:
                del table[key]
            else:
                table[key] = new
        self._emit(StoreChange(kind, key, old, new))
