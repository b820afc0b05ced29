"""Dashboard figures on a big cluster: 100 nodes, 5,000 VMs, and one busy console.

Starts its own ZooKeeper (loopback, temp dir) and writes 100 live node records and
5,000 VMs with the library's layout (the records and transaction `define_vm` writes),
then measures:

1. Time to the first complete table: from constructing the Dashboard (headless,
   `run_test(size=(200, 50))`, a fresh interpreter each time, median of 3) to the VM
   table holding every VM and the screen having been refreshed after that.
2. Change -> screen latency: a writer in another process (no GIL shared with the
   dashboard; a thread of the same process with --writer-thread) with its own
   ClusterClient flips `state`
   and writes a unique `failed_reason` on one VM 50 times a second (`update_vm`); every
   write is stamped with time.monotonic() twice: just before its transaction is sent
   (inside `mutate`, after update_vm's reads) and when update_vm returned. A Dashboard
   subclass stamps each (uuid, failed_reason) when `on_cluster_changed` has applied it
   and again after the next screen refresh (`call_after_refresh`). Half of the writes go
   to rows on screen, half to random VMs. Headless idle CPU of that process follows.
3. The real `pvc-tui` binary in tmux (private socket, 200x50, TERM=xterm-256color):
   time until the header shows every VM, then CPU over 10 s of no changes, and RSS.
4. Console lag: a real node agent on libvirt's test driver runs one VM; this script
   appends 2,000 lines/s to its console log file, each line carrying time.time() of
   its write; the headless dashboard follows that console in its pane. Lag = when the
   line was appended to the ConsoleView (and when the screen refreshed after it) minus
   when it was written: the agent's file -> ZooKeeper publish path is included.

Figures are printed with their targets; nothing is asserted. Each phase also says how
much CPU other processes on the machine used meanwhile (concurrent test runs skew the
figures). `--profile` adds cProfile listings of the UI thread during the load and the
change stream; `--only 24` runs just those measurements.

    .venv/bin/python benchmarks/bench_dashboard.py [--nodes 100] [--vms 5000] [--profile]
        [--writer-thread] [--only 1234]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import math
import os
import pstats
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from kazoo.client import KazooClient

from pvc_tui.cluster import ClusterClient, layout
from pvc_tui.cluster.domain_xml import parse_domain_xml
from pvc_tui.cluster.store import ClusterStore, StoreChange
from pvc_tui.sandbox.demo import TEST_NODE_XML
from pvc_tui.sandbox.processes import ProcessRef, is_running, spawn, terminate
from pvc_tui.sandbox.zookeeper import start_zookeeper, stop_zookeeper
from pvc_tui.tui.app import Dashboard
from pvc_tui.tui.console_pane import ConsolePane, ConsoleWake, DisplayItem
from pvc_tui.tui.feed import ChangeFeed, Pending
from pvc_tui.tui.messages import ClusterChanged, Connected

ROOT = Path(__file__).resolve().parent.parent
SIZE = (200, 50)
CONSOLE_CHROOT = "/bench-console"
CONSOLE_VM = "con1"
TAG = "bench "


# ---- figures -----------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of `values`; nan if empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Figure:
    what: str
    value: float
    unit: str
    target: float | None = None  # the figure must be <= target
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        if self.value != self.value:  # nan: not measured
            return "n/a"
        return "ok" if self.value <= self.target else "MISSED"


FIGURES: list[Figure] = []


def figure(what: str, value: float, unit: str, target: float | None = None,
           note: str = "") -> None:
    FIGURES.append(Figure(what, value, unit, target, note))


def print_table() -> None:
    width = max(len(f.what) for f in FIGURES) if FIGURES else 10
    print()
    print(f"{'figure':<{width}}  {'value':>12}  {'target':>12}  verdict  note")
    print(f"{'-' * width}  {'-' * 12}  {'-' * 12}  -------  ----")
    for f in FIGURES:
        places = 0 if f.unit in ("lines", "writes") else 2 if f.unit in ("s", "%") else 1
        value = f"{f.value:.{places}f}"
        target = f"<= {f.target:g} {f.unit}" if f.target is not None else ""
        print(f"{f.what:<{width}}  {value + ' ' + f.unit:>12}  {target:>12}  "
              f"{f.verdict:<7}  {f.note}".rstrip())


def profile_text(profiler: cProfile.Profile, title: str, limit: int = 25) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.strip_dirs()
    out.write(f"\n==== {title}: by own time ====\n")
    stats.sort_stats("tottime").print_stats(limit)
    out.write(f"\n==== {title}: by cumulative time ====\n")
    stats.sort_stats("cumulative").print_stats(limit)
    return out.getvalue()


# ---- the cluster --------------------------------------------------------------------------


def node_name(i: int) -> str:
    return f"hv{i:03d}"


def vm_xml(name: str, memory_mib: int = 512, vcpus: int = 1) -> str:
    return (f"<domain type='test'><name>{name}</name><memory unit='MiB'>{memory_mib}"
            f"</memory><vcpu>{vcpus}</vcpu><os><type>hvm</type></os></domain>")


def populate(client: ClusterClient, nodes: int, vms: int) -> None:
    """`nodes` live node records (as agents write them) and `vms` VMs on them.

    The first VM goes through `client.define_vm`; the rest are the same three-znode
    transaction define_vm commits (name index, record from `layout.new_vm_record`,
    normalised XML from `parse_domain_xml`), pipelined with kazoo's async API. (Calling
    define_vm 5,000 times reads every node record on every define: ~250 s here, which
    is what benchmarks/big_cluster.py's populate costs; this takes a few seconds.)
    Liveness znodes are ephemeral: they last as long as `client`'s session.
    """
    zk = client.zk
    per_node = -(-vms // max(nodes, 1))
    for n in range(nodes):
        name = node_name(n)
        share = max(0, min(per_node, vms - n * per_node))
        record = layout.new_node_record(
            name=name, daemon_state=layout.DaemonState.RUN.value,
            domain_state=layout.DomainState.READY.value, agent_version="0.1.0",
            libvirt_uri="qemu:///system", console_log_dir="/var/log/libvirt/qemu",
            cpu_count=64, load=1.5, mem_total_mib=512 * 1024, mem_used_mib=96 * 1024,
            mem_free_mib=416 * 1024, mem_allocated_mib=share * 512, vcpus_allocated=share,
            vm_count=share, keepalive_at=time.time(),
            migration_uri=f"qemu+tcp://10.0.0.{n + 1}/system",
            migration_address=f"tcp://10.0.0.{n + 1}")
        zk.create(layout.node_path(name), layout.encode(record))
        zk.create(layout.node_alive_path(name), layout.alive_data(name, 1000 + n),
                  ephemeral=True)
    if vms:
        client.define_vm(vm_xml("vm0000"), node_name(0), start=True)
    pending = []
    for i in range(1, vms):
        spec = parse_domain_xml(vm_xml(f"vm{i:04d}", 512 * (1 + i % 4), 1 + i % 8))
        node = node_name(i // per_node)
        running = i % 10 != 0
        record = layout.new_vm_record(
            name=spec.name, uuid=spec.uuid, node=node,
            state=(layout.VMState.START if running else layout.VMState.STOP).value,
            memory_mib=spec.memory_mib, vcpus=spec.vcpus,
            runtime={**layout.VM_RUNTIME_FIELDS, "node": node, "memory_mib": spec.memory_mib,
                     "vcpus": spec.vcpus, "updated_at": time.time(),
                     "power_state": (layout.PowerState.RUNNING if running
                                     else layout.PowerState.SHUTOFF).value})
        tx = zk.transaction()
        tx.create(layout.vm_name_path(spec.name), spec.uuid.encode())
        tx.create(layout.vm_path(spec.uuid), layout.encode(record))
        tx.create(layout.vm_xml_path(spec.uuid), spec.xml.encode())
        pending.append(tx.commit_async())
        if len(pending) >= 500:
            for result in pending:
                check_commit(result.get(timeout=30))
            pending = []
    for result in pending:
        check_commit(result.get(timeout=30))
    if len(zk.get_children(layout.VMS)) != vms or client.get_vm(f"vm{vms - 1:04d}").node \
            != node_name((vms - 1) // per_node):
        raise SystemExit("populate: the cluster does not hold what was written")


def check_commit(results: list[Any]) -> None:
    failure = next((r for r in results if isinstance(r, Exception)), None)
    if failure is not None:
        raise SystemExit(f"populate: a define transaction failed: {failure!r}")


# ---- instrumented dashboards ----------------------------------------------------------------


class TimedFeed(ChangeFeed):
    """The dashboard's feed, noting when each tagged VM change reached it (kazoo thread)
    and what each drain handed to the UI."""

    def __init__(self, wake: Callable[[], Any]) -> None:
        super().__init__(wake)
        self.arrived: dict[tuple[str, str], float] = {}
        self.last: Pending | None = None

    def add(self, change: StoreChange) -> None:
        new = change.new
        if change.kind == "vm" and new is not None and new.failed_reason.startswith(TAG):
            self.arrived.setdefault((change.key, new.failed_reason), time.monotonic())
        super().add(change)

    def drain(self) -> Pending:
        self.last = super().drain()
        return self.last


class BenchDashboard(Dashboard):
    """Stamps the first load and every tagged VM change on its way to the screen.

    Textual calls a handler of every class in the MRO: these call the Dashboard's
    handler themselves and then prevent_default() so it does not run twice."""

    CSS_PATH = str(Path(sys.modules[Dashboard.__module__].__file__ or "").with_name(
        "dashboard.tcss"))  # Textual resolves a relative path against the subclass's file

    def __init__(self, hosts: str) -> None:
        super().__init__(hosts)
        self.feed = TimedFeed(lambda: self.post_message(ClusterChanged()))
        self.console_pane = TimedConsolePane(id="console")
        self.started_at = time.monotonic()
        self.connected_at: float | None = None  # Connected handled (store complete)
        self.painted_at: float | None = None  # the screen refreshed after the first load
        self.rows_at_paint = 0
        # (uuid, failed_reason) -> (handler began, change applied, screen refreshed)
        self.shown: dict[tuple[str, str], list[float]] = {}
        self.batches: list[int] = []  # tagged VM changes per on_cluster_changed
        self.handler_seconds: list[float] = []
        self.profiler: cProfile.Profile | None = None

    def on_connected(self, message: Connected) -> None:
        self.connected_at = time.monotonic()
        super().on_connected(message)
        message.prevent_default()
        self.call_after_refresh(self._first_paint)

    def _first_paint(self) -> None:
        self.painted_at = time.monotonic()
        self.rows_at_paint = self.vm_table.row_count
        if self.profiler is not None:
            self.profiler.disable()

    def on_cluster_changed(self, message: ClusterChanged) -> None:
        began = time.monotonic()
        feed = self.feed
        assert isinstance(feed, TimedFeed)
        feed.last = None
        super().on_cluster_changed(message)
        message.prevent_default()
        pending = feed.last
        if pending is None or not pending.changes:
            return
        applied = time.monotonic()
        self.handler_seconds.append(applied - began)
        keys = [(c.key, c.new.failed_reason) for c in pending.of_kind("vm")
                if c.new is not None and c.new.failed_reason.startswith(TAG)]
        if keys:
            self.batches.append(len(keys))
            for key in keys:
                self.shown[key] = [began, applied, float("nan")]
            self.call_after_refresh(self._painted, keys)

    def _painted(self, keys: list[tuple[str, str]]) -> None:
        now = time.monotonic()
        for key in keys:
            self.shown[key][2] = now


class TimedConsolePane(ConsolePane):
    """Notes when each console line reached the ConsoleView and the screen (wall clock,
    to compare with the time.time() the writer put into the line)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.appended: dict[int, tuple[float, float]] = {}  # seq -> (written, appended)
        self.received: dict[int, float] = {}  # seq -> the follow worker had it (wall clock)
        self.wall_offset = time.time() - time.monotonic()
        self.painted: dict[int, float] = {}  # seq -> screen refreshed
        self.gaps = 0  # lines the pane reported as missed
        self.wakes = 0

    def on_console_wake(self, message: ConsoleWake) -> None:
        drained: list[DisplayItem] = []
        inbox = self._inbox
        real_drain = inbox.drain

        def drain() -> list[DisplayItem]:
            items = real_drain()
            drained.extend(items)
            return items

        inbox.drain = drain  # type: ignore[method-assign]
        try:
            super().on_console_wake(message)
        finally:
            del inbox.drain
        message.prevent_default()
        now = time.time()
        self.wakes += 1
        seqs = []
        for item in drained:
            if item.kind == "marker" and "lines missed" in item.text:
                with contextlib.suppress(ValueError):
                    self.gaps += int(item.text.split()[1])
            for text in item.lines:
                parts = text.split(" ", 2)
                if len(parts) == 3 and parts[1].startswith("L"):
                    with contextlib.suppress(ValueError):
                        seq = int(parts[1][1:])
                        self.appended.setdefault(seq, (float(parts[0]), now))
                        self.received.setdefault(seq, item.at + self.wall_offset)
                        seqs.append(seq)
        if seqs:
            self.call_after_refresh(self._painted, seqs)

    def _painted(self, seqs: list[int]) -> None:
        now = time.time()
        for seq in seqs:
            self.painted.setdefault(seq, now)


