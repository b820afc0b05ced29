"""The dashboard's first complete picture of a big cluster: 100 nodes, 5,000 VMs.

Starts its own ZooKeeper (loopback, temp dir), writes node records as agents do and
defines VMs through `ClusterClient.define_vm`, then measures, in a fresh process each
time (median of 3), how long `ClusterStore(zk).start()` takes until `snapshot()` holds
every node and VM, and how much the store adds to the process's RSS.

    .venv/bin/python benchmarks/big_cluster.py [--nodes 100] [--vms 5000]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

from pvc_tui.cluster import ClusterClient, ClusterStore, layout
from pvc_tui.sandbox.zookeeper import start_zookeeper, stop_zookeeper

DEFINE_THREADS = 8


def node_name(i: int) -> str:
    return f"hv{i:03d}"


def vm_xml(name: str, memory_mib: int = 512, vcpus: int = 1) -> str:
    return (f"<domain type='test'><name>{name}</name><memory unit='MiB'>{memory_mib}"
            f"</memory><vcpu>{vcpus}</vcpu><os><type>hvm</type></os></domain>")


def populate(client: ClusterClient, nodes: int = 100, vms: int = 5000) -> None:
    """Write `nodes` live node records (as their agents would) and define `vms` VMs
    through `client.define_vm`, an equal share on each node. The liveness znodes are
    ephemeral: they last as long as `client`'s session."""
    per_node = -(-vms // max(nodes, 1))

    def define(i: int) -> None:
        client.define_vm(vm_xml(f"vm{i:04d}"), node_name(i // per_node))

    # define_vm reads every node's record (a UUID may still be defined elsewhere): ~2
    # round trips per node. So each node's VMs are defined right after it registers
    # (half the reads of defining onto 100 nodes), on a few threads sharing kazoo's one
    # connection to overlap the round trips.
    with ThreadPoolExecutor(DEFINE_THREADS) as pool:
        for n in range(nodes):
            name = node_name(n)
            record = layout.new_node_record(
                name=name, daemon_state=layout.DaemonState.RUN.value,
                domain_state=layout.DomainState.READY.value, agent_version="0.1.0",
                libvirt_uri="qemu:///system", console_log_dir="/var/log/libvirt/qemu",
                cpu_count=64, load=1.5, mem_total_mib=512 * 1024, mem_used_mib=96 * 1024,
                mem_free_mib=416 * 1024, mem_allocated_mib=per_node * 512,
                vcpus_allocated=per_node, vm_count=per_node, keepalive_at=time.time(),
                migration_uri=f"qemu+tcp://10.0.0.{n + 1}/system",
                migration_address=f"tcp://10.0.0.{n + 1}")
            client.zk.create(layout.node_path(name), layout.encode(record))
            client.zk.create(layout.node_alive_path(name),
                             layout.alive_data(name, 1000 + n), ephemeral=True)
            share = range(n * per_node, min((n + 1) * per_node, vms))
            for future in [pool.submit(define, i) for i in share]:
                future.result()


def measure_once(hosts: str, nodes: int, vms: int) -> dict[str, float]:
    """One fresh client and store: seconds until complete, and the store's RSS in MiB."""
    proc = psutil.Process()
    client = ClusterClient.connect(hosts)
    gc.collect()
    rss_before = proc.memory_info().rss
    began = time.perf_counter()
    store = ClusterStore(client.zk)
    store.start()
    snap = store.snapshot()
    seconds = time.perf_counter() - began
    if len(snap.nodes) != nodes or len(snap.vms) != vms:
        raise SystemExit(f"incomplete snapshot: {len(snap.nodes)} nodes, {len(snap.vms)} VMs")
    gc.collect()
    rss_mib = (proc.memory_info().rss - rss_before) / 2**20
    store.stop()
    client.close()
    return {"seconds": seconds, "rss_mib": rss_mib}


def measure(hosts: str, nodes: int, vms: int, runs: int = 3) -> list[dict[str, float]]:
    """`runs` measurements, each in a fresh interpreter (clean RSS, cold caches)."""
    results = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, __file__, "--measure", hosts, "--nodes", str(nodes),
             "--vms", str(vms)], check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--vms", type=int, default=5000)
    parser.add_argument("--hosts", help="measure this already-populated cluster instead")
    parser.add_argument("--measure", metavar="HOSTS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure_once(args.measure, args.nodes, args.vms)))
        return
    if args.hosts:
        report(measure(args.hosts, args.nodes, args.vms))
        return
    with tempfile.TemporaryDirectory(prefix="pvc-big-") as work:
        server = start_zookeeper(Path(work) / "zk", fast_unsafe=True)
        try:
            with ClusterClient.connect(server.address) as client:
                began = time.perf_counter()
                populate(client, args.nodes, args.vms)
                populate_s = time.perf_counter() - began
                print(f"populate: {args.nodes} nodes, {args.vms} VMs in {populate_s:.1f} s "
                      f"({args.vms / populate_s:.0f} defines/s, {DEFINE_THREADS} threads)",
                      flush=True)
                results = measure(server.address, args.nodes, args.vms)
        finally:
            stop_zookeeper(server)
    report(results)


def report(results: list[dict[str, float]]) -> None:
    """Print the medians."""
    seconds = [r["seconds"] for r in results]
    rss = [r["rss_mib"] for r in results]
    print(f"store start() to complete snapshot: median {statistics.median(seconds):.3f} s "
          f"(runs: {', '.join(f'{s:.3f}' for s in seconds)})")
    print(f"store RSS delta: median {statistics.median(rss):.1f} MiB "
          f"(runs: {', '.join(f'{r:.1f}' for r in rss)})")


if __name__ == "__main__":
    main()
