"""End to end with real guests: the sandbox's qemu driver, agents, and the CLI.

A real guest boots under QEMU on a per-node libvirtd, its agent reports it running,
its console log file receives its text, a restart reboots it, and `demo down` leaves
no process and no mount behind.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pvc_tui.sandbox.processes import ProcessRef, is_running
from pvc_tui.sandbox.qemu import qemu_unavailable_reason
from tests.conftest import require
from tests.test_demo import demo

pytestmark = pytest.mark.qemu
STATUS = re.compile(r"web1 up \d+s load")


def wait_text(path: Path, pattern: re.Pattern[str], timeout: float, after: int = 0) -> str:
    """Until the file's text (from offset `after`) matches: a guest's log has no event."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        if pattern.search(text[after:]):
            return text
        time.sleep(0.25)
    raise AssertionError(f"{path} never matched {pattern.pattern!r}: {text[-500:]!r}")


@pytest.fixture
def state_dir() -> Iterator[Path]:
    require(qemu_unavailable_reason())
    # short: libvirt's unix socket path must stay under 108 bytes
    path = Path(tempfile.mkdtemp(prefix="pvc-e2e-")) / "s"
    yield path
    if (path / "sandbox.json").exists():
        demo(path, "demo", "down")
    shutil.rmtree(path.parent, ignore_errors=True)


def test_real_guest_boots_logs_restarts_and_cleans_up(state_dir: Path) -> None:
    up = demo(state_dir, "demo", "up", "--driver", "qemu", "--nodes", "2")
    assert up.returncode == 0, up.stderr
    vms = {v["name"]: v for v in json.loads(demo(state_dir, "vm", "list", "--format",
                                                  "json").stdout)}
    assert set(vms) == {"web1", "db1", "web2"}
    assert all(v["state"] == "start" and v["power_state"] == "running" for v in vms.values())
    status = json.loads(demo(state_dir, "demo", "status").stdout)
    hv1 = next(n for n in status["nodes"] if n["name"] == "hv1")
    assert status["driver"] == "qemu" and hv1["libvirt_uri"].startswith("qemu+unix://")

    log = Path(hv1["console_log_dir"]) / "web1.log"
    text = wait_text(log, re.compile(r"Linux version .*\n(.|\n)*guest web1"), 90)
    wait_text(log, STATUS, 60)

    restart = demo(state_dir, "vm", "restart", "web1", "--wait", "--timeout", "90")
    assert restart.returncode == 0, restart.stderr
    # append='off': the log starts again with the new boot
    text = wait_text(log, re.compile(r"guest web1 .*booted"), 90)
    assert text.count("Linux version") == 1
    wait_text(log, STATUS, 60)

    raw = json.loads((state_dir / "sandbox.json").read_text())
    refs = [ProcessRef(**raw["zk_process"])]
    for node in raw["nodes"]:
        refs += [ProcessRef(**node[k]) for k in ("agent", "libvirtd", "virtlogd")]
    down = demo(state_dir, "demo", "down")
    assert down.returncode == 0, down.stderr
    assert not any(is_running(r) for r in refs)
    assert str(state_dir) not in Path("/proc/self/mountinfo").read_text()
    assert not state_dir.exists()


UPTIME = re.compile(r"web1 up (\d+)s load")


def uptimes(text: str) -> list[int]:
    return [int(m) for m in UPTIME.findall(text)]


