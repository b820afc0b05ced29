"""The dashboard's storage actions: ask (a prompt, a pick, a confirmation), run, report.

Creating asks for the values in a prompt whose button is the confirmation; changing
state asks with Cancel focused; destroying data (removing a pool or volume, rolling
back, shrinking) asks for the name to be typed, as flushing a node does. Every call
runs in a thread worker through `client.storage` and reports its outcome.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pvc_tui.cluster.errors import InvalidRequest
from pvc_tui.cluster.storage import Osd, Pool, Volume
from pvc_tui.cluster.storage_checks import (
    OSD_FLAGS,
    check_ceph_name,
    check_pgs,
    format_size,
    parse_replication,
    parse_size,
)
from pvc_tui.cluster.text import printable
from pvc_tui.tui.actions import ActionSpec, Call
from pvc_tui.tui.dialogs import (
    ChoiceScreen,
    ConfirmScreen,
    PromptField,
    PromptScreen,
    TypeNameScreen,
)

if TYPE_CHECKING:
    from pvc_tui.cluster import ClusterClient
    from pvc_tui.tui.app import Dashboard

POOL_ACTIONS = (
    ActionSpec("pool_add", "n", "New pool", "pool"),
    ActionSpec("pool_set_pgs", "g", "Set PGs", "pool"),
    ActionSpec("pool_remove", "D", "Remove pool", "pool"),
)
VOLUME_ACTIONS = (
    ActionSpec("volume_add", "n", "New volume", "volume"),
    ActionSpec("volume_resize", "e", "Resize", "volume"),
    ActionSpec("volume_rename", "R", "Rename", "volume"),
    ActionSpec("volume_clone", "C", "Clone", "volume"),
    ActionSpec("snapshot_add", "t", "Snapshot", "volume"),
    ActionSpec("snapshot_rollback", "b", "Roll back", "volume"),
    ActionSpec("snapshot_remove", "T", "Remove snapshot", "volume"),
    ActionSpec("volume_remove", "D", "Remove volume", "volume"),
)
OSD_ACTIONS = (
    ActionSpec("osd_in", "i", "Mark in", "osd"),
    ActionSpec("osd_out", "o", "Mark out", "osd"),
    ActionSpec("osd_set", "f", "Set flag", "osd"),
    ActionSpec("osd_unset", "F", "Unset flag", "osd"),
)
STORAGE_ACTIONS = POOL_ACTIONS + VOLUME_ACTIONS + OSD_ACTIONS


def _checker(*checks: Callable[[str], object]) -> Callable[[list[str]], str | None]:
    """A prompt check: each value through its check; the first error's message."""
    def check(values: list[str]) -> str | None:
        try:
            for value, one in zip(values, checks, strict=True):
                one(value)
        except (InvalidRequest, ValueError) as exc:
            return str(exc)
        return None

    return check


def _pgs(text: str) -> int:
    if not text.isdigit():
        raise InvalidRequest(f"invalid PG count {text!r}: a power of two")
    return check_pgs(int(text))


def _optional(check: Callable[[str], object]) -> Callable[[str], object]:
    return lambda text: check(text) if text else None


