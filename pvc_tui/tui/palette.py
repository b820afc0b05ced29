"""The command palette (ctrl+p): every view and action by name."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from pvc_tui.tui.app import Dashboard

Entry = tuple[str, str, Callable[[], object]]


def palette_entries(app: Dashboard) -> list[Entry]:
    """(name, help, callback) for every view and action this dashboard allows."""
    from pvc_tui.tui.actions import NODE_ACTIONS, VM_ACTIONS
    from pvc_tui.tui.storage_actions import STORAGE_ACTIONS

    entries: list[Entry] = [
        ("Show nodes", "the node view (1)", partial(app.action_show_view, "nodes")),
        ("Show VMs", "the VM view (2)", partial(app.action_show_view, "vms")),
        ("Show storage pools", "pools with usage (3)", partial(app.action_show_view, "pools")),
        ("Show volumes", "RBD volumes and snapshots (4)",
         partial(app.action_show_view, "volumes")),
        ("Show OSDs", "OSDs and their use (5)", partial(app.action_show_view, "osds")),
        ("Filter rows", "regular expression, ! inverts (/)", app.action_filter),
        ("Command line", ":vm node=hv1 /web (:)", app.action_command_line),
        ("Pause or resume live updates", "(p)", app.action_toggle_pause),
        ("Show unreadable records", "each with its reason (!)", app.action_show_unreadable),
        ("Open console of the selected VM", "follow it live (c)", app.action_open_console),
        ("Zoom console", "full screen or beside the tables (z)", app.action_zoom_console),
        ("Show details", "of the selected row (enter)", app.open_detail),
        ("Quit", "(q)", app.exit),
    ]
    if not app.readonly:
        entries += [(f"VM: {a.title}", f"the selected or marked VMs ({a.key})",
                     partial(app.vm_action, a.name)) for a in VM_ACTIONS]
        entries += [(f"Node: {a.title}", f"the selected node ({a.key})",
                     partial(app.node_action, a.name)) for a in NODE_ACTIONS]
        entries += [(f"Storage: {a.title}" + ("" if a.title.lower().endswith(a.target)
                                              else f" ({a.target})"),
                     f"the selected {a.target} ({a.key} in the {a.target} view)",
                     partial(_storage, app, a.name, a.target)) for a in STORAGE_ACTIONS]
    return entries


def _storage(app: Dashboard, name: str, target: str) -> None:
    """A storage action from the palette: its view first, so the cursor row is the target."""
    app.action_show_view({"pool": "pools", "volume": "volumes", "osd": "osds"}[target])
    app.storage_action(name)


class DashboardCommands(Provider):
    """Views and actions of the dashboard."""

    def _entries(self) -> list[Entry]:
        return palette_entries(cast("Dashboard", self.app))

    async def discover(self) -> Hits:
        for name, help_text, callback in self._entries():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, callback in self._entries():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)
