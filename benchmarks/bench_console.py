"""Console figures: latency to `vm log --follow`, ZooKeeper bytes, agent cost.

1. Latency from a line appended to a guest's log file to that line printed by
   `pvc-tui vm log --follow` (a real CLI process): 1 VM, then 100 VMs on one agent each
   writing 20 lines/s (the followed VM is one of them).
2. ZooKeeper bytes written per second for one VM printing 50 lines/s of 80 characters,
   against rewriting the whole 1000-line buffer on every update at the same rate.
3. Agent CPU (percent of one core) and RSS with 100 logging VMs.

    .venv/bin/python benchmarks/bench_console.py [--seconds 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from pvc_tui.cluster import ClusterClient, console
from pvc_tui.sandbox.demo import TEST_NODE_XML
from pvc_tui.sandbox.processes import spawn, terminate
from pvc_tui.sandbox.zookeeper import start_zookeeper, stop_zookeeper

LINE_CHARS = 80


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def line(vm: int, n: int) -> bytes:
    head = f"{time.time():.6f} vm{vm:03d} {n:07d} "
    return (head + "x" * (LINE_CHARS - len(head))).encode() + b"\n"


def run(vms: int, rate: float, seconds: float, work: Path) -> None:
    server = start_zookeeper(work / "zk")
    logs = work / "console"
    logs.mkdir()
    xml = work / "hv1.xml"
    xml.write_text(TEST_NODE_XML.format(cpus=64, memory_kib=512 * 1024 * 1024))
    agent, _ = spawn([sys.executable, "-m", "node_agent", "--name", "hv1", "--zk",
                      server.address, "--libvirt-uri", f"test://{xml}", "--console-log-dir",
                      str(logs)], work / "agent.log")
    follower = None
    try:
        client = ClusterClient.connect(server.address)
        while not client.zk.exists("/pvc/nodes/hv1/alive"):
            time.sleep(0.05)
        for i in range(vms):
            client.define_vm(f"<domain type='test'><name>vm{i:03d}</name><memory unit='MiB'>"
                             "64</memory><os><type>hvm</type></os></domain>", "hv1",
                             start=True)
        for i in range(vms):
            client.start_vm(f"vm{i:03d}", wait=True, timeout=60)
        files = [(logs / f"vm{i:03d}.log").open("ab", buffering=0) for i in range(vms)]
        for f in files:
            f.write(b"hello\n")
        time.sleep(2)
        follower = subprocess.Popen(
            [sys.executable, "-m", "pvc_tui.cli.main", "--zk", server.address, "vm", "log",
             "vm000", "--follow", "--lines", "1"], stdout=subprocess.PIPE, text=True)
        latencies: list[float] = []

        def read() -> None:
            assert follower is not None and follower.stdout is not None
            for text in follower.stdout:
                parts = text.split()
                if len(parts) >= 2 and parts[1] == "vm000":
                    latencies.append(time.time() - float(parts[0]))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        time.sleep(1)
        proc = psutil.Process(agent.pid)
        cpu0, began = sum(proc.cpu_times()[:2]), time.monotonic()
        n = 0
        while time.monotonic() - began < seconds:
            tick = time.monotonic()
            for vm, f in enumerate(files):
                f.write(line(vm, n))
            n += 1
            time.sleep(max(0.0, 1 / rate - (time.monotonic() - tick)))
        elapsed = time.monotonic() - began
        cpu = 100 * (sum(proc.cpu_times()[:2]) - cpu0) / elapsed
        rss = proc.memory_info().rss / 2**20
        time.sleep(1)
        ms = [x * 1000 for x in latencies]
        print(f"{vms:3d} VM(s) x {rate:g} lines/s for {elapsed:.0f} s: line -> `vm log "
              f"--follow` p50 {pct(ms, 0.5):.0f} ms, p99 {pct(ms, 0.99):.0f} ms "
              f"({len(ms)} lines); agent CPU {cpu:.1f} % of one core, RSS {rss:.0f} MiB")
        client.close()
    finally:
        if follower is not None:
            follower.terminate()
            follower.wait(timeout=5)
        terminate([agent])
        stop_zookeeper(server)


def bytes_per_second(seconds: float, work: Path) -> None:
    """One VM at 50 lines/s: the agent's ConsoleManager, in this process, counts bytes."""
    from node_agent.console import ConsoleManager, TailSpec

    server = start_zookeeper(work / "zk-bytes")
    try:
        client = ClusterClient.connect(server.address)
        manager = ConsoleManager(client.zk, "hv1", max_lines=1000, interval=0.5,
                                 publish_interval=0.05)
        manager.start()
        path = work / "talker.log"
        path.write_bytes(b"")
        uuid = "00000000-0000-4000-8000-0000000000aa"
        manager.sync({uuid: TailSpec("talker", path, instance=1)})
        with path.open("ab", buffering=0) as f:
            for n in range(1200):  # fill the 1000-line buffer first
                f.write(line(0, n))
            time.sleep(1)
            start_bytes, began = manager.bytes_published, time.monotonic()
            meta0 = console.read_meta(client, uuid)
            n = 0
            while time.monotonic() - began < seconds:
                f.write(line(0, n))
                n += 1
                time.sleep(0.02)
            elapsed = time.monotonic() - began
        time.sleep(0.5)
        ours = (manager.bytes_published - start_bytes) / elapsed
        meta1 = console.read_meta(client, uuid)
        assert meta0 is not None and meta1 is not None
        printed = n * (LINE_CHARS + 1) / elapsed
        updates = elapsed / 0.05  # the same publish rate, whole buffer each time
        rewrite = 1000 * (LINE_CHARS + 3) * updates / elapsed
        print(f"1 VM printing {n / elapsed:.0f} lines/s of {LINE_CHARS} chars "
              f"({printed / 1024:.1f} KiB/s): ZooKeeper writes {ours / 1024:.1f} KiB/s; "
              f"rewriting the 1000-line buffer per update: {rewrite / 1024:.0f} KiB/s "
              f"({rewrite / ours:.0f}x more)")
        manager.stop()
        client.close()
    finally:
        stop_zookeeper(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    for vms, rate in ((1, 20.0), (100, 20.0)):
        work = Path(tempfile.mkdtemp(prefix="bench-con-"))
        try:
            run(vms, rate, args.seconds, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix="bench-con-"))
    try:
        bytes_per_second(args.seconds / 2, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
