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


def seed_storage(client: ClusterClient) -> None:
    """Storage records as a primary publishes them (fixed values: deterministic)."""
    gib = 1 << 30
    pools = [
        {"name": "rbd", "id": 1, "stored": 412 * (1 << 20), "objects": 106,
         "percent_used": 0.0402, "max_avail": 9 * gib, "size": 3, "min_size": 2,
         "pg_num": 64, "read_bytes_sec": 0, "write_bytes_sec": 1 << 20},
        {"name": "vms-fast", "id": 2, "stored": 7 * gib, "objects": 1800,
         "percent_used": 0.78, "max_avail": 2 * gib, "size": 3, "min_size": 2,
         "pg_num": 128, "read_bytes_sec": 25 << 20, "write_bytes_sec": 3 << 20},
        {"name": "backup", "id": 3, "stored": 19 * gib, "objects": 5000,
         "percent_used": 0.93, "max_avail": gib // 2, "size": 2, "min_size": 1,
         "pg_num": 32, "read_bytes_sec": 0, "write_bytes_sec": 0},
    ]
    osds = [{"id": i, "host": f"hv{i % 3 + 1}", "up": i != 4, "in_cluster": i != 4,
             "weight": 0.0098, "reweight": 1.0 if i != 4 else 0.0,
             "utilization": 35.0 + 9 * i, "pgs": 70 + i, "kb": 10 << 20,
             "kb_used": (35 + 9 * i) * (10 << 20) // 100} for i in range(6)]
    status = {**layout.STORAGE_STATUS_FIELDS, "primary": "hv1", "health": "HEALTH_WARN",
              "health_checks": {"OSD_DOWN": "1 osds down"}, "flags": ["noout"],
              "usage": {"total_bytes": 60 * gib, "total_used_raw_bytes": 27 * gib,
                        "total_avail_bytes": 33 * gib, "num_osds": 6},
              "osds": osds, "pools": pools, "updated_at": 1_700_000_000.0}
    client.zk.create(layout.STORAGE_STATUS, layout.encode(status), makepath=True)
    volumes = [("rbd", "web1-disk0", 10 * gib, 3 * gib, "", ["base"]),
               ("rbd", "db1-disk0", 40 * gib, -1, "", []),
               ("rbd", "web2-disk0", 10 * gib, 512 << 20, "rbd/web1-disk0@base", []),
               ("vms-fast", "cache1-disk0", 20 * gib, 7 * gib, "", ["daily", "weekly"])]
    for pool, name, size, used, parent, snaps in volumes:
        record = {"pool": pool, "name": name, "size": size, "used": used, "parent": parent,
                  "snapshots": [{"name": s, "size": size, "timestamp": 1_700_000_000.0}
                                for s in snaps]}
        client.zk.create(layout.volume_path(pool, name), layout.encode(record),
                         makepath=True)
