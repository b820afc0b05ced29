"""Migration and flush figures.

1. Orchestration overhead on the test driver (no libvirt migration cost at all): from
   the library call to the target agent reporting the VM running, over N migrations.
2. Flush of 20 VMs (test driver): default concurrency against concurrency 1.
3. With real QEMU guests (qemu driver sandbox): the whole `pvc-tui vm migrate --wait`
   as the CLI sees it against libvirt's own migrateToURI3 time measured by the source
   agent in the same run; and a flush of 6 real guests, default concurrency against 1.

    .venv/bin/python benchmarks/bench_migration.py [--migrations 50] [--skip-qemu]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pvc_tui.cluster import ClusterClient
from pvc_tui.sandbox.demo import TEST_NODE_XML
from pvc_tui.sandbox.processes import ProcessRef, spawn, terminate
from pvc_tui.sandbox.zookeeper import start_zookeeper, stop_zookeeper

LIVE_TOOK = re.compile(r"VM (\S+): live migration to (\S+) took ([0-9.]+) s")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def test_driver_cluster(work: Path, nodes: int) -> tuple[str, list[ProcessRef], object]:
    server = start_zookeeper(work / "zk", fast_unsafe=False)
    refs = []
    for i in range(1, nodes + 1):
        xml = work / f"hv{i}.xml"
        xml.write_text(TEST_NODE_XML.format(cpus=64, memory_kib=256 * 1024 * 1024))
        ref, _ = spawn([sys.executable, "-m", "node_agent", "--name", f"hv{i}", "--zk",
                        server.address, "--libvirt-uri", f"test://{xml}"],
                       work / f"hv{i}.log")
        refs.append(ref)
    return server.address, refs, server


def wait_nodes(client: ClusterClient, count: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        nodes = client.list_nodes()
        if len(nodes) == count and all(n.daemon_state == "run" for n in nodes):
            return
        time.sleep(0.05)
    raise RuntimeError("agents did not come up")


def bench_test_driver(migrations: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-mig-"))
    address, refs, server = test_driver_cluster(work, 3)
    try:
        client = ClusterClient.connect(address)
        wait_nodes(client, 3)
        client.define_vm("<domain type='test'><name>mover</name><memory unit='MiB'>512"
                         "</memory><os><type>hvm</type></os></domain>", "hv1", start=True)
        client.start_vm("mover", wait=True, timeout=30)
        times = []
        for i in range(migrations):
            began = time.perf_counter()
            if i % 2 == 0:
                client.migrate_vm("mover", target="hv2" if i % 4 == 0 else "hv3",
                                  wait=True, timeout=30)
            else:
                client.unmigrate_vm("mover", wait=True, timeout=30)
            times.append(time.perf_counter() - began)
        ms = [t * 1000 for t in times]
        print(f"test driver, {migrations} migrations (library call -> running on target "
              f"reported): p50 {pct(ms, 0.5):.0f} ms, p99 {pct(ms, 0.99):.0f} ms, "
              f"max {max(ms):.0f} ms")

        for i in range(20):
            client.define_vm(f"<domain type='test'><name>f{i:02d}</name><memory unit='MiB'>"
                             "256</memory><os><type>hvm</type></os></domain>", "hv1",
                             start=True)
        for i in range(20):
            client.start_vm(f"f{i:02d}", wait=True, timeout=30)
        walls = {}
        for concurrency in (None, 1):
            began = time.perf_counter()
            client.flush_node("hv1", wait=True, timeout=300, concurrency=concurrency)
            walls[concurrency] = time.perf_counter() - began
            client.ready_node("hv1", wait=True, timeout=300)
        print(f"test driver, flush of 21 VMs: default concurrency (4) {walls[None]:.2f} s, "
              f"concurrency 1 {walls[1]:.2f} s, ratio {walls[1] / walls[None]:.2f}x")
        client.close()
    finally:
        terminate(refs)
        stop_zookeeper(server)  # type: ignore[arg-type]
        shutil.rmtree(work, ignore_errors=True)


def pvc(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PVC_SANDBOX_DIR": str(state_dir)}
    return subprocess.run([sys.executable, "-m", "pvc_tui.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=900, check=True)


def bench_qemu(rounds: int) -> None:
    from pvc_tui.sandbox.demo import demo_vm_xml, load
    from pvc_tui.sandbox.qemu import qemu_unavailable_reason

    if reason := qemu_unavailable_reason():
        print(f"qemu: not measured ({reason})")
        return
    state_dir = Path(tempfile.mkdtemp(prefix="pvc-bm-")) / "s"
    try:
        pvc(state_dir, "demo", "up", "--driver", "qemu", "--nodes", "2", "--no-vms")
        sandbox = load(state_dir)
        assert sandbox is not None
        with ClusterClient.connect(sandbox.zk, credentials=sandbox.operator()) as client:
            for i in range(6):
                name = f"g{i}"
                xml = demo_vm_xml(sandbox, name, sandbox.nodes[0])
                client.define_vm(xml, "hv1", start=True)
            for i in range(6):
                client.start_vm(f"g{i}", wait=True, timeout=120)
        time.sleep(8)  # let the guests finish booting before timing migrations
        agent_logs = [Path(n.node_dir) / "agent.log" for n in sandbox.nodes]
        cli, libvirt_s = [], []
        for i in range(rounds):
            seen = sum(len(LIVE_TOOK.findall(p.read_text())) for p in agent_logs)
            began = time.perf_counter()
            if i % 2 == 0:
                pvc(state_dir, "vm", "migrate", "g0", "--target", "hv2", "--wait")
            else:
                pvc(state_dir, "vm", "unmigrate", "g0", "--wait")
            cli.append(time.perf_counter() - began)
            took = [float(m[2]) for p in agent_logs for m in LIVE_TOOK.findall(p.read_text())]
            assert len(took) == seen + 1, "expected exactly one live migration"
            libvirt_s.append(max(took[seen:]) if len(took) > seen else float("nan"))
        overhead = [(c - lv) * 1000 for c, lv in zip(cli, libvirt_s, strict=True)]
        print(f"qemu, {rounds} live migrations of a 128 MiB guest: CLI `vm migrate --wait` "
              f"median {statistics.median(cli):.2f} s, libvirt migrateToURI3 median "
              f"{statistics.median(libvirt_s):.2f} s, overhead median "
              f"{statistics.median(overhead):.0f} ms (max {max(overhead):.0f} ms; includes "
              "the CLI's own Python start-up)")
        walls = {}
        for concurrency in ("", "1"):
            extra = ["--concurrency", concurrency] if concurrency else []
            began = time.perf_counter()
            pvc(state_dir, "node", "flush", "hv1", "--wait", *extra)
            walls[concurrency] = time.perf_counter() - began
            pvc(state_dir, "node", "ready", "hv1", "--wait")
        print(f"qemu, flush of 6 real guests (live): default concurrency (4) "
              f"{walls['']:.2f} s, concurrency 1 {walls['1']:.2f} s, ratio "
              f"{walls['1'] / walls['']:.2f}x")
    finally:
        subprocess.run([sys.executable, "-m", "pvc_tui.cli.main", "demo", "down"],
                       env={**os.environ, "PVC_SANDBOX_DIR": str(state_dir)},
                       capture_output=True, check=False)
        shutil.rmtree(state_dir.parent, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--migrations", type=int, default=50)
    parser.add_argument("--qemu-rounds", type=int, default=6)
    parser.add_argument("--skip-qemu", action="store_true")
    args = parser.parse_args()
    bench_test_driver(args.migrations)
    if not args.skip_qemu:
        bench_qemu(args.qemu_rounds)


if __name__ == "__main__":
    main()
