"""A watch-driven, always-current snapshot of the cluster, emitting diffs.

`ClusterStore` follows every node record, node liveness znode and VM record (plus the
two child lists), the storage status and every published volume record with one-shot
ZooKeeper watches, set by the same async reads that
fetch the data. Reads are pipelined (up to WINDOW on the wire), so the first picture
does not cost one round trip per record; an update costs one read of that record.
kazoo drops every watch whenever its connection drops, so after each reconnection
(same session or a new one) the store re-reads everything, emitting only what changed.

All of this runs on one store thread, which never blocks on ZooKeeper and calls the
listeners with `StoreChange` diffs (never while holding its lock): listeners must
only hand them on (e.g. post a message) and never block.
"""

from __future__ import annotations

import collections
import functools
import itertools
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    ConnectionClosedError,
    ConnectionLoss,
    NoNodeError,
    OperationTimeoutError,
    SessionExpiredError,
)

from pvc_tui.cluster import layout
from pvc_tui.cluster.errors import ClusterUnavailable
from pvc_tui.cluster.models import VM, Node
from pvc_tui.cluster.storage import StorageStatus, Volume, parse_status, parse_volume

log = logging.getLogger(__name__)

DEFAULT_START_TIMEOUT = 30.0
WINDOW = 512  # reads on the wire at once: as fast as unbounded, half the memory
# Failures that a read on a working connection will not repeat: retried, not reported.
_TRANSIENT = (ConnectionLoss, SessionExpiredError, ConnectionClosedError,
              OperationTimeoutError)
_STATES = {KazooState.CONNECTED: "connected", KazooState.SUSPENDED: "reconnecting",
           KazooState.LOST: "lost"}


@dataclass(frozen=True)
class StoreChange:
    """One diff: a record appeared (old None), changed, or vanished (new None)."""

    kind: Literal["node", "vm", "invalid", "connection", "storage", "volume"]
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
    storage: StorageStatus | None = None  # None until a storage primary has published
    volumes: MappingProxyType[str, Volume] = field(
        default_factory=lambda: MappingProxyType({})
    )


Listener = Callable[[StoreChange], None]
# (operation, path, ticket, payload), handled in order on the store thread
_Message = tuple[str, str, int, Any]


def _parse(path: str) -> tuple[str, str]:
    """What a watched path is: ("list"|"node"|"alive"|"vm"|"storage"|"volume", name)."""
    if path in (layout.NODES, layout.VMS, layout.STORAGE_VOLUMES):
        return "list", path
    if path == layout.STORAGE_STATUS:
        return "storage", "status"
    parent, _, name = path.rpartition("/")
    if parent == layout.VMS:
        return "vm", name
    if parent == layout.STORAGE_VOLUMES:
        return "volume", name
    if parent == layout.NODES:
        return "node", name
    node = parent.rpartition("/")[2]
    if path == layout.node_alive_path(node) and parent == layout.node_path(node):
        return "alive", node
    return "", ""


