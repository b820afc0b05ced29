"""Terminal attack payloads from a guest: log file -> agent -> ZooKeeper -> `vm log --follow`
and the dashboard's console pane. Nothing unsanitised may come out of either, a 50 MB
line may not take the agent's memory with it, and every payload line still arrives."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import threading
import time

import psutil

from pvc_tui.cluster import ClusterClient, console
from pvc_tui.tui.app import Dashboard
from tests.conftest import AgentFactory
from tests.dashboard_helpers import until
from tests.test_console import FAST, running_vm, write
from tests.test_sanitize import CORPUS, forbidden

HUGE_LINE = 50 * 1024 * 1024


def corpus_bytes() -> bytes:
    """Every payload of the sanitiser's corpus as a guest line, tagged, plus raw bytes."""
    lines = [f"<{name}>{payload}</{name}>\n".encode("utf-8", "surrogateescape")
             for name, payload, _ in CORPUS]
    lines.append(b"raw invalid utf-8 \xff\xfe\xc3( \xe2\x82 end\n")
    lines.append(b"8-bit c1 csi \x9b31m and osc \x9d0;t\x07 end\n")
    return b"".join(lines)


def test_attacks_through_follow(client: ClusterClient, start_agent: AgentFactory) -> None:
    agent = start_agent("hv1", *FAST[:2], "--console-log-lines", "2000")
    log = running_vm(client, agent, "web1")
    write(log, b"ready\n")
    follow = subprocess.Popen(
        [sys.executable, "-m", "pvc_tui.cli.main", "--zk", client.hosts, "vm", "log", "web1",
         "--follow"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out: list[bytes] = []
    ready, corpus_seen, done = threading.Event(), threading.Event(), threading.Event()

    def read() -> None:
        assert follow.stdout is not None
        for line in follow.stdout:
            out.append(line)
            if line.startswith(b"ready"):
                ready.set()
            if line.startswith(b"CORPUS DONE"):
                corpus_seen.set()
            if line.startswith(b"THE END"):
                done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(30), "the follower never started"
        write(log, corpus_bytes() + b"CORPUS DONE\n")
        assert corpus_seen.wait(60), b"".join(out[-5:])
        with log.open("ab") as f:  # a 50 MB line, written in 1 MiB pieces
            for _ in range(HUGE_LINE // (1 << 20)):
                f.write(b"B" * (1 << 20))
            f.write(b"\n")
        write(log, b"THE END\n")
        assert done.wait(120), b"".join(out[-5:])
    finally:
        follow.terminate()
        follow.wait(timeout=10)
    text = b"".join(out).decode("utf-8")  # the follower prints valid UTF-8 only
    assert forbidden(text) == []
    for name, payload, _ in CORPUS:
        if "\r" not in payload:  # a carriage return rewinds the line, tag and all
            assert f"<{name}>" in text, name
    raw = next(ln for ln in text.splitlines() if ln.startswith("raw invalid"))
    # each undecodable byte run becomes U+FFFD, nothing raw
    assert re.fullmatch("raw invalid utf-8 \ufffd+\\( \ufffd+ end", raw), raw
    # the agent cut the huge line into bounded pieces and kept its memory
    assert max(len(line) for line in text.splitlines()) <= 8192
    stored = (console.tail(client, "web1") or ([], ""))[0]
    assert max(len(line.text.encode()) for line in stored) <= console.MAX_LINE_BYTES
    assert sum(1 for line in stored if line.cont) >= 100  # the huge line's pieces
    rss = psutil.Process(agent.ref.pid).memory_info().rss
    assert rss < 300 * 1024 * 1024, f"agent RSS {rss / 2**20:.0f} MiB after a 50 MB line"
    assert agent.proc.poll() is None


async def test_attacks_in_the_console_pane(client: ClusterClient, start_agent: AgentFactory,
                                           zk_hosts: str) -> None:
    agent = start_agent("hv1", *FAST[:2], "--console-log-lines", "2000")
    log = running_vm(client, agent, "web1")
    write(log, b"booting\n")
    app = Dashboard(zk_hosts)
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, lambda: len(app.vm_table.items) == 1, what="first load")
        await pilot.press("c")
        view = app.console_pane.view
        await until(pilot, lambda: "booting" in view.text(), what="first line")
        write(log, corpus_bytes() + b"THE END\n")
        await until(pilot, lambda: "THE END" in view.text(), timeout=30, what="corpus shown")
        shown = view.text()
        assert forbidden(shown) == []
        for name, payload, expected in CORPUS:
            if "\n" not in expected and "\r" not in payload:  # one line each: exactly as
                # the sanitiser says
                want = re.sub(r"[ \t]+", " ", f"<{name}>{expected}</{name}>")
                assert want in re.sub(r"[ \t]+", " ", shown) or name == "long-line", name
        assert app.crashes == []


def test_raw_output_is_refused_on_a_terminal(client: ClusterClient,
                                             start_agent: AgentFactory) -> None:
    """`vm log --raw` passes the guest's bytes on unchanged: into a pipe, never into a
    terminal."""
    log = running_vm(client, start_agent("hv1", *FAST[:2]), "web1")
    write(log, b"\x1b]52;c;aGVsbG8=\x07 clipboard\n")
    deadline = time.monotonic() + 15
    while not (console.tail(client, "web1") or ([], ""))[0]:
        assert time.monotonic() < deadline, "the console was never published"
        time.sleep(0.1)
    primary, secondary = pty.openpty()
    try:
        run = subprocess.run(
            [sys.executable, "-m", "pvc_tui.cli.main", "--zk", client.hosts, "vm", "log",
             "web1", "--raw"], stdout=secondary, stderr=subprocess.PIPE, timeout=60)
        os.close(secondary)
        seen = b""
        while select.select([primary], [], [], 0.2)[0]:
            try:
                chunk = os.read(primary, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(primary)
    assert run.returncode == 2 and b"not to a terminal" in run.stderr
    assert run.stderr.count(b"\n") == 1 and b"\x1b" not in seen
    piped = subprocess.run(
        [sys.executable, "-m", "pvc_tui.cli.main", "--zk", client.hosts, "vm", "log",
         "web1", "--raw"], capture_output=True, timeout=60)
    assert piped.returncode == 0 and b"\x1b]52;c;aGVsbG8=\x07 clipboard" in piped.stdout
