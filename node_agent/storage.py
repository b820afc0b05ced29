"""The storage primary: one agent at a time publishes what Ceph reports.

Agents with a Ceph config stand in a ZooKeeper election; the winner talks to Ceph
through librados (client-side operation timeouts, so a dead mon or a missing mgr never
hangs it) and writes STORAGE_STATUS every keepalive interval and when woken. It leads
only while its ZooKeeper session is the one that won: a new session stands again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NodeExistsError, NoNodeError

from pvc_tui.cluster import layout

log = logging.getLogger(__name__)
CEPH_TIMEOUT = 5  # seconds, for every librados call


def _command(cluster: Any, prefix: str, **args: Any) -> Any:
    """A mon command with JSON output, parsed; raises RuntimeError with Ceph's message."""
    ret, out, err = cluster.mon_command(json.dumps({"prefix": prefix, "format": "json",
                                                    **args}), b"", timeout=CEPH_TIMEOUT)
    if ret != 0:
        raise RuntimeError(f"{prefix}: {err or ret}")
    return json.loads(out) if out else {}


def read_ceph(cluster: Any) -> dict[str, Any]:
    """Health, usage, OSDs and pools as the STORAGE_STATUS record holds them."""
    health = _command(cluster, "health")
    df = _command(cluster, "df")
    osd_df = _command(cluster, "osd df")
    details = {p["pool_name"]: p for p in _command(cluster, "osd pool ls", detail="detail")}
    rates = {p["pool_name"]: p.get("client_io_rate", {})
             for p in _command(cluster, "osd pool stats")}
    pools = []
    for pool in df.get("pools", []):
        stats, detail = pool.get("stats", {}), details.get(pool["name"], {})
        rate = rates.get(pool["name"], {})
        pools.append({
            "name": pool["name"], "id": pool.get("id", 0), "stored": stats.get("stored", 0),
            "objects": stats.get("objects", 0),
            "percent_used": float(stats.get("percent_used", 0.0)),
            "max_avail": stats.get("max_avail", 0), "size": detail.get("size", 0),
            "min_size": detail.get("min_size", 0), "pg_num": detail.get("pg_num", 0),
            "read_bytes_sec": rate.get("read_bytes_sec", 0),
            "write_bytes_sec": rate.get("write_bytes_sec", 0),
        })
    osds = [{"id": n["id"], "name": n.get("name", ""), "status": n.get("status", ""),
             "reweight": float(n.get("reweight", 0.0)),
             "utilization": float(n.get("utilization", 0.0)), "pgs": n.get("pgs", 0),
             "kb": n.get("kb", 0), "kb_used": n.get("kb_used", 0)}
            for n in osd_df.get("nodes", [])]
    return {
        "health": health.get("status", ""),
        "health_checks": {name: check.get("summary", {}).get("message", "")
                          for name, check in health.get("checks", {}).items()},
        "usage": df.get("stats", {}), "osds": osds, "pools": pools, "error": "",
    }


class StoragePrimary:
    """Stands for storage primary and, while it is, publishes Ceph's state."""

    def __init__(self, zk: KazooClient, node: str, ceph_conf: str, interval: float) -> None:
        self._zk = zk
        self._node = node
        self._ceph_conf = ceph_conf
        self._interval = interval
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._election = zk.Election(layout.STORAGE_ELECTION, identifier=node)
        self._thread = threading.Thread(target=self._run, name="storage", daemon=True)

    def start(self) -> None:
        """Stand in the election (in the background)."""
        self._thread.start()

    def stop(self) -> None:
        """Leave the election and stop publishing."""
        self._stop.set()
        self._wake.set()
        self._election.cancel()
        self._thread.join(timeout=CEPH_TIMEOUT + 2)

    def wake(self) -> None:
        """Publish now (after a storage change)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._election.run(self._lead)
            except Exception as exc:  # ZooKeeper away: stand again when it is back
                log.warning("storage election: %s", exc)
            self._stop.wait(1.0)

    def _lead(self) -> None:
        import rados

        session = self._zk.client_id
        log.info("storage primary: this node (%s)", self._node)
        cluster = rados.Rados(conffile=self._ceph_conf, conf={
            "rados_mon_op_timeout": str(CEPH_TIMEOUT), "client_mount_timeout": str(CEPH_TIMEOUT)})
        try:
            connected = False
            while not self._stop.is_set() and self._zk.client_id == session:
                try:
                    if not connected:
                        cluster.connect(timeout=CEPH_TIMEOUT)
                        connected = True
                    status = read_ceph(cluster)
                except Exception as exc:  # Ceph away or slow: say so, keep trying
                    status = {"health": "", "error": f"{type(exc).__name__}: {exc}"}
                self._publish(status)
                self._wake.wait(self._interval)
                self._wake.clear()
        finally:
            cluster.shutdown()

    def _publish(self, status: dict[str, Any]) -> None:
        record = {**layout.STORAGE_STATUS_FIELDS, **status, "primary": self._node,
                  "updated_at": time.time()}
        data = layout.encode(record)
        try:
            self._zk.set(layout.STORAGE_STATUS, data)
        except NoNodeError:
            try:
                self._zk.create(layout.STORAGE_STATUS, data, makepath=True)
            except NodeExistsError:
                self._zk.set(layout.STORAGE_STATUS, data)
        except Exception as exc:
            log.warning("storage status not published: %s", exc)
