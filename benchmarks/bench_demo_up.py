"""`pvc-tui demo up` time for a 3-node sandbox, with each driver.

For each run: a fresh state directory, `demo up --nodes 3` timed end to end (ZooKeeper
serving, agents running, demo VMs defined and reported running), and for the qemu
driver also the time until every guest has printed its first status line. Then
`demo down`, timed. The guest image is built once before the runs (its cold build is
reported separately when it was not cached yet).

    .venv/bin/python benchmarks/bench_demo_up.py [--runs 3] [--drivers test,qemu]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pvc_tui.sandbox.demo import _cache_dir
from pvc_tui.sandbox.qemu import ensure_guest_image, qemu_unavailable_reason

STATUS = re.compile(r" up \d+s load ")


def pvc(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PVC_SANDBOX_DIR": str(state_dir)}
    return subprocess.run([sys.executable, "-m", "pvc_tui.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=600, check=True)


def one_run(driver: str) -> tuple[float, float | None, float]:
    state_dir = Path(tempfile.mkdtemp(prefix="pvc-b-")) / "s"
    began = time.monotonic()
    pvc(state_dir, "demo", "up", "--driver", driver, "--nodes", "3")
    up = time.monotonic() - began
    first_lines = None
    if driver == "qemu":
        status = json.loads(pvc(state_dir, "demo", "status").stdout)
        vms = json.loads(pvc(state_dir, "vm", "list", "--format", "json").stdout)
        dirs = {n["name"]: Path(n["console_log_dir"]) for n in status["nodes"]}
        logs = [dirs[v["node"]] / f"{v['name']}.log" for v in vms]
        while not all(p.exists() and STATUS.search(p.read_text(errors="replace"))
                      for p in logs):
            time.sleep(0.1)
        first_lines = time.monotonic() - began
    began = time.monotonic()
    pvc(state_dir, "demo", "down")
    down = time.monotonic() - began
    shutil.rmtree(state_dir.parent, ignore_errors=True)
    return up, first_lines, down


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--drivers", default="test,qemu")
    args = parser.parse_args()
    for driver in args.drivers.split(","):
        if driver == "qemu":
            if reason := qemu_unavailable_reason():
                print(f"qemu driver: not measured ({reason})")
                continue
            began = time.monotonic()
            ensure_guest_image(_cache_dir())
            print(f"guest image ready in {time.monotonic() - began:.2f} s "
                  "(cold build ~5 s once; cached afterwards)")
        results = [one_run(driver) for _ in range(args.runs)]
        ups = [r[0] for r in results]
        downs = [r[2] for r in results]
        line = (f"{driver:5} driver, 3 nodes, {args.runs} runs: demo up median "
                f"{statistics.median(ups):.2f} s (min {min(ups):.2f}, max {max(ups):.2f})")
        if driver == "qemu":
            firsts = [r[1] for r in results if r[1] is not None]
            line += (f"; every guest's first status line after {statistics.median(firsts):.2f} s"
                     f" (max {max(firsts):.2f})")
        line += f"; demo down median {statistics.median(downs):.2f} s"
        print(line)


if __name__ == "__main__":
    main()
