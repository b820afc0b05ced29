"""The storage primary: one agent at a time publishes Ceph's state and runs requests.

Agents with a Ceph config stand in a ZooKeeper election, on a ZooKeeper session of
their own whose timeout is 0.6 x the keepalive interval (at least 4 s), so that when a
primary dies its election znode goes, and another agent leads, within one keepalive
interval; the agent's main session keeps its longer timeout, so a short stall costs at
most the storage role, never the node's liveness. The winner connects to Ceph
through librados (client-side operation timeouts, so a dead mon or a missing mgr never
hangs it) and, while its winning ZooKeeper session lasts:

- publishes STORAGE_STATUS every keepalive interval and at once after each storage
  change, and one record per volume: the volumes a change touched at once, all of them
  every interval, or less often when a full scan is slow (opening an image costs ~3 ms,
  so a scan is held to a quarter of the primary's time);
- executes storage requests (the protocol is in pvc_tui/cluster/layout.py and
  storage_requests.py) one at a time, in the order they were made.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from kazoo.client import KazooState
from kazoo.exceptions import NodeExistsError, NoNodeError
from kazoo.retry import KazooRetry

from node_agent.storage_requests import RequestServer
from pvc_tui.cluster import layout
from pvc_tui.cluster.auth import Credentials, PvcKazooClient, load_acl_ids

log = logging.getLogger(__name__)
CEPH_TIMEOUT = 5  # seconds, for every librados call


def encode_volume(volume: dict[str, Any]) -> bytes:
    """A volume record; a volume with so many snapshots that the record would pass the
    record limit is published with its newest ones (`storage volume snapshot list`
    still lists them all)."""
    snapshots = list(volume["snapshots"])
    while True:
        try:
            return layout.encode({**volume, "snapshots": snapshots})
        except layout.RecordError:
            if not snapshots:
                raise
            snapshots = snapshots[len(snapshots) // 2:]


def session_timeout(interval: float) -> float:
    """The storage session's timeout: 0.6 x the keepalive interval, at least 4 s (a
    session must outlive a ZooKeeper leader election, which takes 1-2 s)."""
    return max(0.6 * interval, 4.0)


class StoragePrimary:
    """Stands for storage primary and, while it is, publishes and serves requests."""

    def __init__(self, zk_hosts: str, node: str, ceph_conf: str, interval: float,
                 credentials: Credentials | None = None) -> None:
        self._zk = PvcKazooClient(hosts=zk_hosts, timeout=session_timeout(interval),
                                  connection_retry=KazooRetry(max_tries=-1, max_delay=1.0),
                                  command_retry=KazooRetry(max_tries=3, max_delay=1.0),
                                  auth_data=[credentials.auth] if credentials else None)
        self._node = node
        self._ceph_conf = ceph_conf
        self._interval = interval
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="storage", daemon=True)
        self._volumes: dict[str, bytes] = {}  # published volume records, by znode name
        self._touched: set[tuple[str, str]] = set()  # (pool, volume or "") changed since
        self._touched_lock = threading.Lock()
        self._next_scan = 0.0  # monotonic time of the next full volume scan
        self._sessions_lost = 0  # ZooKeeper sessions ended so far (a leadership's epoch)
        self._zk.add_listener(self._on_state)

    def start(self) -> None:
        """Stand in the election (in the background)."""
        self._thread.start()

    def stop(self) -> None:
        """Leave the election, stop publishing, end the storage session."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=CEPH_TIMEOUT + 2)
        self._zk.stop()
        self._zk.close()

    def wake(self) -> None:
        """Publish now."""
        self._wake.set()

    def changed(self, args: dict[str, Any]) -> None:
        """A storage command changed what `args` name: publish that now."""
        pool = str(args.get("pool") or "")
        with self._touched_lock:
            self._touched.add((pool, ""))
            for key in ("volume", "new_name"):
                if args.get(key):
                    self._touched.add((pool, str(args[key])))
        self._wake.set()

    def _run(self) -> None:
        """The election, level-triggered: whoever holds the ephemeral STORAGE_PRIMARY leads;
        the others try to create it whenever it goes (a watch) and at least every
        interval (so a watch lost with a connection costs one interval, never a hang)."""
        while not self._stop.is_set():
            try:
                if not self._zk.connected:
                    self._zk.start(timeout=max(self._interval, 5.0))
                    load_acl_ids(self._zk)
                if self._hold_primary():
                    self._lead()
                    self._resign()
                    self._stop.wait(0.1)
            except Exception as exc:  # ZooKeeper away: stand again when it is back
                log.warning("storage election: %s", exc)
                self._stop.wait(1.0)

    def _hold_primary(self) -> bool:
        """True once this agent's session holds STORAGE_PRIMARY; else waits for a change."""
        try:
            self._zk.create(layout.STORAGE_PRIMARY, self._node.encode(), ephemeral=True,
                            makepath=True)
            return True
        except NodeExistsError:
            pass
        changed = threading.Event()
        stat = self._zk.exists(layout.STORAGE_PRIMARY, watch=lambda _event: changed.set())
        if stat is not None and stat.ephemeralOwner == self._zk.client_id[0]:
            return True  # still ours (this session won it before)
        deadline = time.monotonic() + self._interval
        while stat is not None and not self._stop.is_set() and not changed.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            changed.wait(min(remaining, 0.5))  # 0.5: notice stop() promptly
        return False

    def _resign(self) -> None:
        """Give up STORAGE_PRIMARY if this session still holds it (leading ended)."""
        stat = self._zk.exists(layout.STORAGE_PRIMARY)
        if stat is not None and stat.ephemeralOwner == self._zk.client_id[0]:
            with contextlib.suppress(NoNodeError):
                self._zk.delete(layout.STORAGE_PRIMARY, version=stat.version)

    def _on_state(self, state: str) -> None:
        if state == KazooState.LOST:  # the session ended: so did any leadership of it
            self._sessions_lost += 1
            self._wake.set()

    def _leading(self, generation: int) -> bool:
        # not client_id: kazoo reports None for it while merely reconnecting, and a
        # reconnection within the session keeps the leadership (and the ephemeral)
        return not self._stop.is_set() and self._sessions_lost == generation

    def _lead(self) -> None:
        import rados

        session = self._sessions_lost
        log.info("storage primary: this node (%s)", self._node)
        cluster = rados.Rados(conffile=self._ceph_conf, conf={
            "rados_mon_op_timeout": str(CEPH_TIMEOUT), "client_mount_timeout": str(CEPH_TIMEOUT),
            "rados_osd_op_timeout": str(CEPH_TIMEOUT)})
        server: RequestServer | None = None
        self._volumes = {}
        self._next_scan = 0.0
        try:
            while self._leading(session):
                try:
                    if server is None:
                        cluster.connect(timeout=CEPH_TIMEOUT)
                        server = RequestServer(self._zk, self._node, cluster,
                                               lambda: self._leading(session), self.changed,
                                               self._interval)
                        server.start()
                    self._publish_all(cluster)
                except Exception as exc:  # Ceph away or slow: say so, keep trying
                    self._publish({"health": "", "error": f"{type(exc).__name__}: {exc}"})
                self._wake.wait(self._interval)
                self._wake.clear()
        finally:
            if server is not None:
                server.stop()
            cluster.shutdown()

    def _publish_all(self, cluster: Any) -> None:
        from node_agent.storage_ceph import read_status, read_volumes

        with self._touched_lock:
            touched, self._touched = self._touched, set()
        self._publish(read_status(cluster))
        started = time.monotonic()
        if started >= self._next_scan:
            self._publish_volumes(read_volumes(cluster))
            took = time.monotonic() - started
            self._next_scan = started + max(self._interval, 4 * took) - 0.05
        elif touched:
            self._publish_touched(cluster, touched)

    def _publish_touched(self, cluster: Any, touched: set[tuple[str, str]]) -> None:
        """Re-read only the pools and volumes a command named (new, gone, changed)."""
        import rbd

        from node_agent.storage_ceph import describe_volume

        current = dict(self._volumes)
        for pool in {p for p, _ in touched if p}:
            prefix = layout.volume_key(pool, "")  # "pool@"
            mine = {k for k in current if k.startswith(prefix)}
            if not cluster.pool_exists(pool):
                names: set[str] = set()
            else:
                with cluster.open_ioctx(pool) as ioctx:
                    names = set(rbd.RBD().list(ioctx))
                    known = {layout.parse_volume_key(k)[1] for k in mine}
                    for name in names:
                        if name in known and (pool, name) not in touched:
                            continue
                        try:
                            record = describe_volume(ioctx, pool, name)
                        except rbd.ImageNotFound:
                            continue
                        current[layout.volume_key(pool, name)] = encode_volume(record)
            for key in mine:
                if layout.parse_volume_key(key)[1] not in names:
                    del current[key]
        self._write_volumes(current)

    def _publish(self, status: dict[str, Any]) -> None:
        record = {**layout.STORAGE_STATUS_FIELDS, **status, "primary": self._node,
                  "updated_at": time.time()}
        try:
            self._write(layout.STORAGE_STATUS, layout.encode(record))
        except Exception as exc:
            log.warning("storage status not published: %s", exc)

    def _publish_volumes(self, volumes: list[dict[str, Any]]) -> None:
        """One record per volume: written when it changed, removed when it is gone."""
        self._write_volumes({layout.volume_key(v["pool"], v["name"]): encode_volume(v)
                             for v in volumes})

    def _write_volumes(self, current: dict[str, bytes]) -> None:
        try:
            existing = set(self._zk.get_children(layout.STORAGE_VOLUMES))
        except NoNodeError:
            existing = set()
        for key, data in current.items():
            if key not in existing or self._volumes.get(key) != data:
                self._write(layout.volume_key_path(key), data)
        for key in existing - set(current):
            with contextlib.suppress(NoNodeError):
                self._zk.delete(layout.volume_key_path(key))
        self._volumes = current

    def _write(self, path: str, data: bytes) -> None:
        try:
            self._zk.set(path, data)
        except NoNodeError:
            try:
                self._zk.create(path, data, makepath=True)
            except NodeExistsError:
                self._zk.set(path, data)
