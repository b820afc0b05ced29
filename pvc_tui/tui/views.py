"""The node and VM tables with their keys. Mutating keys live on the tables, so they
are not live while the console pane (or any dialog) has the focus."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from textual.binding import Binding

from pvc_tui.cluster.models import VM, Node
from pvc_tui.tui.actions import NODE_ACTIONS, VM_ACTIONS
from pvc_tui.tui.columns import NODE_COLUMNS, NODE_FIELDS, VM_COLUMNS, VM_FIELDS
from pvc_tui.tui.table import ResourceTable

if TYPE_CHECKING:
    from pvc_tui.tui.app import Dashboard

COMMON = [
    Binding("space", "toggle_mark", "Mark", show=False),
    Binding("S", "next_sort", "Sort"),
    Binding("I", "invert_sort", "Invert sort", show=False),
    Binding("escape", "clear", "Clear filter", show=False),
]


class View(ResourceTable):
    """A table of the dashboard: sort, marks, filter, detail on enter."""

    @property
    def dashboard(self) -> Dashboard:
        return cast("Dashboard", self.app)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("vm", "node", "storage"):  # the mutating actions, by name
            return self.dashboard.check_action(str(parameters[0]), ())
        return True

    def action_toggle_mark(self) -> None:
        """Mark the row for a bulk action and go to the next one."""
        self.toggle_mark()
        self.action_cursor_down()

    def action_next_sort(self) -> None:
        """Sort by the next column."""
        keys = [c.key for c in self.columns_spec]
        self.set_sort(keys[(keys.index(self.sort_column) + 1) % len(keys)], self.sort_reverse)
        self.notify(f"sorted by {self.sort_column}", timeout=2)

    def action_invert_sort(self) -> None:
        """Reverse the sort order."""
        self.set_sort(self.sort_column, not self.sort_reverse)

    def action_clear(self) -> None:
        """Clear the filter and the marks."""
        self.clear_marks()
        if self.row_filter.active:
            self.dashboard.clear_filter()

    def on_resource_table_selected(self, event: ResourceTable.Selected) -> None:
        event.stop()
        self.dashboard.open_detail()


class VMTable(View):
    """Virtual machines, keyed by uuid."""

    BINDINGS = [*COMMON, *(Binding(a.key, f"vm('{a.name}')", a.title) for a in VM_ACTIONS)]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(VM_COLUMNS, VM_FIELDS, lambda v: cast(VM, v).uuid, id=id)

    def action_vm(self, name: str) -> None:
        """VM action `name` (see actions.VM_ACTIONS) on the marked or current VMs."""
        self.dashboard.vm_action(name)


class NodeTable(View):
    """Hypervisor nodes, keyed by name."""

    BINDINGS = [*COMMON, *(Binding(a.key, f"node('{a.name}')", a.title) for a in NODE_ACTIONS)]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(NODE_COLUMNS, NODE_FIELDS, lambda n: cast(Node, n).name, id=id)

    def action_node(self, name: str) -> None:
        """Node action `name` (flush, ready) on the current node."""
        self.dashboard.node_action(name)
