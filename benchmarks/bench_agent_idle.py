"""Agent idle cost: CPU and RSS of one pvc-node-agent with N running VMs (test driver).

Starts a real ZooKeeper and one agent process, defines and starts N VMs, lets the agent
settle, then measures its CPU time and RSS over an idle window, and how many ZooKeeper
writes it makes (from the records' modification counters).

    .venv/bin/python benchmarks/bench_agent_idle.py [--vms 50] [--seconds 60]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import psutil

from pvc_tui.cluster import ClusterClient, layout
from pvc_tui.sandbox.demo import TEST_NODE_XML
from pvc_tui.sandbox.processes import spawn, terminate
from pvc_tui.sandbox.zookeeper import start_zookeeper, stop_zookeeper


def total_versions(client: ClusterClient) -> int:
    """Sum of data versions of all node and VM records: one per write."""
    paths = [layout.node_path(n) for n in client.zk.get_children(layout.NODES)]
    paths += [layout.vm_path(u) for u in client.zk.get_children(layout.VMS)]
    return sum(client.zk.exists(p).version for p in paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--keepalive", type=float, default=5.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-agent-"))
    server = start_zookeeper(work / "zk")
    xml = work / "hv1.xml"
    xml.write_text(TEST_NODE_XML.format(cpus=64, memory_kib=512 * 1024 * 1024))
    ref, _ = spawn([sys.executable, "-m", "node_agent", "--name", "hv1", "--zk",
                       server.address, "--libvirt-uri", f"test://{xml}",
                       "--keepalive-interval", str(args.keepalive)], work / "agent.log")
    try:
        client = ClusterClient.connect(server.address)
        while not client.zk.exists(layout.node_alive_path("hv1")):
            time.sleep(0.1)
        began = time.monotonic()
        for i in range(args.vms):
            client.define_vm(
                f"<domain type='test'><name>vm{i:03d}</name><memory unit='MiB'>256</memory>"
                "<vcpu>1</vcpu><os><type>hvm</type></os></domain>", "hv1", start=True)
        for i in range(args.vms):
            client.start_vm(f"vm{i:03d}", wait=True, timeout=120)
        settle = time.monotonic() - began
        time.sleep(2 * args.keepalive)  # let start-up work finish
        agent = psutil.Process(ref.pid)
        cpu0, writes0, t0 = sum(agent.cpu_times()[:2]), total_versions(client), time.monotonic()
        time.sleep(args.seconds)
        cpu1, writes1, t1 = sum(agent.cpu_times()[:2]), total_versions(client), time.monotonic()
        rss = agent.memory_info().rss / 2**20
        elapsed = t1 - t0
        print(f"agent idle with {args.vms} running VMs (test driver, keepalive "
              f"{args.keepalive:g} s, {elapsed:.0f} s window)")
        print(f"  define+start {args.vms} VMs (all running): {settle:.2f} s")
        print(f"  CPU: {100 * (cpu1 - cpu0) / elapsed:.2f} % of one core")
        print(f"  RSS: {rss:.1f} MiB")
        print(f"  ZooKeeper record writes: {(writes1 - writes0) / elapsed:.2f} /s")
        client.close()
    finally:
        terminate([ref])
        stop_zookeeper(server)


if __name__ == "__main__":
    main()
