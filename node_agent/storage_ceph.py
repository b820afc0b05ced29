"""What the storage primary reads from Ceph, through librados/librbd (never the CLI).

Every mon command carries CEPH_TIMEOUT; the connection itself is made with the same
client-side operation timeouts (node_agent/storage.py), so nothing here can hang.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import rados
import rbd

CEPH_TIMEOUT = 5  # seconds, for every librados call
DESCRIBE_THREADS = 8


class CommandError(Exception):
    """A storage command failed; `kind` is one of layout.STORAGE_REQUEST_FIELDS' kinds."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


_ERRNO_KINDS = {-2: "not_found", -17: "exists", -22: "invalid", -34: "invalid"}


def mon(cluster: rados.Rados, prefix: str, **args: Any) -> Any:
    """A mon command with JSON output, parsed; CommandError with Ceph's message."""
    ret, out, err = cluster.mon_command(json.dumps({"prefix": prefix, "format": "json",
                                                    **args}), b"", timeout=CEPH_TIMEOUT)
    if ret != 0:
        raise CommandError(_ERRNO_KINDS.get(ret, "failed"), err.strip() or f"{prefix}: {ret}")
    return json.loads(out) if out.strip() else {}


def read_pools(cluster: rados.Rados) -> list[dict[str, Any]]:
    """Every pool: replication and PGs from the OSD map, usage and rates from the mgr."""
    df = {p["name"]: p.get("stats", {}) for p in mon(cluster, "df").get("pools", [])}
    rates = {p["pool_name"]: p.get("client_io_rate", {})
             for p in mon(cluster, "osd pool stats")}
    pools = []
    for detail in mon(cluster, "osd pool ls", detail="detail"):
        name = detail["pool_name"]
        stats, rate = df.get(name, {}), rates.get(name, {})
        pools.append({
            "name": name, "id": detail.get("pool_id", 0), "stored": stats.get("stored", 0),
            "objects": stats.get("objects", 0),
            "percent_used": float(stats.get("percent_used", 0.0)),
            "max_avail": stats.get("max_avail", 0), "size": detail.get("size", 0),
            "min_size": detail.get("min_size", 0),
            "pg_num": detail.get("pg_num_target", detail.get("pg_num", 0)),
            "read_bytes_sec": rate.get("read_bytes_sec", 0),
            "write_bytes_sec": rate.get("write_bytes_sec", 0),
            "application": ",".join(detail.get("application_metadata", {})),
        })
    return sorted(pools, key=lambda p: p["name"])


def read_osds(cluster: rados.Rados) -> list[dict[str, Any]]:
    """Every OSD: host (from the CRUSH tree), up/in, weights, utilization, PGs."""
    hosts = {child: node["name"] for node in mon(cluster, "osd tree").get("nodes", [])
             if node.get("type") == "host" for child in node.get("children", [])}
    osds = []
    for n in mon(cluster, "osd df").get("nodes", []):
        osds.append({
            "id": n["id"], "host": hosts.get(n["id"], ""), "up": n.get("status") == "up",
            "in_cluster": float(n.get("reweight", 0.0)) > 0,
            "weight": float(n.get("crush_weight", 0.0)),
            "reweight": float(n.get("reweight", 0.0)),
            "utilization": float(n.get("utilization", 0.0)), "pgs": n.get("pgs", 0),
            "kb": n.get("kb", 0), "kb_used": n.get("kb_used", 0),
        })
    return sorted(osds, key=lambda o: o["id"])


def read_flags(cluster: rados.Rados) -> list[str]:
    """The OSD map flags an operator sets (sortbitwise and friends left out)."""
    flags = str(mon(cluster, "osd dump").get("flags", "")).split(",")
    always = {"sortbitwise", "recovery_deletes", "purged_snapdirs", "pglog_hardlimit"}
    return [f for f in flags if f and f not in always]


def read_status(cluster: rados.Rados) -> dict[str, Any]:
    """Health, usage, OSDs, pools and flags, as the STORAGE_STATUS record holds them."""
    health = mon(cluster, "health")
    return {
        "health": health.get("status", ""),
        "health_checks": {name: check.get("summary", {}).get("message", "")
                          for name, check in health.get("checks", {}).items()},
        "usage": mon(cluster, "df").get("stats", {}), "osds": read_osds(cluster),
        "pools": read_pools(cluster), "flags": read_flags(cluster), "error": "",
    }


def rbd_pools(cluster: rados.Rados) -> list[str]:
    """Names of the pools with the rbd application enabled."""
    return [p["pool_name"] for p in mon(cluster, "osd pool ls", detail="detail")
            if "rbd" in p.get("application_metadata", {})]


def _used_bytes(image: rbd.Image, size: int) -> int:
    """Allocated bytes (whole objects), only where fast-diff makes it cheap; else -1."""
    if not image.features() & rbd.RBD_FEATURE_FAST_DIFF or \
            image.flags() & rbd.RBD_FLAG_FAST_DIFF_INVALID:
        return -1
    total = 0

    def count(_offset: int, length: int, exists: bool) -> int:
        nonlocal total
        total += length if exists else 0
        return 0

    image.diff_iterate(0, size, None, count, whole_object=True)
    return total


def describe_volume(ioctx: rados.Ioctx, pool: str, name: str) -> dict[str, Any]:
    """A volume record (layout.STORAGE_VOLUME_FIELDS) read from its image."""
    with rbd.Image(ioctx, name, read_only=True) as image:
        size = image.size()
        try:
            spec = image.get_parent_image_spec()
            parent = f"{spec['pool_name']}/{spec['image_name']}@{spec['snap_name']}"
        except rbd.ImageNotFound:
            parent = ""
        snapshots = [{"name": s["name"], "size": s["size"],
                      "timestamp": image.get_snap_timestamp(s["id"]).timestamp()}
                     for s in image.list_snaps()]
        return {"pool": pool, "name": name, "size": size, "used": _used_bytes(image, size),
                "parent": parent, "snapshots": snapshots}


def read_volumes(cluster: rados.Rados, pool: str | None = None) -> list[dict[str, Any]]:
    """Every volume of every RBD pool (or of `pool`); images gone meanwhile are skipped."""
    volumes = []
    for name in [pool] if pool is not None else rbd_pools(cluster):
        with open_pool(cluster, name) as ioctx:
            def describe(image: str, ioctx: rados.Ioctx = ioctx, pool: str = name
                         ) -> dict[str, Any] | None:
                try:
                    return describe_volume(ioctx, pool, image)
                except rbd.ImageNotFound:  # removed meanwhile
                    return None

            # opening an image is a few round trips to the OSDs: overlap them
            with ThreadPoolExecutor(max_workers=DESCRIBE_THREADS) as executor:
                volumes += [v for v in executor.map(describe, sorted(rbd.RBD().list(ioctx)))
                            if v is not None]
    return volumes


def open_pool(cluster: rados.Rados, pool: str) -> rados.Ioctx:
    """An I/O context on `pool`; CommandError(not_found) if there is no such pool."""
    try:
        return cluster.open_ioctx(pool)
    except rados.ObjectNotFound:
        raise CommandError("not_found", f"pool {pool} does not exist") from None
