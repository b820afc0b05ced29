"""Human descriptions of cluster records, shared by the CLI and the dashboard.

Plain strings: callers make them printable (CLI) or wrap them in Text (dashboard).
"""

from __future__ import annotations

import time
from typing import Any

from pvc_tui.cluster.models import VM, Node


def mib(value: int) -> str:
    """A MiB figure in a short human unit."""
    return f"{value / 1024:.1f}G" if value >= 1024 else f"{value}M"


def age(epoch: float) -> str:
    """Seconds since `epoch`, short."""
    if not epoch:
        return "never"
    seconds = max(0.0, time.time() - epoch)
    return f"{seconds:.0f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


def flush_item(item: dict[str, Any]) -> str:
    """One VM of a flush or ready: `web1 -> hv2: ok (live)`."""
    return f"{item.get('vm', '?')} -> {item.get('target') or '-'}: {item.get('result', '')}"


def node_details(n: Node) -> list[tuple[str, object]]:
    """`node info` fields, and the node detail view's."""
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
        ("fence", _fence(n.fence)),
    ]


def _fence(fence: dict[str, object]) -> str:
    """A dead node's fencing and recovery, one line: `recovered by hv2 (web1: hv2)`."""
    if not fence.get("state"):
        return "-"
    text = f"{fence['state']}" + (f" by {fence['by']}" if fence.get("by") else "")
    if fence.get("reason"):
        text += f": {fence['reason']}"
    vms = fence.get("vms")
    if isinstance(vms, list) and vms:
        text += f" ({', '.join(str(v) for v in vms)})"
    return text


def vm_details(v: VM) -> list[tuple[str, object]]:
    """`vm info` fields, and the VM detail view's."""
    pairs: list[tuple[str, object]] = [
        ("name", v.name), ("uuid", v.uuid), ("state", v.state), ("power", v.power_state),
        ("node", v.node), ("previous node", v.previous_node or "-"),
        ("failed reason", v.failed_reason or "-"), ("memory", mib(v.memory_mib)),
        ("vCPUs", v.vcpus), ("CPU time", f"{v.runtime.cpu_time_ns / 1e9:.1f} s"),
        ("last report", age(v.runtime.updated_at)),
        ("migration method", v.migration_method or "auto"),
    ]
    if v.migration:
        m = v.migration
        pairs.append(("migrating", f"{m.source} -> {m.target} ({m.phase})"))
    if v.last_migration:
        m = v.last_migration
        pairs.append(("last migration", f"{m.source} -> {m.target}: {m.used or m.phase}, "
                                         f"{m.seconds:.1f} s"))
    return pairs
