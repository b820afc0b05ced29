"""Plain-text tables and JSON for the CLI. Every cell passes through `printable`."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from pvc_tui.cluster.models import VM, Node
from pvc_tui.cluster.text import printable


def print_json(data: Any, out: TextIO = sys.stdout) -> None:
    """Pretty JSON (non-ASCII escaped, so no control character reaches a terminal)."""
    out.write(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=True) + "\n")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]],
                out: TextIO = sys.stdout) -> None:
    """Left-aligned columns separated by two spaces."""
    cells = [[printable(h) for h in headers]] + [[printable(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


def mib(value: int) -> str:
    """A MiB figure in a short human unit."""
    return f"{value / 1024:.1f}G" if value >= 1024 else f"{value}M"


def age(epoch: float) -> str:
    """Seconds since `epoch`, short."""
    if not epoch:
        return "never"
    seconds = max(0.0, time.time() - epoch)
    return f"{seconds:.0f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


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


def print_details(pairs: Sequence[tuple[str, object]], out: TextIO = sys.stdout) -> None:
    """`key: value` lines, aligned."""
    width = max(len(k) for k, _ in pairs)
    for key, value in pairs:
        out.write(f"{key.rjust(width)}: {printable(value)}\n")


def node_details(n: Node) -> list[tuple[str, object]]:
    """`node info` fields."""
    return [
        ("name", n.name), ("daemon state", n.daemon_state), ("domain state", n.domain_state),
        ("agent version", n.agent_version or "-"), ("libvirt", n.libvirt_uri or "-"),
        ("console logs", n.console_log_dir or "-"), ("CPUs", n.cpu_count),
        ("load", f"{n.load:.2f}"),
        ("memory", f"{mib(n.mem_used_mib)} used, {mib(n.mem_free_mib)} free of "
                   f"{mib(n.mem_total_mib)}"),
        ("allocated", f"{mib(n.mem_allocated_mib)} memory, {n.vcpus_allocated} vCPUs"),
        ("VMs", f"{n.vm_count} assigned, {len(n.running_vms)} running"),
        ("running", ", ".join(n.running_vms) or "-"),
        ("last keepalive", age(n.keepalive_at)),
    ]


def vm_details(v: VM) -> list[tuple[str, object]]:
    """`vm info` fields."""
    return [
        ("name", v.name), ("uuid", v.uuid), ("state", v.state), ("power", v.power_state),
        ("node", v.node), ("previous node", v.previous_node or "-"),
        ("failed reason", v.failed_reason or "-"), ("memory", mib(v.memory_mib)),
        ("vCPUs", v.vcpus), ("CPU time", f"{v.runtime.cpu_time_ns / 1e9:.1f} s"),
        ("last report", age(v.runtime.updated_at)),
    ]
