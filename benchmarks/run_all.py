"""Run every benchmark and print its figures (`make bench`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

for script in ("bench_demo_up.py", "bench_agent_idle.py", "bench_dashboard.py",
               "bench_storage.py", "bench_faults.py"):
    print(f"## {script}", flush=True)
    subprocess.run([sys.executable, str(HERE / script)], check=True)