def test_live_migration_keeps_the_guest_running(state_dir: Path) -> None:
    up = demo(state_dir, "demo", "up", "--driver", "qemu", "--nodes", "2")
    assert up.returncode == 0, up.stderr
    status = json.loads(demo(state_dir, "demo", "status").stdout)
    logs = {n["name"]: Path(n["console_log_dir"]) / "web1.log" for n in status["nodes"]}
    text = wait_text(logs["hv1"], STATUS, 90)
    before = uptimes(text)[-1]

    run = demo(state_dir, "vm", "migrate", "web1", "--target", "hv2", "--wait")
    assert run.returncode == 0, run.stderr
    assert "migrate hv1 -> hv2 done (live," in run.stdout
    vm = json.loads(demo(state_dir, "vm", "info", "web1", "--format", "json").stdout)
    assert (vm["node"], vm["previous_node"], vm["power_state"]) == ("hv2", "hv1", "running")
    # the same guest carries on printing on hv2: its uptime keeps counting, no new boot
    text = wait_text(logs["hv2"], UPTIME, 60)
    after = wait_text(logs["hv2"], re.compile(r"web1 up (\d+)s(.|\n)*web1 up \d+s"), 60)
    assert "Linux version" not in after
    assert min(uptimes(after)) >= before
    assert uptimes(after) == sorted(uptimes(after))

    run = demo(state_dir, "vm", "unmigrate", "web1", "--wait")
    assert run.returncode == 0, run.stderr
    assert "unmigrate hv2 -> hv1 done (live," in run.stdout
    vm = json.loads(demo(state_dir, "vm", "info", "web1", "--format", "json").stdout)
    assert (vm["node"], vm["previous_node"], vm["power_state"]) == ("hv1", "", "running")
    back = wait_text(logs["hv1"], re.compile(r"web1 up (\d+)s(.|\n)*web1 up \d+s"), 60)
    assert "Linux version" not in back and min(uptimes(back)) >= max(uptimes(after))
    nodes = {n["name"]: n for n in json.loads(demo(state_dir, "node", "list", "--format",
                                                   "json").stdout)}
    assert "web1" in nodes["hv1"]["running_vms"] and "web1" not in nodes["hv2"]["running_vms"]


def test_console_followed_from_power_on_through_live_migration(state_dir: Path) -> None:
    import threading

    from pvc_tui.cluster import ClusterClient, console
    from pvc_tui.cluster.console import ConsoleLine
    from pvc_tui.sandbox.demo import demo_vm_xml, load

    up = demo(state_dir, "demo", "up", "--driver", "qemu", "--nodes", "2", "--no-vms")
    assert up.returncode == 0, up.stderr
    sandbox = load(state_dir)
    assert sandbox is not None
    with ClusterClient.connect(sandbox.zk, credentials=sandbox.operator()) as client:
        client.define_vm(demo_vm_xml(sandbox, "talk1", sandbox.nodes[0]), "hv1")
        seen: list[ConsoleLine] = []
        stop = threading.Event()
        cond = threading.Condition()

        def collect() -> None:
            for event in console.follow(client, "talk1", last=0, stop=stop):
                assert not isinstance(event, console.Gap), event
                if isinstance(event, ConsoleLine):
                    with cond:
                        seen.append(event)
                        cond.notify_all()

        reader = threading.Thread(target=collect, daemon=True)
        reader.start()

        def wait_seen(pattern: re.Pattern[str], count: int = 1, timeout: float = 90) -> None:
            with cond:
                assert cond.wait_for(lambda: sum(bool(pattern.search(line.text))
                                                 for line in seen) >= count, timeout), seen[-5:]

        client.start_vm("talk1", wait=True, timeout=120)  # power-on, followed live
        status = re.compile(r"talk1 up \d+s load")
        wait_seen(status, 2)
        client.migrate_vm("talk1", target="hv2", wait=True, timeout=120)
        before = len(seen)
        wait_seen(status, 3 + sum(bool(status.search(line.text)) for line in seen))
        stop.set()
        logs = [Path(n.console_log_dir) / "talk1.log" for n in sandbox.nodes]
        files = [line for p in logs for line in p.read_text(errors="surrogateescape")
                 .splitlines()]
        got = [line.text for line in seen if not line.marker]
        assert not any(line.marker for line in seen)  # live: no restart marker
        assert got[0].startswith("[    0.000000] ")  # from power-on
        assert any("Linux version" in text for text in got[:3])
        assert got == files[: len(got)]  # every line of both files, once, in order
        assert len(seen) > before
        seqs = [line.seq for line in seen]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
