"""Fault recovery: how long until the cluster works again.

Real ZooKeeper servers and real agents (libvirt's test driver, as in the tests):

- a node loses power (its agent SIGKILLed; its guests die with it), `recovery = "fence"`
  with a fence command that succeeds at once: killed -> declared dead -> fenced -> every
  one of its VMs running on the other node;
- the leader of a 3-server ensemble killed, 3 times, under a library client reading in a
  loop: the longest single read, reads failed, and until every agent's keepalive is
  written again;
- all of ZooKeeper down for --outage seconds, then back: until the dashboard's data (a
  ClusterStore) is live again, and until a console line printed during the outage is
  readable.

    .venv/bin/python benchmarks/bench_faults.py [--vms 10] [--keepalive 1]
        [--fence-intervals 6] [--kills 3] [--outage 10] [--outage-runs 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from pvc_tui.cluster import ClusterClient, ClusterStore, StoreChange, console, layout
from pvc_tui.cluster.connection import ensure_schema, wait_on_znode
from pvc_tui.sandbox.demo import TEST_NODE_XML
from pvc_tui.sandbox.processes import ProcessRef, spawn, terminate
from pvc_tui.sandbox.zookeeper import (
    start_ensemble,
    start_zookeeper,
    stop_zookeeper,
)


def vm_xml(name: str) -> str:
    return (f"<domain type='test'><name>{name}</name><memory unit='MiB'>256</memory>"
            "<vcpu>1</vcpu><os><type>hvm</type></os></domain>")


class Agents:
    """Agent processes on test-driver hypervisors under one directory."""

    def __init__(self, base: Path, hosts: str, *extra: str) -> None:
        self.base, self.hosts, self.extra = base, hosts, extra
        self.refs: dict[str, ProcessRef] = {}

    def start(self, name: str) -> None:
        node_dir = self.base / name
        node_dir.mkdir(parents=True, exist_ok=True)
        xml = node_dir / "hypervisor.xml"
        xml.write_text(TEST_NODE_XML.format(cpus=8, memory_kib=16 * 1024 * 1024))
        self.refs[name], _ = spawn(
            [sys.executable, "-m", "node_agent", "--name", name, "--zk", self.hosts,
             "--libvirt-uri", f"test://{xml}", "--console-log-dir", str(node_dir),
             "--shutdown-timeout", "3", *self.extra], node_dir / "agent.log")

    def stop(self) -> None:
        terminate(list(self.refs.values()), timeout=10)


def wait_running(client: ClusterClient, name: str, node: str, timeout: float = 60) -> None:
    def check(data: bytes | None, stat: Any) -> bool | None:
        record = layout.decode(data, layout.VM_FIELDS) if data else None
        ok = record and record["node"] == node and \
            record["runtime"].get("power_state") == "running" and \
            record["runtime"].get("node") == node
        return True if ok else None

    wait_on_znode(client.zk, layout.vm_path(client.get_vm(name).uuid), check, timeout,
                  lambda: f"{name} never ran on {node}")


def wait_alive(client: ClusterClient, node: str, after: float = 0.0,
               timeout: float = 60) -> None:
    """Until `node`'s agent is up and has written a keepalive later than `after`."""
    def check(data: bytes | None, stat: Any) -> bool | None:
        record = layout.decode(data, layout.NODE_FIELDS) if data else None
        return True if record and record["keepalive_at"] > after else None

    wait_on_znode(client.zk, layout.node_path(node), check, timeout,
                  lambda: f"{node} wrote no keepalive")


def node_death(base: Path, vms: int, keepalive: float, intervals: int) -> None:
    zk = start_zookeeper(base / "zk", fast_unsafe=True)
    agents = Agents(base, zk.address, "--keepalive-interval", f"{keepalive:g}",
                    "--fence-intervals", str(intervals), "--recovery", "fence",
                    "--fence-command", "/bin/true", "--fence-command", "{node}")
    try:
        client = ClusterClient.connect(zk.address)
        ensure_schema(client.zk)
        for name in ("hv1", "hv2"):
            agents.start(name)
            wait_alive(client, name)
        names = [f"vm{i:02d}" for i in range(vms)]
        for name in names:
            client.define_vm(vm_xml(name), "hv1", start=True)
        for name in names:
            wait_running(client, name, "hv1")
        os.kill(agents.refs["hv1"].pid, signal.SIGKILL)
        killed = time.monotonic()
        seen: dict[str, float] = {}

        def fence(data: bytes | None, stat: Any) -> bool | None:
            state = layout.decode(data, layout.NODE_FIELDS)["fence"].get("state") \
                if data else None
            if state and state not in seen:
                seen[state] = time.monotonic() - killed
            return True if state == "recovered" else None

        wait_on_znode(client.zk, layout.node_path("hv1"), fence, 120,
                      lambda: f"hv1 never recovered: {seen}")
        for name in names:
            wait_running(client, name, "hv2")
        running = time.monotonic() - killed
        phases = ", ".join(f"{state} {at:.2f} s" for state, at in seen.items())
        print(f"node SIGKILLed (keepalive {keepalive:g} s x {intervals} intervals, fence "
              f"command /bin/true): {phases}; all {vms} VMs running on hv2 {running:.2f} s",
              flush=True)
        client.close()
    finally:
        agents.stop()
        stop_zookeeper(zk)


