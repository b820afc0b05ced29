"""Storage request round trips, and the lag from a write to the dashboard's pool stats.

Starts a real ZooKeeper, a tiny real Ceph (1 mon, 1 mgr, 1 memstore OSD) and one real
agent (the storage primary), then measures from a client in this process:

- round trip (submit to result) of `volume add` and of `pool list`, `volume list` and
  `status`, one request at a time;
- the lag from a 4 MiB write through librbd to the moment the dashboard's data (a
  ClusterStore, the dashboard's own source) shows the pool's stored bytes grown;
- failover: a second agent stands by, the primary is SIGKILLed, and we time until the
  other publishes and until a request succeeds again.

    .venv/bin/python benchmarks/bench_storage.py [--requests 200] [--writes 5]
        [--keepalive 5]
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pvc_tui.cluster import ClusterClient, ClusterStore, StoreChange, layout
from pvc_tui.cluster.connection import wait_on_znode
from pvc_tui.sandbox.ceph import start_ceph, stop_ceph
from pvc_tui.sandbox.demo import TEST_NODE_XML
from pvc_tui.sandbox.processes import spawn, terminate
from pvc_tui.sandbox.zookeeper import start_zookeeper, stop_zookeeper


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def report(what: str, seconds: list[float], p50_target: float | None = None,
           p99_target: float | None = None) -> None:
    ms = [s * 1000 for s in seconds]
    line = (f"{what:<28} n={len(ms):<4} p50 {pct(ms, 50):7.1f} ms  p99 {pct(ms, 99):7.1f} ms"
            f"  max {max(ms):7.1f} ms  mean {statistics.fmean(ms):7.1f} ms")
    if p50_target is not None and p99_target is not None:
        ok = pct(ms, 50) <= p50_target and pct(ms, 99) <= p99_target
        line += f"  (targets {p50_target:g}/{p99_target:g} ms: {'met' if ok else 'MISSED'})"
    print(line, flush=True)


def timed(call: Callable[[], Any], count: int) -> list[float]:
    out = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        out.append(time.perf_counter() - started)
    return out


def write_lag(client: ClusterClient, conf: Path, writes: int) -> list[float]:
    """Seconds from a librbd write returning to the store's pool stats showing it."""
    import rados
    import rbd

    store = ClusterStore(client.zk)
    changed = threading.Event()

    def on_change(change: StoreChange) -> None:
        if change.kind == "storage":
            changed.set()

    store.subscribe(on_change)
    store.start()

    def stored() -> int:
        status = store.snapshot().storage
        pool = status.pool("rbd") if status else None
        return pool.stored if pool else 0

    lags = []
    cluster = rados.Rados(conffile=str(conf))
    cluster.connect(timeout=10)
    try:
        with cluster.open_ioctx("rbd") as ioctx:
            rbd.RBD().create(ioctx, "lag-probe", 1 << 30)
            with rbd.Image(ioctx, "lag-probe") as image:
                for i in range(writes):
                    before = stored()
                    image.write(b"z" * (4 << 20), i * (4 << 20))
                    image.flush()
                    written = time.monotonic()
                    while stored() < before + (4 << 20):
                        changed.clear()
                        if not changed.wait(60):
                            raise SystemExit("the write never showed in the pool stats")
                    lags.append(time.monotonic() - written)
    finally:
        cluster.shutdown()
        store.stop()
    return lags


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--writes", type=int, default=5)
    parser.add_argument("--keepalive", type=float, default=5.0,
                        help="the agent's keepalive interval (its publishing period)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
        base = Path(tmp)
        zk = start_zookeeper(base / "zk", fast_unsafe=True)
        ceph = start_ceph(base / "ceph", osds=1)
        agent = None
        try:
            client = ClusterClient.connect(zk.address)
            xml = base / "hv1.xml"
            xml.write_text(TEST_NODE_XML.format(cpus=8, memory_kib=16 * 1024 * 1024))
            agent, _ = spawn([sys.executable, "-m", "node_agent", "--name", "hv1", "--zk",
                              zk.address, "--libvirt-uri", f"test://{xml}",
                              "--console-log-dir", str(base), "--ceph-conf", str(ceph.conf),
                              "--keepalive-interval", str(args.keepalive)],
                             base / "agent.log")
            wait_on_znode(client.zk, layout.STORAGE_STATUS, lambda d, s: bool(d) or None,
                          60, lambda: "no storage primary published")
            storage = client.storage
            storage.pools.list()  # warm: the primary's first request
            names = iter(range(args.requests))
            print(f"tiny Ceph (1 OSD, memstore), 1 agent, keepalive {args.keepalive:g} s; "
                  "one request at a time", flush=True)
            report("volume add (16 MiB)", timed(
                lambda: storage.volumes.add("rbd", f"bench{next(names)}", 16 << 20),
                args.requests), 100, 300)
            report("pool list", timed(storage.pools.list, args.requests), 100, 300)
            report(f"volume list ({args.requests} volumes)",
                   timed(lambda: storage.volumes.list("rbd"), 50))
            report("status", timed(storage.status, args.requests))
            report("osd list", timed(storage.osds.list, args.requests))
            lags = write_lag(client, ceph.conf, args.writes)
            print(f"write -> pool stats in the dashboard's data: n={len(lags)} "
                  f"median {statistics.median(lags):.2f} s, max {max(lags):.2f} s "
                  f"(mgr stats period, then the primary's {args.keepalive:g} s publishing)",
                  flush=True)
            standby, _ = spawn([sys.executable, "-m", "node_agent", "--name", "hv2", "--zk",
                                zk.address, "--libvirt-uri", f"test://{xml}",
                                "--console-log-dir", str(base), "--ceph-conf",
                                str(ceph.conf), "--keepalive-interval", str(args.keepalive)],
                               base / "agent2.log")
            wait_on_znode(client.zk, layout.node_alive_path("hv2"), lambda d, s: True, 60,
                          lambda: "the standby agent never started")
            time.sleep(1.0)  # measurement setup: its storage session connects meanwhile
            os.kill(agent.pid, signal.SIGKILL)
            killed = time.monotonic()
            wait_on_znode(client.zk, layout.STORAGE_STATUS,
                          lambda d, s: True if d and b'"primary":"hv2"' in d else None, 60,
                          lambda: "the standby never took over")
            took_over = time.monotonic() - killed
            storage.claim_timeout = 30
            storage.volumes.add("rbd", "after-failover", 16 << 20)
            served = time.monotonic() - killed
            print(f"failover: primary SIGKILLed -> standby publishing {took_over:.2f} s, "
                  f"-> next request served {served:.2f} s (keepalive {args.keepalive:g} s)",
                  flush=True)
            terminate([standby])
            client.close()
        finally:
            if agent is not None:
                terminate([agent])
            stop_ceph(ceph)
            stop_zookeeper(zk)
    return 0


if __name__ == "__main__":
    sys.exit(main())