async def wait_for(check: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


# ---- 1. time to the first complete table -----------------------------------------------------


STAMPS: dict[str, float] = {}


class TimedClient(ClusterClient):
    @classmethod
    def connect(cls, *args: Any, **kwargs: Any) -> ClusterClient:
        STAMPS["connect"] = time.monotonic()
        try:
            return super().connect(*args, **kwargs)
        finally:
            STAMPS["connected"] = time.monotonic()


class TimedStore(ClusterStore):
    def start(self, *args: Any, **kwargs: Any) -> None:
        STAMPS["store"] = time.monotonic()
        try:
            super().start(*args, **kwargs)
        finally:
            STAMPS["stored"] = time.monotonic()


async def load_once(hosts: str, nodes: int, vms: int, profile: bool) -> dict[str, Any]:
    # time the connect worker's two steps (this interpreter only measures the load)
    app_module = sys.modules[Dashboard.__module__]
    app_module.ClusterClient = TimedClient  # type: ignore[attr-defined]
    app_module.ClusterStore = TimedStore  # type: ignore[attr-defined]
    profiler = cProfile.Profile() if profile else None
    if profiler is not None:
        profiler.enable()
    began = time.monotonic()
    app = BenchDashboard(hosts)
    app.profiler = profiler
    async with app.run_test(size=SIZE):
        await wait_for(lambda: app.painted_at is not None, 60, "the first paint")
        assert app.connected_at is not None and app.loaded_at is not None
        assert app.painted_at is not None
        result: dict[str, Any] = {
            "seconds": app.painted_at - began,
            "to_connected": app.connected_at - began,
            "startup": STAMPS["connect"] - began,
            "connect": STAMPS["store"] - STAMPS["connect"],
            "store_start": STAMPS["stored"] - STAMPS["store"],
            "to_handler": app.connected_at - STAMPS["stored"],
            "connected_to_loaded": app.loaded_at - app.connected_at,
            "loaded_to_painted": app.painted_at - app.loaded_at,
            "rows": app.rows_at_paint,
            "nodes": app.node_table.row_count,
            "complete": app.rows_at_paint == vms and app.node_table.row_count == nodes,
        }
    if profiler is not None:
        result["profile"] = profile_text(profiler, "UI thread, Dashboard() to first paint")
    return result


def measure_load(hosts: str, nodes: int, vms: int, runs: int, profile: bool) -> None:
    results = []
    for run in range(runs):
        argv = [sys.executable, __file__, "--measure-load", hosts, "--nodes", str(nodes),
                "--vms", str(vms)]
        if profile and run == 0:
            argv.append("--profile")
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"the load run failed:\n{done.stderr[-3000:]}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    seconds = [r["seconds"] for r in results]
    med = statistics.median(seconds)
    mid = results[seconds.index(med)]
    print(f"1. first complete table ({vms} VMs, {nodes} nodes, fresh interpreter each run): "
          f"median {med:.3f} s; per run: total = app start-up (Textual, CSS, compose, mount) "
          "+ ClusterClient.connect + ClusterStore.start (worker thread) + -> Connected "
          "handled + tables filled (replace_all) + screen refreshed:", flush=True)
    for r in results:
        print(f"   {r['seconds']:.3f} s = {r['startup']:.3f} + {r['connect']:.3f} + "
              f"{r['store_start']:.3f} + {r['to_handler']:.3f} + "
              f"{r['connected_to_loaded']:.3f} + {r['loaded_to_painted']:.3f}; rows at paint "
              f"{r['rows']}", flush=True)
    if not all(r["complete"] for r in results):
        print("   WARNING: a run painted before the tables were complete", flush=True)
    figure("1. first complete table (median of 3)", med, "s", 2.0,
           f"start-up {mid['startup']:.2f} s, store {mid['store_start']:.2f} s, fill "
           f"{mid['connected_to_loaded']:.2f} s, paint {mid['loaded_to_painted']:.2f} s")
    for r in results:
        if "profile" in r:
            PROFILES.append(r["profile"])


PROFILES: list[str] = []


# ---- 2. change -> screen latency, and headless idle CPU ----------------------------------------


@dataclass
class Writes:
    sent: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    error: str = ""
    seconds: float = 0.0  # how long the writes took (behind schedule if > count / rate)


def write_changes(hosts: str, keys: list[str], rate: float, out: Writes) -> None:
    """update_vm each key in turn at `rate`/s: flip state, unique failed_reason."""
    try:
        with ClusterClient.connect(hosts) as client:
            began = time.monotonic()
            for i, uuid in enumerate(keys):
                delay = began + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                value = f"{TAG}{i}"
                stamp = [0.0]

                def mutate(record: dict[str, Any], value: str = value,
                           stamp: list[float] = stamp) -> None:
                    record["state"] = "stop" if record["state"] == "start" else "start"
                    record["failed_reason"] = value
                    stamp[0] = time.monotonic()  # the transaction is sent right after

                client.update_vm(uuid, mutate)
                out.sent[(uuid, value)] = (stamp[0], time.monotonic())
            out.seconds = time.monotonic() - began
    except Exception as exc:  # reported with the figures
        out.error = f"{type(exc).__name__}: {exc}"


def write_changes_process(hosts: str, keys: list[str], rate: float, out: Writes) -> None:
    """write_changes in another interpreter (no GIL shared with the dashboard); its
    time.monotonic() is the same clock (CLOCK_MONOTONIC is system-wide)."""
    proc = subprocess.Popen([sys.executable, __file__, "--write-changes", hosts, "--rate",
                             str(rate)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        stdout, _ = proc.communicate(json.dumps(keys), timeout=len(keys) / rate + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        out.error = "the writer process did not finish"
        return
    try:
        done = json.loads(stdout)
    except json.JSONDecodeError:
        out.error = f"the writer process exited with {proc.returncode}"
        return
    out.sent = {(u, v): (a, b) for u, v, a, b in done["sent"]}
    out.error, out.seconds = done["error"], done["seconds"]


async def measure_latency(hosts: str, rate: float, seconds: float,
                          idle_seconds: float, profile: bool, in_process: bool) -> None:
    app = BenchDashboard(hosts)
    proc = psutil.Process()
    async with app.run_test(size=SIZE):
        await wait_for(lambda: app.painted_at is not None, 60, "the first paint")
        await asyncio.sleep(1.0)
        table = app.vm_table
        on_screen = list(table._order[:max(1, table.size.height - 3)])
        on_screen = [k for k in on_screen if k is not None][:40]
        everything = list(table.items)
        rng = random.Random(7)
        count = round(rate * seconds)
        keys = [on_screen[(i // 2) % len(on_screen)] if i % 2 == 0 else rng.choice(everything)
                for i in range(count)]
        visible = set(on_screen)
        writes = Writes()
        profiler = cProfile.Profile() if profile else None
        if profiler is not None:
            profiler.enable()
        cpu0, t0 = cpu_seconds(proc), time.monotonic()
        writer = threading.Thread(
            target=write_changes if in_process else write_changes_process,
            args=(hosts, keys, rate, writes), daemon=True)
        writer.start()
        while writer.is_alive():
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # the last changes reach the screen
        busy_cpu = 100 * (cpu_seconds(proc) - cpu0) / (time.monotonic() - t0)
        if profiler is not None:
            profiler.disable()
            PROFILES.append(profile_text(profiler, f"UI thread, {rate:g} VM changes/s"))
        await asyncio.sleep(1.0)
        cpu0, t0 = cpu_seconds(proc), time.monotonic()
        await asyncio.sleep(idle_seconds)
        idle_cpu = 100 * (cpu_seconds(proc) - cpu0) / (time.monotonic() - t0)
        crashes = list(app.crashes)
    feed = app.feed
    assert isinstance(feed, TimedFeed)
    if writes.error:
        print(f"2. the writer failed: {writes.error}", flush=True)
    from_send, from_return, shown_ms = [], [], {True: [], False: []}
    to_store, to_handler, handler, to_paint = [], [], [], []
    missing = 0
    for key, (sent, returned) in writes.sent.items():
        stamps = app.shown.get(key)
        if stamps is None or math.isnan(stamps[2]):
            missing += 1
            continue
        began, applied, painted = stamps
        from_send.append(1000 * (painted - sent))
        from_return.append(1000 * (painted - returned))
        shown_ms[key[0] in visible].append(1000 * (painted - sent))
        if key in feed.arrived:
            to_store.append(1000 * (feed.arrived[key] - sent))
            to_handler.append(1000 * (began - feed.arrived[key]))
        handler.append(1000 * (applied - began))
        to_paint.append(1000 * (painted - applied))
    n = len(writes.sent)
    where = "a thread of this process" if in_process else "another process"
    print(f"2. VM change -> row on screen ({n} update_vm writes from {where} at {rate:g}/s "
          f"for {seconds:g} s, half to on-screen rows; the writes took {writes.seconds:.1f} s, "
          f"{n / writes.seconds if writes.seconds else 0:.1f}/s achieved; {missing} never "
          "shown, e.g. coalesced by the feed):", flush=True)
    print(f"   from just before the write was sent: p50 {pct(from_send, .5):.1f} ms, "
          f"p99 {pct(from_send, .99):.1f} ms, max {max(from_send, default=float('nan')):.1f} ms"
          f"  (on-screen rows p50 {pct(shown_ms[True], .5):.1f} ms, off-screen p50 "
          f"{pct(shown_ms[False], .5):.1f} ms)", flush=True)
    print(f"   from update_vm returned:            p50 {pct(from_return, .5):.1f} ms, "
          f"p99 {pct(from_return, .99):.1f} ms, "
          f"max {max(from_return, default=float('nan')):.1f} ms", flush=True)
    print(f"   where it goes (p50 / p99 ms): send -> store callback "
          f"{pct(to_store, .5):.1f} / {pct(to_store, .99):.1f}, -> UI handler "
          f"{pct(to_handler, .5):.1f} / {pct(to_handler, .99):.1f}, handler "
          f"{pct(handler, .5):.1f} / {pct(handler, .99):.1f}, applied -> screen refreshed "
          f"{pct(to_paint, .5):.1f} / {pct(to_paint, .99):.1f}; "
          f"{statistics.mean(app.batches) if app.batches else 0:.2f} tagged changes per "
          f"batch; process CPU while streaming {busy_cpu:.1f} % of one core", flush=True)
    print(f"   headless dashboard idle (same process, {idle_seconds:g} s, no changes): "
          f"CPU {idle_cpu:.2f} % of one core{'; crashes: ' + str(len(crashes)) if crashes else ''}",
          flush=True)
    if profile:
        print("   (cProfile was on: these latencies are inflated)", flush=True)
    if writes.seconds and n / writes.seconds < 0.9 * rate:
        print(f"   WARNING: the writer fell behind ({n / writes.seconds:.0f}/s of {rate:g}/s): "
              "it only got the GIL between frames, so it writes when the UI is idle and the "
              "latencies above are flattering; without --writer-thread it measures the full rate",
              flush=True)
    figure("2. change -> screen p50 (from send)", pct(from_send, .5), "ms", 50)
    figure("2. change -> screen p99 (from send)", pct(from_send, .99), "ms", 150)
    figure("2. change -> screen max (from send)", max(from_send, default=float("nan")), "ms")
    figure("2. change -> screen p50 (from return)", pct(from_return, .5), "ms", 50)
    figure("2. change -> screen p99 (from return)", pct(from_return, .99), "ms", 150)
    figure("2. changes never shown", missing, "writes", 0, f"of {n} writes")
    figure("3b. headless idle CPU (in-process)", idle_cpu, "%", None,
           "includes the process's kazoo threads")


# ---- 3. the real binary in tmux ------------------------------------------------------------


class Tmux:
    """A private tmux server (its own -L socket), killed at the end."""

    def __init__(self, work: Path) -> None:
        self.socket = f"pvc-bench-{os.getpid()}"
        self.conf = work / "tmux.conf"
        self.conf.write_text("set -g remain-on-exit on\nset -g status off\n")

    def __call__(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, "-f", str(self.conf), *args],
                              check=True, capture_output=True, text=True, timeout=10).stdout

    def kill(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                           timeout=10)
        base = os.environ.get("TMUX_TMPDIR") or "/tmp"  # the server may leave its socket
        with contextlib.suppress(OSError):
            (Path(base) / f"tmux-{os.getuid()}" / self.socket).unlink()


def measure_binary(hosts: str, vms: int, seconds: float, work: Path) -> None:
    if shutil.which("tmux") is None:
        print("3. skipped: tmux is not installed", flush=True)
        return
    tmux = Tmux(work)
    state = work / "state"
    state.mkdir()
    ref: ProcessRef | None = None
    try:
        began = time.monotonic()
        tmux("new-session", "-d", "-s", "bench", "-x", str(SIZE[0]), "-y", str(SIZE[1]),
             "env", "TERM=xterm-256color", f"XDG_STATE_HOME={state}",
             f"PVC_SANDBOX_DIR={work / 'no-sandbox'}", "PVC_ZK=",
             str(ROOT / ".venv" / "bin" / "pvc-tui"), "--zk", hosts)
        pid = int(tmux("display-message", "-p", "-t", "bench", "#{pane_pid}").strip())
        ref = ProcessRef.of(pid)
        deadline = time.monotonic() + 60
        screen = ""
        while f"VMs {vms}" not in screen:
            if time.monotonic() > deadline or not is_running(ref):
                raise RuntimeError(f"the dashboard did not show VMs {vms}:\n{screen}")
            time.sleep(0.05)  # the terminal offers no event to wait on
            screen = tmux("capture-pane", "-p", "-t", "bench")
        shown = time.monotonic() - began
        time.sleep(2.0)  # settle
        proc = psutil.Process(pid)
        name = " ".join(proc.cmdline()[:2])
        cpu0, t0 = cpu_seconds(proc), time.monotonic()
        time.sleep(seconds)
        cpu = 100 * (cpu_seconds(proc) - cpu0) / (time.monotonic() - t0)
        rss = proc.memory_info().rss / 2**20
        threads = proc.num_threads()
        print(f"3. real pvc-tui in tmux ({name}, pid {pid}): 'VMs {vms}' on screen after "
              f"{shown:.2f} s from launch (interpreter start included); idle over "
              f"{seconds:g} s: CPU {cpu:.2f} % of one core, RSS {rss:.0f} MiB, "
              f"{threads} threads", flush=True)
        figure("3. real binary: launch -> 'VMs N' shown", shown, "s", None,
               "includes interpreter start and imports")
        figure("3. real binary idle CPU (10 s)", cpu, "%", 2.0)
        figure("3. real binary RSS", rss, "MiB", 300.0)
    finally:
        tmux.kill()
        if ref is not None:
            terminate([ref], timeout=5)


# ---- 4. console lag ------------------------------------------------------------------------


def append_lines(path: Path, rate: float, seconds: float, batch_every: float,
                 written: list[int]) -> None:
    """Append `rate` lines/s to `path` in small batches; each line: time.time() Lseq x..."""
    per_batch = max(1, round(rate * batch_every))
    seq = 0
    with path.open("ab", buffering=0) as f:
        began = time.monotonic()
        while (elapsed := time.monotonic() - began) < seconds:
            due = int(elapsed * rate) + per_batch
            stamp = f"{time.time():.6f}"
            chunk = []
            while seq < due:
                head = f"{stamp} L{seq:08d} "
                chunk.append(head + "x" * (80 - len(head)) + "\n")
                seq += 1
            f.write("".join(chunk).encode())
            time.sleep(batch_every)
    written.append(seq)


async def measure_console(server_address: str, rate: float, seconds: float,
                          work: Path) -> None:
    zk = KazooClient(hosts=server_address)
    zk.start(timeout=10)
    zk.ensure_path(CONSOLE_CHROOT)
    zk.stop()
    zk.close()
    hosts = server_address + CONSOLE_CHROOT
    logs = work / "console-logs"
    logs.mkdir()
    xml = work / "hv1.xml"
    xml.write_text(TEST_NODE_XML.format(cpus=8, memory_kib=16 * 1024 * 1024))
    ref, _ = spawn([sys.executable, "-m", "node_agent", "--name", "hv1", "--zk", hosts,
                    "--libvirt-uri", f"test://{xml}", "--console-log-dir", str(logs),
                    "--keepalive-interval", "1", "--shutdown-timeout", "3",
                    "--console-publish-interval", "0.05", "--console-log-lines", "100000"],
                   work / "agent.log")
    try:
        with ClusterClient.connect(hosts) as client:
            deadline = time.monotonic() + 30
            while not client.zk.exists(layout.node_alive_path("hv1")):
                if time.monotonic() > deadline or not is_running(ref):
                    raise RuntimeError("the agent did not register:\n"
                                       + (work / "agent.log").read_text(errors="replace"))
                time.sleep(0.05)
            client.define_vm(vm_xml(CONSOLE_VM, 256), "hv1", start=True)
            client.start_vm(CONSOLE_VM, wait=True, timeout=30)
            log = logs / f"{CONSOLE_VM}.log"
            with log.open("ab") as f:
                f.write(b"boot\n")
            app = BenchDashboard(hosts)
            async with app.run_test(size=SIZE):
                await wait_for(lambda: app.painted_at is not None and app.client is not None,
                               30, "the dashboard")
                pane = app.console_pane
                assert isinstance(pane, TimedConsolePane)
                pane.display = True
                assert app.client is not None
                pane.follow_vm(app.client, CONSOLE_VM)
                await wait_for(lambda: pane.view.line_count > 0, 15, "the console's first line")
                agent = psutil.Process(ref.pid)
                agent_cpu0 = cpu_seconds(agent)
                written: list[int] = []
                writer = threading.Thread(target=append_lines,
                                          args=(log, rate, seconds, 0.01, written), daemon=True)
                t0 = time.monotonic()
                writer.start()
                while writer.is_alive():
                    await asyncio.sleep(0.05)
                agent_cpu = 100 * (cpu_seconds(agent) - agent_cpu0) / (time.monotonic() - t0)
                total = written[0] if written else 0
                with contextlib.suppress(TimeoutError):
                    await wait_for(lambda: len(pane.appended) + pane.gaps >= total, 5,
                                   "the last lines")
                await asyncio.sleep(0.3)
                crashes = list(app.crashes)
                wakes = pane.wakes
                view_lines = pane.view.line_count
    finally:
        terminate([ref], timeout=5)
    lag = [1000 * (appended - wrote) for wrote, appended in pane.appended.values()]
    painted = [1000 * (pane.painted[s] - w) for s, (w, _) in pane.appended.items()
               if s in pane.painted]
    received = len(pane.appended)
    to_worker = [1000 * (pane.received[s] - w) for s, (w, _) in pane.appended.items()]
    in_ui = [1000 * (a - pane.received[s]) for s, (_, a) in pane.appended.items()]
    by_second: dict[int, list[float]] = {}
    first_write = min((w for w, _ in pane.appended.values()), default=0.0)
    for wrote, appended in pane.appended.values():
        by_second.setdefault(int(wrote - first_write), []).append(1000 * (appended - wrote))
    print(f"4. console lag, real agent (test driver, publish interval 0.05 s) -> ZooKeeper -> "
          f"follow -> ConsolePane: {total} lines written at {rate:g}/s for {seconds:g} s; "
          f"received {received}, missed {total - received} (pane reported {pane.gaps} as "
          f"missed); {wakes} UI wake-ups; view holds {view_lines} lines", flush=True)
    print(f"   written -> appended to ConsoleView: p50 {pct(lag, .5):.0f} ms, p99 "
          f"{pct(lag, .99):.0f} ms, max {max(lag, default=float('nan')):.0f} ms; "
          f"-> screen refreshed: p50 {pct(painted, .5):.0f} ms, p99 {pct(painted, .99):.0f} ms"
          f"; agent CPU {agent_cpu:.1f} % of one core"
          f"{'; crashes: ' + str(len(crashes)) if crashes else ''}", flush=True)
    print(f"   where it goes (p50 / p99 ms): written -> follow worker has it (agent publish, "
          f"ZooKeeper, watch, chunk reads) {pct(to_worker, .5):.0f} / "
          f"{pct(to_worker, .99):.0f}; worker -> appended (inbox, UI queue, append) "
          f"{pct(in_ui, .5):.0f} / {pct(in_ui, .99):.0f} (a batch counts from its first "
          "line's receipt)", flush=True)
    worst = max(pane.appended, key=lambda q: pane.appended[q][1] - pane.appended[q][0],
                default=None)
    if worst is not None:
        wrote, appended = pane.appended[worst]
        print(f"   worst line L{worst}: {1000 * (pane.received[worst] - wrote):.0f} ms to the "
              f"follow worker, then {1000 * (appended - pane.received[worst]):.0f} ms to the "
              f"view, {wrote - first_write:.2f} s into the writing", flush=True)
    print("   lag max by second of writing: " + ", ".join(
        f"{second}s {max(values):.0f}" for second, values in sorted(by_second.items())),
          flush=True)
    figure("4. console lag p50 (to ConsoleView)", pct(lag, .5), "ms", 250)
    figure("4. console lag p99 (to ConsoleView)", pct(lag, .99), "ms", 250)
    figure("4. console lag max (to ConsoleView)", max(lag, default=float("nan")), "ms", 250)
    figure("4. console lines missed", total - received, "lines", 0, f"of {total} written")


# ---- main ----------------------------------------------------------------------------------


def others_cpu() -> dict[tuple[int, float], float]:
    """CPU seconds so far of every process that is neither this one nor one of its
    descendants (concurrent test runs on the machine skew the figures: say so)."""
    mine = {os.getpid(), *(p.pid for p in psutil.Process().children(recursive=True))}
    out = {}
    for proc in psutil.process_iter():
        if proc.pid in mine:
            continue
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            out[(proc.pid, proc.create_time())] = times.user + times.system
    return out


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Report the phase's duration and how busy the rest of the machine was meanwhile."""
    began, others = time.monotonic(), others_cpu()
    try:
        yield
    except Exception as exc:  # one broken phase should not hide the others' figures
        print(f"{name}: FAILED: {type(exc).__name__}: {exc}", flush=True)
    finally:
        elapsed = time.monotonic() - began
        busy = 100 * sum(cpu - others.get(key, 0.0)
                         for key, cpu in others_cpu().items()) / elapsed
        print(f"   ({name} took {elapsed:.0f} s; other people's processes on this machine "
              f"used at least {busy:.0f} % of one core meanwhile, of "
              f"{psutil.cpu_count()} cores)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--vms", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=50.0, help="VM changes per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="of VM changes")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--console-rate", type=float, default=2000.0)
    parser.add_argument("--console-seconds", type=float, default=10.0)
    parser.add_argument("--profile", action="store_true",
                        help="print cProfile listings of the UI thread")
    parser.add_argument("--only", default="1234", help="which measurements, e.g. 24")
    parser.add_argument("--writer-thread", dest="writer_process", action="store_false",
                        help="2: write the VM changes from a thread of the dashboard's "
                        "process (shares its GIL, so it falls behind: flattering)")
    parser.add_argument("--measure-load", metavar="HOSTS", help=argparse.SUPPRESS)
    parser.add_argument("--write-changes", metavar="HOSTS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_changes:
        writes = Writes()
        write_changes(args.write_changes, json.loads(sys.stdin.read()), args.rate, writes)
        print(json.dumps({"sent": [[*k, *v] for k, v in writes.sent.items()],
                          "error": writes.error, "seconds": writes.seconds}))
        return
    if args.measure_load:
        print(json.dumps(asyncio.run(load_once(args.measure_load, args.nodes, args.vms,
                                               args.profile))))
        return
    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="bench-dash-"))
    server = None
    try:
        server = start_zookeeper(work / "zk", fast_unsafe=True)
        with ClusterClient.connect(server.address) as client:
            t = time.monotonic()
            populate(client, args.nodes, args.vms)
            print(f"populate: {args.nodes} nodes, {args.vms} VMs in "
                  f"{time.monotonic() - t:.1f} s", flush=True)
            hosts = server.address
            phases: dict[str, Callable[[], object]] = {
                "1": lambda: measure_load(hosts, args.nodes, args.vms, 3,
                                          args.profile),
                "2": lambda: asyncio.run(measure_latency(
                    hosts, args.rate, args.seconds, 5.0, args.profile,
                    not args.writer_process)),
                "3": lambda: measure_binary(hosts, args.vms, args.idle_seconds, work),
                "4": lambda: asyncio.run(measure_console(
                    hosts, args.console_rate, args.console_seconds, work)),
            }
            for name, run in phases.items():
                if name in args.only:
                    with phase(name):
                        run()
    finally:
        if server is not None:
            stop_zookeeper(server)
        shutil.rmtree(work, ignore_errors=True)
    print_table()
    print(f"\n(whole run {time.monotonic() - began:.0f} s)")
    for text in PROFILES:
        print(text)


if __name__ == "__main__":
    main()