def leader_kills(base: Path, kills: int, keepalive: float) -> None:
    ensemble = start_ensemble(base / "ens", 3, fast_unsafe=True)
    hosts = ",".join(s.address for s in ensemble.servers)
    agents = Agents(base, hosts, "--keepalive-interval", f"{keepalive:g}")
    stop = threading.Event()
    longest, reads, failed = [0.0], [0], [0]
    try:
        client = ClusterClient.connect(hosts, timeout=10)
        ensure_schema(client.zk)
        for name in ("hv1", "hv2", "hv3"):
            agents.start(name)
            wait_alive(client, name)

        def read_loop() -> None:
            while not stop.is_set():
                began = time.monotonic()
                try:
                    client.list_nodes()
                    reads[0] += 1
                except Exception:  # counted: the figure is how many
                    failed[0] += 1
                longest[0] = max(longest[0], time.monotonic() - began)

        reader = threading.Thread(target=read_loop, daemon=True)
        reader.start()
        back: list[float] = []
        for _ in range(kills):
            ensemble.wait_healthy()
            leader = ensemble.leader()
            assert leader is not None
            time.sleep(1.0)
            stop_zookeeper(leader)
            killed_wall, killed = time.time(), time.monotonic()
            for name in ("hv1", "hv2", "hv3"):
                wait_alive(client, name, after=killed_wall)
            back.append(time.monotonic() - killed)
            ensemble = ensemble.restarted(leader)
        stop.set()
        reader.join(timeout=20)
        print(f"ZooKeeper leader killed x{kills} (3 servers): reads {reads[0]}, failed "
              f"{failed[0]}, longest read {longest[0] * 1000:.0f} ms; every agent's keepalive "
              f"written again after {', '.join(f'{b:.2f}' for b in back)} s", flush=True)
        client.close()
    finally:
        stop.set()
        agents.stop()
        for server in ensemble.servers:
            stop_zookeeper(server)


def outage(base: Path, seconds: float, keepalive: float) -> tuple[float, float]:
    zk = start_zookeeper(base / "zk-out", fast_unsafe=True)
    agents = Agents(base / "out", zk.address, "--keepalive-interval", f"{keepalive:g}")
    (base / "out").mkdir()
    try:
        client = ClusterClient.connect(zk.address)
        ensure_schema(client.zk)
        agents.start("hv1")
        wait_alive(client, "hv1")
        client.define_vm(vm_xml("web1"), "hv1", start=True)
        wait_running(client, "web1", "hv1")
        store_zk = ClusterClient.connect(zk.address)
        store = ClusterStore(store_zk.zk)
        live = threading.Event()

        def on_change(change: StoreChange) -> None:
            if change.kind == "connection" and change.new == "connected":
                live.set()

        store.subscribe(on_change)
        store.start()
        stop_zookeeper(zk)
        time.sleep(1.0)
        with (base / "out" / "hv1" / "web1.log").open("ab") as log:
            log.write(b"printed during the outage\n")
        time.sleep(max(0.0, seconds - 1.0))
        live.clear()
        zk = start_zookeeper(base / "zk-out", port=zk.port, fast_unsafe=True)
        served = time.monotonic()
        live.wait(60)
        store_back = time.monotonic() - served
        while True:
            lines = (console.tail(client, "web1") or ([], ""))[0]
            if any(line.text == "printed during the outage" for line in lines):
                break
            time.sleep(0.02)
        line_back = time.monotonic() - served
        store.stop()
        store_zk.close()
        client.close()
        return store_back, line_back
    finally:
        agents.stop()
        stop_zookeeper(zk)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vms", type=int, default=10)
    parser.add_argument("--keepalive", type=float, default=1.0)
    parser.add_argument("--fence-intervals", type=int, default=6)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--outage", type=float, default=10.0)
    parser.add_argument("--outage-runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        base = Path(tmp)
        node_death(base / "death", args.vms, args.keepalive, args.fence_intervals)
        leader_kills(base / "leader", args.kills, args.keepalive)
        runs = [outage(base / f"outage{i}", args.outage, args.keepalive)
                for i in range(args.outage_runs)]
        for what, values in (("the dashboard's data live again", [r[0] for r in runs]),
                             ("a line printed meanwhile readable", [r[1] for r in runs])):
            print(f"ZooKeeper down {args.outage:g} s, then back: {what} median "
                  f"{statistics.median(values):.2f} s (min {min(values):.2f}, max "
                  f"{max(values):.2f}, n={len(values)}) after the server answers", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
