"""Storage (Ceph) as the cluster reports it: read through the library, never from Ceph.

The storage primary agent publishes STORAGE_STATUS (see node_agent/storage.py); this
module gives it typed form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kazoo.exceptions import NoNodeError

from pvc_tui.cluster import layout

if TYPE_CHECKING:
    from pvc_tui.cluster.client import ClusterClient


@dataclass(frozen=True)
class StorageStatus:
    """Ceph's health, usage, OSDs and pools, as the storage primary last saw them."""

    primary: str
    health: str
    health_checks: dict[str, str]
    error: str
    usage: dict[str, Any]
    osds: tuple[dict[str, Any], ...]
    pools: tuple[dict[str, Any], ...]
    updated_at: float

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> StorageStatus:
        """From a decoded STORAGE_STATUS record."""
        return cls(primary=record["primary"], health=record["health"],
                   health_checks=dict(record["health_checks"]), error=record["error"],
                   usage=dict(record["usage"]), osds=tuple(record["osds"]),
                   pools=tuple(record["pools"]), updated_at=record["updated_at"])


def read_status(client: ClusterClient) -> StorageStatus | None:
    """The last published status, or None if no storage primary has published yet."""
    try:
        data, _ = client.zk.get(layout.STORAGE_STATUS)
    except NoNodeError:
        return None
    return StorageStatus.from_record(layout.decode(data, layout.STORAGE_STATUS_FIELDS))
