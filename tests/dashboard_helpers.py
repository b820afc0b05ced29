"""Helpers for driving the dashboard under Textual's Pilot against a real cluster."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from textual.pilot import Pilot

from pvc_tui.cluster import ClusterClient, layout
from pvc_tui.tui.app import Dashboard
from tests.conftest import vm_xml


async def until(pilot: Pilot[int], check: Callable[[], object], timeout: float = 20.0,
                what: str = "condition") -> None:
    """Let the app run until `check()` is true (the UI processes events meanwhile)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


def row_text(app: Dashboard, table_id: str, key: str) -> list[str]:
    """The plain text of one row of a table (marker column excluded)."""
    table = app.node_table if table_id == "nodes" else app.vm_table
    return [cell.plain for cell in table.get_row(key)[1:]]


def write_node(client: ClusterClient, name: str, alive: bool = True, **fields: Any) -> None:
    """A node record as an agent would publish it (fixed values: deterministic)."""
    record = {**layout.NODE_FIELDS, "name": name, "daemon_state": "run",
              "agent_version": "0.1.0", "libvirt_uri": f"test:///{name}", "cpu_count": 8,
              "load": 0.5, "mem_total_mib": 16384, "mem_used_mib": 2048,
              "mem_free_mib": 14336, **fields}
    client.zk.create(layout.node_path(name), layout.encode(record), makepath=True)
    if alive:
        client.zk.create(layout.node_alive_path(name), layout.alive_data("test", 1),
                         ephemeral=True)


def seed_cluster(client: ClusterClient) -> None:
    """A fixed small cluster (no agents): 3 nodes, 6 VMs in telling states."""
    write_node(client, "hv1", load=1.25, vm_count=3, mem_allocated_mib=3072,
               vcpus_allocated=4, running_vms=["web1", "db1"])
    write_node(client, "hv2", load=0.75, vm_count=2, mem_allocated_mib=1024,
               vcpus_allocated=2, running_vms=["web2"])
    write_node(client, "hv3", domain_state="flushed", vm_count=1, load=0.0,
               domain_progress={"id": "f1", "action": "flush", "finished": True,
                                "seconds": 4.2, "items": [
                                    {"vm": "cache1", "target": "hv2", "result": "ok (live)"},
                                    {"vm": "batch1", "target": "", "result": "shut down: "
                                     "no valid target"}]})
    vms = [("web1", "hv1", "start", "running", "", ""),
           ("db1", "hv1", "start", "running", "", ""),
           ("batch1", "hv3", "stop", "shutoff", "", ""),
           ("web2", "hv2", "start", "running", "hv1", ""),
           ("cache1", "hv2", "fail", "shutoff", "", "libvirt: internal error: no memory"),
           ("build1", "hv1", "shutdown", "shutting-down", "", "")]
    for i, (name, node, state, power, previous, reason) in enumerate(vms):
        uid = f"00000000-0000-4000-8000-{i:012d}"
        client.define_vm(vm_xml(name, memory_mib=512 * (i % 3 + 1), vcpus=i % 2 + 1,
                                uuid_=uid), node)

        def mutate(record: dict[str, Any], state: str = state, power: str = power,
                   node: str = node, previous: str = previous, reason: str = reason) -> None:
            record.update(state=state, previous_node=previous, failed_reason=reason,
                          runtime={**layout.VM_RUNTIME_FIELDS, "power_state": power,
                                   "node": node, "cpu_time_ns": 12_500_000_000})

        client.update_vm(uid, mutate)
