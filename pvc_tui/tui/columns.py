"""The columns of the node and VM tables: header, cell text, sort order, filter fields.

Every cluster-supplied string passes through `printable` and becomes a `rich.text.Text`
(never markup). Cells carry their own sort key, so sorting by memory sorts by MiB, not
by the text `1.5G`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rich.text import Text

from pvc_tui.cluster.describe import mib
from pvc_tui.cluster.models import VM, Node
from pvc_tui.cluster.text import printable

STATE_STYLES: Mapping[str, str] = {
    "start": "green", "running": "green", "run": "green", "ready": "green",
    "stop": "bright_black", "shutoff": "bright_black", "undefined": "bright_black",
    "shutdown": "yellow", "restart": "yellow", "shutting-down": "yellow", "paused": "yellow",
    "flush": "yellow", "unflush": "yellow", "flushed": "cyan", "init": "yellow",
    "fail": "bold red", "crashed": "bold red", "dead": "bold red", "unknown": "magenta",
}


class Cell(Text):
    """Table cell text that sorts by `sort_key` rather than by its characters."""

    sort_key: Any

    @classmethod
    def of(cls, value: object, sort_key: Any = None, style: str = "", limit: int = 80
           ) -> Cell:
        """A cell showing `value` made printable, sorting by `sort_key` (or the text)."""
        text = printable(value, limit)
        cell = cls(text, style=style, no_wrap=True, overflow="ellipsis")
        cell.sort_key = text.lower() if sort_key is None else sort_key
        return cell


def state_cell(value: str) -> Cell:
    """A state word, coloured by what it means."""
    return Cell.of(value, style=STATE_STYLES.get(value, ""))


@dataclass(frozen=True)
class Column:
    """One table column."""

    key: str
    label: str
    cell: Callable[[Any], Cell]
    width: int  # fixed, so columns never jump as values change


def _migration(vm: VM) -> Cell:
    m = vm.migration
    if m is None:
        return Cell.of("", sort_key="")
    return Cell.of(f"{m.source}→{m.target} {m.phase}", style="yellow")


VM_COLUMNS: tuple[Column, ...] = (
    Column("name", "NAME", lambda v: Cell.of(v.name), 24),
    Column("state", "STATE", lambda v: state_cell(v.state), 9),
    Column("power", "POWER", lambda v: state_cell(v.power_state), 13),
    Column("node", "NODE", lambda v: Cell.of(v.node), 10),
    Column("previous", "PREVIOUS", lambda v: Cell.of(v.previous_node or "-"), 10),
    Column("memory", "MEMORY", lambda v: Cell.of(mib(v.memory_mib), v.memory_mib), 7),
    Column("vcpus", "VCPUS", lambda v: Cell.of(v.vcpus, v.vcpus), 5),
    Column("migration", "MIGRATION", _migration, 24),
    Column("reason", "FAILED REASON", lambda v: Cell.of(v.failed_reason or "", limit=60,
                                                         style="red"), 60),
)

NODE_COLUMNS: tuple[Column, ...] = (
    Column("name", "NAME", lambda n: Cell.of(n.name), 16),
    Column("daemon", "DAEMON", lambda n: state_cell(n.daemon_state), 7),
    Column("domain", "DOMAIN", lambda n: state_cell(n.domain_state), 8),
    Column("vms", "VMS", lambda n: Cell.of(n.vm_count, n.vm_count), 4),
    Column("running", "RUNNING", lambda n: Cell.of(len(n.running_vms), len(n.running_vms)), 7),
    Column("cpus", "CPUS", lambda n: Cell.of(n.cpu_count, n.cpu_count), 4),
    Column("load", "LOAD", lambda n: Cell.of(f"{n.load:.2f}", n.load), 6),
    Column("mem_used", "MEM USED", lambda n: Cell.of(mib(n.mem_used_mib), n.mem_used_mib), 8),
    Column("mem_total", "MEM TOTAL", lambda n: Cell.of(mib(n.mem_total_mib), n.mem_total_mib), 9),
    Column("mem_alloc", "MEM ALLOC",
           lambda n: Cell.of(mib(n.mem_allocated_mib), n.mem_allocated_mib), 9),
    Column("vcpu_alloc", "VCPU ALLOC", lambda n: Cell.of(n.vcpus_allocated, n.vcpus_allocated),
           10),
)

# `:vm node=hv1` — the fields each view can be filtered by, and how to read them.
VM_FIELDS: Mapping[str, Callable[[VM], str]] = {
    "name": lambda v: v.name, "state": lambda v: v.state, "power": lambda v: v.power_state,
    "node": lambda v: v.node, "previous": lambda v: v.previous_node,
}
NODE_FIELDS: Mapping[str, Callable[[Node], str]] = {
    "name": lambda n: n.name, "daemon": lambda n: n.daemon_state,
    "domain": lambda n: n.domain_state,
}
FILTER_FIELDS: Mapping[str, tuple[str, ...]] = {
    "vms": tuple(VM_FIELDS), "nodes": tuple(NODE_FIELDS),
    "pools": ("name",), "volumes": ("name", "pool"), "osds": ("host", "up", "in"),
}

