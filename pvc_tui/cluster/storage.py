"""Storage (Ceph) as the cluster reports it, in typed form.

The storage primary agent publishes STORAGE_STATUS and one record per volume (see
node_agent/storage.py) and returns the same shapes as results of storage requests;
this module turns both into frozen dataclasses. The command API is storage_api.py.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from kazoo.exceptions import NoNodeError

from pvc_tui.cluster import layout
from pvc_tui.cluster.layout import RecordError

if TYPE_CHECKING:
    from kazoo.client import KazooClient

T = TypeVar("T")


def _from_dict(cls: type[T], raw: dict[str, Any]) -> T:
    """An instance from the fields of `raw` that `cls` has (defaults for the rest)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in raw.items() if k in names})


@dataclass(frozen=True)
class Pool:
    """A Ceph pool with its usage and I/O rates."""

    name: str
    id: int = 0
    stored: int = 0  # bytes of data
    objects: int = 0
    percent_used: float = 0.0  # 0.0-1.0 of what the pool may use
    max_avail: int = 0  # bytes still writable
    size: int = 0  # replicas
    min_size: int = 0
    pg_num: int = 0
    read_bytes_sec: int = 0
    write_bytes_sec: int = 0

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Pool:
        """From a published or returned pool dict."""
        return _from_dict(cls, raw)


@dataclass(frozen=True)
class Osd:
    """One OSD: where it is, whether it is up and in, how full."""

    id: int
    host: str = ""
    up: bool = False
    # "in" is a keyword: `in_cluster` holds whether the OSD takes data
    in_cluster: bool = False
    weight: float = 0.0  # CRUSH weight
    reweight: float = 0.0
    utilization: float = 0.0  # percent
    pgs: int = 0
    kb: int = 0
    kb_used: int = 0

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Osd:
        """From a published or returned OSD dict."""
        return _from_dict(cls, raw)


@dataclass(frozen=True)
class Snapshot:
    """A snapshot of an RBD volume."""

    pool: str
    volume: str
    name: str
    size: int = 0
    timestamp: float = 0.0

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Snapshot:
        """From a published or returned snapshot dict."""
        return _from_dict(cls, raw)


@dataclass(frozen=True)
class Volume:
    """An RBD volume (image)."""

    pool: str
    name: str
    size: int = 0
    used: int = -1  # bytes allocated; -1 if Ceph could not say
    parent: str = ""  # pool/volume@snapshot of a copy-on-write clone
    snapshots: tuple[Snapshot, ...] = ()

    @property
    def key(self) -> str:
        """`pool/volume`, as libvirt and rbd name it."""
        return f"{self.pool}/{self.name}"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Volume:
        """From a published or returned volume dict."""
        snaps = tuple(Snapshot.from_dict({"pool": raw["pool"], "volume": raw["name"], **s})
                      for s in raw.get("snapshots", ()))
        return _from_dict(cls, {**raw, "snapshots": snaps})


@dataclass(frozen=True)
class StorageStatus:
    """Ceph's health, usage, OSDs and pools, as the storage primary last saw them."""

    primary: str
    health: str
    health_checks: dict[str, str]
    error: str
    usage: dict[str, Any]
    osds: tuple[Osd, ...]
    pools: tuple[Pool, ...]
    flags: tuple[str, ...]
    updated_at: float

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> StorageStatus:
        """From a decoded STORAGE_STATUS record (or a `status` request's result)."""
        return cls(primary=record["primary"], health=record["health"],
                   health_checks=dict(record["health_checks"]), error=record["error"],
                   usage=dict(record["usage"]),
                   osds=tuple(Osd.from_dict(o) for o in record["osds"]),
                   pools=tuple(Pool.from_dict(p) for p in record["pools"]),
                   flags=tuple(record["flags"]), updated_at=record["updated_at"])

    def pool(self, name: str) -> Pool | None:
        """The pool called `name`, if Ceph has it."""
        return next((p for p in self.pools if p.name == name), None)


def parse_status(data: bytes) -> StorageStatus:
    """A STORAGE_STATUS znode's content, typed (RecordError if it is not one)."""
    try:
        return StorageStatus.from_record(layout.decode(data, layout.STORAGE_STATUS_FIELDS))
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"storage status: {exc}") from None


def parse_volume(data: bytes) -> Volume:
    """A volume znode's content, typed (RecordError if it is not one)."""
    try:
        return Volume.from_dict(layout.decode(data, layout.STORAGE_VOLUME_FIELDS))
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"volume record: {exc}") from None


def read_status(zk: KazooClient) -> StorageStatus | None:
    """The last published status, or None if no storage primary has published yet."""
    try:
        data, _ = zk.get(layout.STORAGE_STATUS)
    except NoNodeError:
        return None
    return parse_status(data)


def read_volumes(zk: KazooClient) -> list[Volume]:
    """The published volumes, by pool and name (unreadable records are skipped)."""
    try:
        keys = zk.get_children(layout.STORAGE_VOLUMES)
    except NoNodeError:
        return []
    volumes = []
    for key in keys:
        try:
            data, _ = zk.get(layout.volume_key_path(key))
            volumes.append(parse_volume(data))
        except (NoNodeError, RecordError):
            continue
    return sorted(volumes, key=lambda v: (v.pool, v.name))
