"""Plain-text tables and JSON for the CLI. Every cell passes through `printable`."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from pvc_tui.cluster.describe import age, mib, node_details, vm_details
from pvc_tui.cluster.models import VM, Node
from pvc_tui.cluster.text import printable


def print_json(data: Any, out: TextIO | None = None) -> None:
    """Pretty JSON (non-ASCII escaped, so no control character reaches a terminal)."""
    out = out or sys.stdout
    out.write(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=True) + "\n")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]],
                out: TextIO | None = None) -> None:
    """Left-aligned columns separated by two spaces."""
    out = out or sys.stdout
    cells = [[printable(h) for h in headers]] + [[printable(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


NODE_HEADERS = ("NAME", "DAEMON", "DOMAIN", "VMS", "RUNNING", "CPUS", "LOAD", "MEM USED",
                "MEM TOTAL", "MEM ALLOC", "VCPU ALLOC")
VM_HEADERS = ("NAME", "STATE", "POWER", "NODE", "PREVIOUS", "MEMORY", "VCPUS", "FAILED REASON")


def node_row(n: Node) -> list[object]:
    """One row of `node list`."""
    return [n.name, n.daemon_state, n.domain_state, n.vm_count, len(n.running_vms),
            n.cpu_count, f"{n.load:.2f}", mib(n.mem_used_mib), mib(n.mem_total_mib),
            mib(n.mem_allocated_mib), n.vcpus_allocated]


def vm_row(v: VM) -> list[object]:
    """One row of `vm list`."""
    return [v.name, v.state, v.power_state, v.node, v.previous_node or "-", mib(v.memory_mib),
            v.vcpus, printable(v.failed_reason, 60) or "-"]


def print_details(pairs: Sequence[tuple[str, object]], out: TextIO | None = None) -> None:
    """`key: value` lines, aligned."""
    out = out or sys.stdout
    width = max(len(k) for k, _ in pairs)
    for key, value in pairs:
        out.write(f"{key.rjust(width)}: {printable(value)}\n")


__all__ = ["age", "mib", "node_details", "vm_details"]
