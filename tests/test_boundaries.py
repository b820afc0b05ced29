"""The cluster library and the agent stay free of the UI (also an import-linter contract)."""

from __future__ import annotations

import subprocess
import sys


def test_cluster_library_and_agent_never_import_textual() -> None:
    code = ("import sys, pvc_tui.cluster, node_agent.agent, node_agent.main; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich') "
            "or m.startswith(('pvc_tui.cli', 'pvc_tui.sandbox'))); print(bad)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert run.stdout.strip() == "[]"
