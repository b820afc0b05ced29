"""The pool, volume and OSD tables (views 3, 4, 5), fed from the store like the others.

Pools, OSDs and flags come in the one storage status record, so each status change is
turned into keyed diffs here; volumes arrive one record at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

from textual.binding import Binding

from pvc_tui.cluster.storage import Osd, Pool, StorageStatus, Volume
from pvc_tui.cluster.store import StoreChange
from pvc_tui.tui.storage_actions import OSD_ACTIONS, POOL_ACTIONS, VOLUME_ACTIONS
from pvc_tui.tui.storage_columns import (
    OSD_COLUMNS,
    OSD_FIELDS,
    POOL_COLUMNS,
    POOL_FIELDS,
    VOLUME_COLUMNS,
    VOLUME_FIELDS,
)
from pvc_tui.tui.table import ResourceTable
from pvc_tui.tui.views import COMMON, View


class _StorageView(View):
    def action_storage(self, name: str) -> None:
        """Storage action `name` (see storage_actions.STORAGE_ACTIONS)."""
        self.dashboard.storage_action(name)

    def on_resource_table_selected(self, event: ResourceTable.Selected) -> None:
        event.stop()  # no detail screen: every field is in the row


class PoolTable(_StorageView):
    """Ceph pools, keyed by name."""

    BINDINGS = [*COMMON, *(Binding(a.key, f"storage('{a.name}')", a.title)
                           for a in POOL_ACTIONS)]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(POOL_COLUMNS, POOL_FIELDS, lambda p: cast(Pool, p).name, id=id)


class VolumeTable(_StorageView):
    """RBD volumes, keyed by their `pool@volume` record name."""

    BINDINGS = [*COMMON, *(Binding(a.key, f"storage('{a.name}')", a.title)
                           for a in VOLUME_ACTIONS)]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(VOLUME_COLUMNS, VOLUME_FIELDS, lambda v: cast(Volume, v).key, id=id)
        self.sort_column = "pool"  # then by name: each pool's volumes together


class OsdTable(_StorageView):
    """OSDs, keyed by id."""

    BINDINGS = [*COMMON, *(Binding(a.key, f"storage('{a.name}')", a.title)
                           for a in OSD_ACTIONS)]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(OSD_COLUMNS, OSD_FIELDS, lambda o: str(cast(Osd, o).id), id=id)


def _diff(table: ResourceTable, items: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Keyed changes that turn the table's records into `items`."""
    changes: list[tuple[str, Any]] = [(k, v) for k, v in items.items()
                                      if table.items.get(k) != v]
    changes += [(k, None) for k in table.items if k not in items]
    return changes


def apply_status(pools: PoolTable, osds: OsdTable, status: StorageStatus | None) -> None:
    """Show a (new) storage status in the pool and OSD tables."""
    pools.apply(_diff(pools, {p.name: p for p in status.pools} if status else {}))
    osds.apply(_diff(osds, {str(o.id): o for o in status.osds} if status else {}))


def apply_volumes(volumes: VolumeTable, changes: Iterable[StoreChange]) -> None:
    """Volume record changes into the volume table (keyed by pool/volume)."""
    keyed: list[tuple[str, Any]] = []
    for change in changes:
        old, new = cast(Volume | None, change.old), cast(Volume | None, change.new)
        if old is not None and (new is None or new.key != old.key):
            keyed.append((old.key, None))
        if new is not None:
            keyed.append((new.key, new))
    volumes.apply(keyed)