class StorageActions:
    """Storage actions of one dashboard."""

    def __init__(self, app: Dashboard) -> None:
        self.app = app

    def run(self, name: str) -> None:
        """Storage action `name` (see STORAGE_ACTIONS) on the row under the cursor."""
        if not self.app.allows(name):
            return
        spec = next(a for a in STORAGE_ACTIONS if a.name == name)
        table = {"pool": self.app.pool_table, "volume": self.app.volume_table,
                 "osd": self.app.osd_table}[spec.target]
        current = table.current
        if current is None and name not in ("pool_add", "volume_add", "osd_set", "osd_unset"):
            self.app.notify(f"no {spec.target} selected", severity="warning")
            return
        getattr(self, name)(current)

    def _go(self, label: str, call: Call) -> None:
        self.app.notify(f"{label}: requested", markup=False)
        self.app.actions.run_calls([(label, call)])

    def _ask(self, title: str, detail: str, button: str, label: str, call: Call) -> None:
        self.app.push_screen(ConfirmScreen(title, detail, button),
                             lambda ok: self._go(label, call) if ok else None)

    def _type(self, title: str, detail: str, name: str, button: str, label: str,
              call: Call) -> None:
        self.app.push_screen(TypeNameScreen(title, detail, name, button),
                             lambda ok: self._go(label, call) if ok else None)

    # ---- pools --------------------------------------------------------------------------

    def pool_add(self, _pool: Pool | None) -> None:
        def entered(values: list[str] | None) -> None:
            if values:
                name, pgs, replication = values
                size, minimum = parse_replication(replication) if replication else (None, None)
                self._go(f"new pool {name}", lambda c: _pool_done(
                    c.storage.pools.add(name, int(pgs), size, minimum), "added"))

        self.app.push_screen(PromptScreen("New RBD pool", [
            PromptField("Name"), PromptField("Placement groups (a power of two)", value="64"),
            PromptField("Replication (size=N,min=M; empty: Ceph's default)",
                        "size=3,min=2")],
            _checker(lambda n: check_ceph_name(n, "pool"), _pgs,
                     _optional(parse_replication)), "Create"), entered)

    def pool_set_pgs(self, pool: Pool) -> None:
        def entered(values: list[str] | None) -> None:
            if values:
                self._go(f"PGs of {pool.name}", lambda c: _pool_done(
                    c.storage.pools.set_pgs(pool.name, int(values[0])),
                    f"set to {values[0]} PGs"))

        self.app.push_screen(PromptScreen(
            f"Placement groups of pool {pool.name} (now {pool.pg_num})",
            [PromptField("Placement groups (a power of two)", value=str(pool.pg_num))],
            _checker(_pgs), "Set", "Ceph moves data to the new PGs gradually."), entered)

    def pool_remove(self, pool: Pool) -> None:
        self._type(f"Remove pool {pool.name}?", f"Every volume in it and all its data "
                   f"({format_size(pool.stored)}, {pool.objects} objects) is destroyed. A "
                   "pool that a VM uses is refused.", pool.name, "Remove",
                   f"remove pool {pool.name}",
                   _saying(f"pool {pool.name} removed",
                           lambda c: c.storage.pools.remove(pool.name)))

    # ---- volumes ------------------------------------------------------------------------

    def volume_add(self, volume: Volume | None) -> None:
        def entered(values: list[str] | None) -> None:
            if values:
                pool, name, size = values
                self._go(f"new volume {pool}/{name}", lambda c: _volume_done(
                    c.storage.volumes.add(pool, name, parse_size(size)), "added"))

        pools = sorted(self.app.pool_table.items)
        default = volume.pool if volume else ("rbd" if "rbd" in pools else
                                              (pools[0] if pools else ""))
        self.app.push_screen(PromptScreen("New volume", [
            PromptField("Pool", value=default), PromptField("Name"),
            PromptField("Size (binary units: 512M, 10G, 1T)", "10G")],
            _checker(lambda p: check_ceph_name(p, "pool"),
                     lambda n: check_ceph_name(n, "volume"), parse_size), "Create"), entered)

    def volume_resize(self, volume: Volume) -> None:
        def entered(values: list[str] | None) -> None:
            if not values:
                return
            size = parse_size(values[0])
            label = f"resize {volume.key}"

            def call(c: ClusterClient) -> str:
                return _volume_done(c.storage.volumes.resize(volume.pool, volume.name, size,
                                                             allow_shrink=True), "resized")

            if size < volume.size:
                self._type(f"Shrink {volume.key} from {format_size(volume.size)} to "
                           f"{format_size(size)}?", "The data past the new end is lost.",
                           volume.name, "Shrink", label, call)
            else:
                self._go(label, call)

        self.app.push_screen(PromptScreen(
            f"Resize {volume.key} (now {format_size(volume.size)})",
            [PromptField("New size (binary units: 512M, 10G, 1T)", value=format_size(
                volume.size).replace(" ", "").replace("iB", ""))],
            _checker(parse_size), "Resize"), entered)

    def volume_rename(self, volume: Volume) -> None:
        def entered(values: list[str] | None) -> None:
            if values:
                self._go(f"rename {volume.key}", _saying(
                    f"{volume.key} renamed to {values[0]}",
                    lambda c: c.storage.volumes.rename(volume.pool, volume.name, values[0])))

        self.app.push_screen(PromptScreen(
            f"Rename {volume.key}", [PromptField("New name", value=volume.name)],
            _checker(lambda n: check_ceph_name(n, "volume")), "Rename",
            "A volume that a VM uses is refused."), entered)

    def volume_clone(self, volume: Volume) -> None:
        def entered(values: list[str] | None) -> None:
            if values:
                new, snap = values
                self._go(f"clone {volume.key}", lambda c: _volume_done(
                    c.storage.volumes.clone(volume.pool, volume.name, new, snap or None),
                    "cloned"))

        self.app.push_screen(PromptScreen(f"Clone {volume.key}", [
            PromptField("New volume name", value=f"{volume.name}-copy"),
            PromptField("From snapshot (copy-on-write; empty: a full copy)",
                        ", ".join(s.name for s in volume.snapshots[:3]))],
            _checker(lambda n: check_ceph_name(n, "volume"),
                     _optional(lambda s: check_ceph_name(s, "snapshot"))), "Clone"), entered)

    def volume_remove(self, volume: Volume) -> None:
        self._type(f"Remove volume {volume.key}?", f"Its data ({format_size(volume.size)}) is "
                   "destroyed. A volume that a VM uses is refused.", volume.name, "Remove",
                   f"remove {volume.key}", _saying(
                       f"{volume.key} removed",
                       lambda c: c.storage.volumes.remove(volume.pool, volume.name)))

    def snapshot_add(self, volume: Volume) -> None:
        def entered(values: list[str] | None) -> None:
            if values:
                self._go(f"snapshot {volume.key}", _saying(
                    f"snapshot {volume.key}@{values[0]} taken",
                    lambda c: c.storage.snapshots.add(volume.pool, volume.name, values[0])))

        self.app.push_screen(PromptScreen(f"Snapshot {volume.key}", [PromptField(
            "Snapshot name", value=time.strftime("snap-%Y%m%d-%H%M%S"))],
            _checker(lambda n: check_ceph_name(n, "snapshot")), "Take"), entered)

    def _pick_snapshot(self, volume: Volume, verb: str, then: Callable[[str], None]) -> None:
        if not volume.snapshots:
            self.app.notify(f"{printable(volume.key)} has no snapshots", severity="warning",
                            markup=False)
            return
        choices = [(s.name, f"{format_size(s.size)}, taken "
                    f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(s.timestamp))}")
                   for s in volume.snapshots]
        self.app.push_screen(ChoiceScreen(f"{verb} {volume.key}:", choices),
                             lambda snap: then(snap) if snap else None)

    def snapshot_rollback(self, volume: Volume) -> None:
        self._pick_snapshot(volume, "Roll back to a snapshot of", lambda snap: self._type(
            f"Roll {volume.key} back to {snap}?", "Everything written since the snapshot is "
            "lost. A volume that a VM uses is refused.", volume.name, "Roll back",
            f"roll back {volume.key}", _saying(
                f"{volume.key} rolled back to {snap}",
                lambda c: c.storage.snapshots.rollback(volume.pool, volume.name, snap))))

    def snapshot_remove(self, volume: Volume) -> None:
        self._pick_snapshot(volume, "Remove a snapshot of", lambda snap: self._ask(
            f"Remove snapshot {volume.key}@{snap}?", "", "Remove",
            f"remove {volume.key}@{snap}", _saying(
                f"snapshot {volume.key}@{snap} removed",
                lambda c: c.storage.snapshots.remove(volume.pool, volume.name, snap))))

    # ---- OSDs ---------------------------------------------------------------------------

    def osd_in(self, osd: Osd) -> None:
        self._ask(f"Mark osd.{osd.id} in?", "It takes data again; Ceph rebalances.", "Mark in",
                  f"osd.{osd.id} in", _saying(f"osd.{osd.id} marked in",
                                              lambda c: c.storage.osds.set_in(osd.id)))

    def osd_out(self, osd: Osd) -> None:
        self._ask(f"Mark osd.{osd.id} out?", "Ceph moves its data to the other OSDs; with "
                  "too few OSDs left, pools lose redundancy.", "Mark out",
                  f"osd.{osd.id} out", _saying(f"osd.{osd.id} marked out",
                                               lambda c: c.storage.osds.set_out(osd.id)))

    def _flag(self, verb: str, flags: list[str]) -> None:
        def chosen(flag: str) -> None:
            unset = verb == "Unset"
            self._ask(f"{verb} the OSD flag {flag}?", "", verb, f"{verb.lower()} {flag}",
                      _saying(f"OSD flag {flag} {verb.lower()}", lambda c: (
                          c.storage.osds.unset_flag if unset else c.storage.osds.set_flag)(flag)))

        if not flags:
            self.app.notify("no OSD flag is set", severity="warning")
            return
        self.app.push_screen(ChoiceScreen(f"{verb} an OSD flag:", [(f, "") for f in flags]),
                             lambda flag: chosen(flag) if flag else None)

    def osd_set(self, _osd: Osd | None) -> None:
        status = self.app.storage_status
        current = set(status.flags) if status else set()
        self._flag("Set", [f for f in OSD_FLAGS if f not in current])

    def osd_unset(self, _osd: Osd | None) -> None:
        status = self.app.storage_status
        self._flag("Unset", list(status.flags) if status else [])


def _saying(text: str, call: Callable[[ClusterClient], object]) -> Call:
    """A call that reports `text` once `call` has succeeded."""
    def run(client: ClusterClient) -> str:
        call(client)
        return text

    return run


def _pool_done(pool: Pool, what: str) -> str:
    return f"pool {pool.name} {what}"


def _volume_done(volume: Volume, what: str) -> str:
    return f"volume {volume.key} {what} ({format_size(volume.size)})"
