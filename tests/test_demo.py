"""`pvc-tui demo` on the test driver: up, status, idempotence, repair, down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pvc_tui.sandbox.processes import ProcessRef, is_running


def demo(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PVC_SANDBOX_DIR": str(state_dir)}
    env.pop("PVC_ZK", None)
    env.pop("PVC_ZK_AUTH", None)  # the CLI finds the sandbox's operator credentials itself
    return subprocess.run([sys.executable, "-m", "pvc_tui.cli.main", *args],
                          capture_output=True, text=True, timeout=180, env=env)


def recorded_processes(state_dir: Path) -> list[ProcessRef]:
    raw = json.loads((state_dir / "sandbox.json").read_text())
    refs = [ProcessRef(**raw["zk_process"])]
    refs += [ProcessRef(**n["agent"]) for n in raw["nodes"]]
    if raw.get("ceph"):
        refs += [ProcessRef(pid, start) for pid, start in raw["ceph"]["processes"]]
    return refs


def test_demo_up_status_down(tmp_path: Path) -> None:
    state_dir = tmp_path / "sandbox"
    try:
        up = demo(state_dir, "demo", "up", "--driver", "test", "--nodes", "2")
        assert up.returncode == 0, up.stderr
        status = json.loads(demo(state_dir, "demo", "status").stdout)
        assert status["driver"] == "test" and status["state_dir"] == str(state_dir)
        assert status["zk"].startswith("127.0.0.1:") and status["zk_running"]
        assert [n["name"] for n in status["nodes"]] == ["hv1", "hv2"]
        # the tiny real Ceph runs beside it, its config in the sandbox's state
        assert status["ceph_running"] and Path(status["ceph_conf"]).is_file()
        assert Path(status["ceph_conf"]).is_relative_to(state_dir)
        for node in status["nodes"]:
            assert node["agent_running"] and node["pid"] > 0
            assert node["libvirt_uri"].startswith("test://")
            assert Path(node["console_log_dir"]).is_dir()
        # the CLI finds the running sandbox by itself (no --zk, no PVC_ZK)
        vms = json.loads(demo(state_dir, "vm", "list", "--format", "json").stdout)
        assert len(vms) == 4
        assert {v["node"] for v in vms} == {"hv1", "hv2"}
        assert all(v["power_state"] == "running" for v in vms)

        # idempotent: a second up starts nothing new and defines nothing again
        before = recorded_processes(state_dir)
        demo(state_dir, "vm", "undefine", "web1", "--yes", "--wait")
        assert demo(state_dir, "demo", "up").returncode == 0
        assert recorded_processes(state_dir) == before
        names = {v["name"] for v in json.loads(demo(state_dir, "vm", "list", "--format",
                                                     "json").stdout)}
        assert "web1" not in names and len(names) == 3

        refused = demo(state_dir, "demo", "up", "--driver", "qemu")
        assert refused.returncode == 2 and "run `pvc-tui demo down` first" in refused.stderr
        assert recorded_processes(state_dir) == before

        # repair: a dead agent is started again by `up`, and its VMs run again
        os.kill(before[1].pid, signal.SIGKILL)
        killed_at = time.time()
        assert demo(state_dir, "demo", "up").returncode == 0
        after = recorded_processes(state_dir)
        assert after[1] != before[1] and is_running(after[1])
        assert after[3:] == before[3:]  # Ceph was running: left as it was
        vms = json.loads(demo(state_dir, "vm", "list", "--node", "hv1", "--format",
                              "json").stdout)
        assert vms and all(v["power_state"] == "running" for v in vms)
        assert all(v["runtime_updated_at"] > killed_at for v in vms)  # the new agent's word

        overview = demo(state_dir)  # no command: the node and VM tables
        assert overview.returncode == 0 and "hv1" in overview.stdout
        assert "db1" in overview.stdout
    finally:
        refs = recorded_processes(state_dir) if (state_dir / "sandbox.json").exists() else []
        down = demo(state_dir, "demo", "down")
    assert down.returncode == 0
    assert not state_dir.exists()
    assert refs and not any(is_running(r) for r in refs)
    assert demo(state_dir, "demo", "status").returncode == 1


def test_demo_refuses_bad_node_counts(tmp_path: Path) -> None:
    for count in ("0", "10"):
        run = demo(tmp_path / "s", "demo", "up", "--driver", "test", "--nodes", count)
        assert run.returncode == 2 and "--nodes must be between 1 and 9" in run.stderr
    assert not (tmp_path / "s" / "sandbox.json").exists()


def test_state_dir_goes_after_the_action_too(tmp_path: Path) -> None:
    run = demo(tmp_path / "unused", "demo", "status", "--state-dir", str(tmp_path / "x"))
    assert run.returncode == 1 and f"no sandbox in {tmp_path / 'x'}" in run.stderr