class ClusterStore:
    """Keeps nodes and VMs current through watches; call `start()` once."""

    def __init__(self, zk: KazooClient) -> None:
        self._zk = zk
        self._lock = threading.Lock()  # guards the tables and _connection (for snapshot)
        self._nodes: dict[str, Node] = {}
        self._node_raw: dict[str, tuple[dict[str, Any], int]] = {}
        self._node_alive: dict[str, bool] = {}
        self._vms: dict[str, VM] = {}
        self._invalid: dict[str, InvalidRecord] = {}
        self._storage: dict[str, StorageStatus] = {}  # "status" -> the published status
        self._volumes: dict[str, Volume] = {}
        self._connection = "connected" if zk.connected else "lost"
        # store thread only:
        self._node_names: set[str] = set()  # listed, and not seen gone since
        self._vm_uuids: set[str] = set()
        self._volume_keys: set[str] = set()
        self._inflight: dict[str, int] = {}  # path -> ticket of its latest read
        self._retry: set[str] = set()  # reads failed while disconnected
        self._tickets = itertools.count(1)
        self._backlog: collections.deque[tuple[str, int]] = collections.deque()
        self._issued: set[int] = set()  # tickets of reads on the wire
        self._queue: queue.SimpleQueue[_Message] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="cluster-store", daemon=True)
        self._synced = threading.Event()
        self._listeners: list[Listener] = []
        self._stopped = False

    def subscribe(self, listener: Listener) -> None:
        """Call `listener` with every future change (on the store thread)."""
        self._listeners.append(listener)

    def start(self, timeout: float = DEFAULT_START_TIMEOUT) -> None:
        """Read everything and set the watches; the snapshot is complete on return.

        Raises ClusterUnavailable if ZooKeeper cannot be read within `timeout`."""
        if not self._zk.connected:
            raise ClusterUnavailable("not connected to ZooKeeper: cannot read the cluster")
        with self._lock:
            self._connection = "connected"
        self._zk.add_listener(self._on_state)
        self._thread.start()
        self._queue.put(("sync", "", 0, None))
        if not self._synced.wait(timeout):
            self.stop()
            raise ClusterUnavailable(
                f"could not read the cluster from ZooKeeper within {timeout:g} s")

    def stop(self) -> None:
        """Stop emitting changes (pending watches are ignored when they fire)."""
        self._stopped = True
        self._zk.remove_listener(self._on_state)
        self._queue.put(("stop", "", 0, None))
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def snapshot(self) -> ClusterSnapshot:
        """The current state, as an immutable view."""
        with self._lock:
            return ClusterSnapshot(
                nodes=MappingProxyType(dict(self._nodes)),
                vms=MappingProxyType(dict(self._vms)),
                invalid=MappingProxyType(dict(self._invalid)),
                connection=self._connection,
                storage=self._storage.get("status"),
                volumes=MappingProxyType(dict(self._volumes)),
            )

    # ---- kazoo's threads: only queue work for the store thread --------------------

    def _on_state(self, state: str) -> None:
        self._queue.put(("state", state, 0, None))

    def _on_watch(self, event: Any) -> None:
        if event.path and not self._stopped:  # path None: kazoo dropped its watches
            self._queue.put(("watch", event.path, 0, None))

    def _on_done(self, path: str, ticket: int, result: Any) -> None:
        if not self._stopped:
            self._queue.put(("result", path, ticket, result))

    # ---- the store thread ---------------------------------------------------------

    def _run(self) -> None:
        while True:
            op, path, ticket, payload = self._queue.get()
            if op == "stop":
                return
            try:
                if op == "result":
                    self._on_result(path, ticket, payload)
                elif op == "watch":
                    self._on_event(path)
                elif op == "state":
                    self._on_connection(path)
                else:
                    self._resync()
            except Exception:  # a bug must not end the store
                log.exception("cluster store: handling %s %s failed", op, path)

    def _resync(self) -> None:
        """Re-list and re-read everything (new watches), e.g. after a reconnection."""
        self._retry.clear()
        self._issued.clear()  # all failed with the old connection
        for path in (layout.NODES, layout.VMS, layout.STORAGE_STATUS, layout.STORAGE_VOLUMES):
            self._read(path)
        for name in self._node_names:
            self._read(layout.node_alive_path(name))
            self._read(layout.node_path(name))
        for uuid in self._vm_uuids:
            self._read(layout.vm_path(uuid))
        for key in self._volume_keys:
            self._read(layout.volume_key_path(key))

    def _read(self, path: str) -> None:
        """Queue an async read that also sets a watch; only its result counts."""
        ticket = next(self._tickets)
        self._inflight[path] = ticket
        self._backlog.append((path, ticket))
        self._pump()

    def _pump(self) -> None:
        """Keep at most WINDOW reads on the wire (bounds memory, not throughput)."""
        while self._backlog and len(self._issued) < WINDOW:
            path, ticket = self._backlog.popleft()
            if self._inflight.get(path) == ticket:
                self._issued.add(ticket)
                self._issue(path, ticket)

    def _issue(self, path: str, ticket: int) -> None:
        what = _parse(path)[0]
        if what == "list":
            result = self._zk.get_children_async(path, watch=self._on_watch)
        elif what == "alive":
            result = self._zk.exists_async(path, watch=self._on_watch)
        else:
            result = self._zk.get_async(path, watch=self._on_watch)
        result.rawlink(functools.partial(self._on_done, path, ticket))

    def _on_event(self, path: str) -> None:
        what, name = _parse(path)
        if (what in ("list", "storage")
                or (what in ("node", "alive") and name in self._node_names)
                or (what == "vm" and name in self._vm_uuids)
                or (what == "volume" and name in self._volume_keys)):
            self._read(path)

    def _watch_creation(self, path: str) -> None:
        """A read found no znode (and so left no watch): watch for its creation."""
        result = self._zk.exists_async(path, watch=self._on_watch)
        result.rawlink(functools.partial(self._on_exists, path))

    def _on_exists(self, path: str, result: Any) -> None:
        try:
            created = result.get_nowait() is not None
        except Exception:  # the reconnection's re-read covers it
            return
        if created and not self._stopped:  # created between our read and this check
            self._queue.put(("watch", path, 0, None))

    def _on_result(self, path: str, ticket: int, result: Any) -> None:
        self._issued.discard(ticket)
        self._pump()
        if self._inflight.get(path) != ticket:
            return  # superseded by a later read of the same path, or dropped
        del self._inflight[path]
        try:
            value = result.get_nowait()
        except NoNodeError:
            self._apply(path, None)
            if _parse(path)[0] in ("storage", "list"):
                self._watch_creation(path)
        except _TRANSIENT:
            if self._connection == "connected":
                self._read(path)
            else:
                self._retry.add(path)  # _resync reads it again on reconnection
        except Exception as exc:  # e.g. refused by an ACL: say so, do not retry
            log.warning("cluster store: cannot read %s: %r", path, exc)
            if _parse(path)[0] in ("node", "vm", "storage", "volume"):
                self._set("invalid", path, InvalidRecord(path, f"cannot read: {exc!r}"),
                          self._invalid)
        else:
            self._apply(path, value)
        if not self._inflight and not self._retry:
            self._synced.set()

    def _apply(self, path: str, value: Any) -> None:
        """Take in a read's result (None: the znode does not exist)."""
        what, name = _parse(path)
        if what == "list":
            self._apply_list(path, value or [])
        elif what == "alive":
            self._apply_alive(name, value is not None)
        elif what == "node":
            self._apply_node(name, value)
        elif what == "vm":
            self._apply_vm(name, value)
        elif what == "storage":
            self._apply_storage(path, value)
        elif what == "volume":
            self._apply_volume(name, value)

    def _on_connection(self, state: str) -> None:
        new = _STATES.get(state, str(state).lower())
        with self._lock:
            old, self._connection = self._connection, new
        if old != new:
            self._emit(StoreChange("connection", "zookeeper", old, new))
            if new == "connected":
                self._resync()  # kazoo dropped every watch with the connection

    def _apply_list(self, path: str, children: list[str]) -> None:
        listed = set(children)
        if path == layout.NODES:
            for name in listed - self._node_names:
                self._node_names.add(name)
                self._read(layout.node_alive_path(name))  # first: the node shows alive
                self._read(layout.node_path(name))
            for name in self._node_names - listed:
                self._drop_node(name)
        elif path == layout.STORAGE_VOLUMES:
            for key in listed - self._volume_keys:
                self._volume_keys.add(key)
                self._read(f"{path}/{key}")
            for key in self._volume_keys - listed:
                self._drop_volume(key)
        else:
            for uuid in listed - self._vm_uuids:
                self._vm_uuids.add(uuid)
                self._read(layout.vm_path(uuid))
            for uuid in self._vm_uuids - listed:
                self._drop_vm(uuid)

    def _forget(self, *paths: str) -> None:
        for path in paths:
            self._inflight.pop(path, None)
            self._retry.discard(path)

    def _drop_node(self, name: str) -> None:
        path = layout.node_path(name)
        self._node_names.discard(name)
        self._forget(path, layout.node_alive_path(name))
        with self._lock:
            self._node_raw.pop(name, None)
            self._node_alive.pop(name, None)
        self._set("node", name, None, self._nodes)
        self._set("invalid", path, None, self._invalid)

    def _drop_vm(self, uuid: str) -> None:
        path = layout.vm_path(uuid)
        self._vm_uuids.discard(uuid)
        self._forget(path)
        self._set("vm", uuid, None, self._vms)
        self._set("invalid", path, None, self._invalid)

    def _apply_node(self, name: str, value: tuple[bytes, Any] | None) -> None:
        if value is None:
            self._drop_node(name)
            return
        path = layout.node_path(name)
        try:
            record = layout.decode(value[0], layout.NODE_FIELDS)
        except layout.RecordError as exc:
            self._set("invalid", path, InvalidRecord(path, str(exc)), self._invalid)
            return  # the node keeps its last valid record
        self._set("invalid", path, None, self._invalid)
        with self._lock:
            self._node_raw[name] = (record, value[1].version)
        self._refresh_node(name)

    def _apply_alive(self, name: str, alive: bool) -> None:
        with self._lock:
            self._node_alive[name] = alive
        self._refresh_node(name)

    def _refresh_node(self, name: str) -> None:
        with self._lock:
            raw = self._node_raw.get(name)
            alive = self._node_alive.get(name, False)
        if raw is not None:
            self._set("node", name, Node.from_record(raw[0], raw[1], alive), self._nodes)

    def _apply_vm(self, uuid: str, value: tuple[bytes, Any] | None) -> None:
        if value is None:
            self._drop_vm(uuid)
            return
        path = layout.vm_path(uuid)
        try:
            vm = VM.from_record(layout.decode(value[0], layout.VM_FIELDS), value[1].version)
        except layout.RecordError as exc:
            self._set("invalid", path, InvalidRecord(path, str(exc)), self._invalid)
            self._set("vm", uuid, None, self._vms)
            return
        self._set("invalid", path, None, self._invalid)
        self._set("vm", uuid, vm, self._vms)

    def _drop_volume(self, key: str) -> None:
        path = layout.volume_key_path(key)
        self._volume_keys.discard(key)
        self._forget(path)
        self._set("volume", key, None, self._volumes)
        self._set("invalid", path, None, self._invalid)

    def _apply_storage(self, path: str, value: tuple[bytes, Any] | None) -> None:
        status = None
        if value is not None:
            try:
                status = parse_status(value[0])
            except layout.RecordError as exc:
                self._set("invalid", path, InvalidRecord(path, str(exc)), self._invalid)
                return
        self._set("invalid", path, None, self._invalid)
        self._set("storage", "status", status, self._storage)

    def _apply_volume(self, key: str, value: tuple[bytes, Any] | None) -> None:
        if value is None:
            self._drop_volume(key)
            return
        path = layout.volume_key_path(key)
        try:
            volume = parse_volume(value[0])
        except layout.RecordError as exc:
            self._set("invalid", path, InvalidRecord(path, str(exc)), self._invalid)
            self._set("volume", key, None, self._volumes)
            return
        self._set("invalid", path, None, self._invalid)
        self._set("volume", key, volume, self._volumes)

    def _set(self, kind: Literal["node", "vm", "invalid", "storage", "volume"], key: str,
             new: Any,
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

    def _emit(self, change: StoreChange) -> None:
        if self._stopped:
            return
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:  # one listener's bug must not stop the store
                log.exception("cluster store: listener %r failed", listener)
