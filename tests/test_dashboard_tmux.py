"""The real `pvc-tui` binary on a real terminal (tmux): guest escape sequences stay inside.

tmux records every byte the dashboard writes to its terminal (`pipe-pane -O`), and with
`set-clipboard on` it would store an OSC 52 clipboard write that got through as a paste
buffer, and an OSC 0/2 title as the pane title. A guest prints clipboard writes and
reads, title changes and device queries (DA1, DSR, DECRQSS, 8-bit CSI) on its serial
console while the console pane follows it; none of them may reach the terminal.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pvc_tui.cluster import ClusterClient
from tests.conftest import AgentFactory, require
from tests.test_console import FAST, running_vm, write

WIDTH, HEIGHT = 160, 40
PVC_TUI = Path(sys.executable).parent / "pvc-tui"

# Waits for the go-file, then becomes pvc-tui: pipe-pane is attached before any output.
WAIT_THEN_EXEC = (
    "import os, sys, time\n"
    "deadline = time.monotonic() + 30\n"
    "while not os.path.exists(sys.argv[1]):\n"
    "    if time.monotonic() > deadline:\n"
    "        sys.exit(97)\n"
    "    time.sleep(0.01)\n"
    "os.environ['TERM'] = 'xterm-256color'\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)

TMUX_CONF = """\
set -g default-terminal xterm-256color
set -g default-size 160x40
set -g status off
set -g remain-on-exit on
set -g history-limit 5000
set -s set-clipboard on
set -s escape-time 0
"""

PAYLOAD = (b"\x1b]52;c;ZXZpbA==\x07clip-write\n"
           b"\x1b]52;c;?\x07clip-query\n"
           b"\x1b]0;pwned-title\x07title-bel\n"
           b"\x1b]2;pwned2\x1b\\title-st\n"
           b"da1\x1b[c-dsr\x1b[6n-decrqss\x1bP$qm\x1b\\-c1\xc2\x9b6n-raw\x9b6n-end\n"
           b"all\x1b]52;c;ZXZpbA==\x07\x1b]0;pwned-title\x07\x1b[c\x1b[6n\x1bP$qm\x1b\\"
           b"\xc2\x9b6n|in-one-line\n")
# What must never appear in the dashboard's output to its terminal.
FORBIDDEN = (b"\x1b]52", b"ZXZpbA", b"pwned", b"\x1b[6n", b"\x1bP$q", b"\xc2\x9b", b"\x9b6n")
DA1 = b"\x1b[c"


def is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """`tmux(*args)` on a private server (own socket); only that server is killed after."""
    require(None if shutil.which("tmux") else "tmux is not installed")
    socket = f"pvc-tui-test-{uuid.uuid4().hex[:12]}"
    conf = tmp_path / "tmux.conf"
    conf.write_text(TMUX_CONF)
    env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE")}
    env["TERM"] = "xterm-256color"

    def run(*args: str) -> str:
        done = subprocess.run(["tmux", "-L", socket, "-f", str(conf), *args], env=env,
                              capture_output=True, text=True, timeout=10)
        assert done.returncode == 0, (args, done.stderr)
        return done.stdout

    yield run
    subprocess.run(["tmux", "-L", socket, "kill-server"], env=env, capture_output=True,
                   timeout=10)
    tmpdir = Path(os.environ.get("TMUX_TMPDIR") or "/tmp") / f"tmux-{os.getuid()}"
    (tmpdir / socket).unlink(missing_ok=True)  # tmux leaves the socket file behind


def test_console_escape_sequences_never_reach_the_terminal(
        client: ClusterClient, start_agent: AgentFactory, zk_hosts: str, tmp_path: Path,
        tmux: Callable[..., str]) -> None:
    tag = uuid.uuid4().hex[:8]
    booted, end, partial = f"booted-{tag}", f"PAYLOAD-END-{tag}", f"PARTIAL-{tag}"
    log = running_vm(client, start_agent("hv1", *FAST), "web1")
    write(log, f"{booted}\n".encode())

    raw_log, go = tmp_path / "raw.log", tmp_path / "go"
    state = tmp_path / "state"
    pane = tmux("new-session", "-d", "-P", "-F", "#{pane_id}", "-s", "dash",
                "-x", str(WIDTH), "-y", str(HEIGHT),
                "-e", f"PVC_SANDBOX_DIR={tmp_path / 'no-sandbox'}",
                "-e", f"XDG_STATE_HOME={state}",
                sys.executable, "-c", WAIT_THEN_EXEC, str(go),
                str(PVC_TUI), "--zk", zk_hosts).strip()

    def fmt(spec: str) -> str:
        return tmux("display-message", "-p", "-t", pane, spec).strip()

    # Control: this server does turn an OSC 52 into a buffer and OSC 2 into a pane title.
    control = tmux("new-window", "-d", "-P", "-F", "#{pane_id}", sys.executable, "-c",
                   "import sys, time; sys.stdout.write('\\x1b]52;c;Y29udHJvbA==\\x07"
                   "\\x1b]2;control-title\\x07'); sys.stdout.flush(); time.sleep(30)").strip()
    deadline = time.monotonic() + 10
    while "control" not in tmux("list-buffers", "-F", "#{buffer_sample}") or \
            tmux("display-message", "-p", "-t", control, "#{pane_title}").strip() \
            != "control-title":
        assert time.monotonic() < deadline, "tmux ignores OSC 52 / OSC 2: no control"
        time.sleep(0.05)
    tmux("kill-pane", "-t", control)
    tmux("delete-buffer")
    assert tmux("list-buffers") == ""

    tmux("pipe-pane", "-O", "-t", pane, f"cat >> {shlex.quote(str(raw_log))}")
    assert fmt("#{pane_pipe}") == "1"
    assert fmt("#{pane_width}x#{pane_height}") == f"{WIDTH}x{HEIGHT}"
    go.touch()

    titles: set[str] = set()

    def screen(escapes: bool = False) -> str:
        titles.add(fmt("#{pane_title}"))
        return tmux("capture-pane", "-p", *(["-e"] if escapes else []), "-t", pane)

    def until_shown(text: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while text not in (shown := screen()):
            assert fmt("#{pane_dead}") == "0", f"pvc-tui exited:\n{shown}"
            assert time.monotonic() < deadline, f"{text!r} not shown:\n{shown}"
            time.sleep(0.1)
        return shown

    def raw_with(marker: bytes, timeout: float = 5) -> bytes:
        """raw.log once `marker` has reached it (cat writes it after tmux reads it)."""
        deadline = time.monotonic() + timeout
        while marker not in (data := raw_log.read_bytes() if raw_log.exists() else b""):
            assert time.monotonic() < deadline, f"{marker!r} not in raw.log"
            time.sleep(0.05)
        return data

    until_shown("zk connected")
    until_shown("web1")
    tmux("send-keys", "-t", pane, "2")
    until_shown("POWER")  # the VM table's column header: the VM view is showing
    tmux("send-keys", "-t", pane, "c")
    until_shown(booted)
    before = raw_with(booted.encode())
    assert before.startswith(b"\x1b[?1049h")  # recorded from Textual's very first byte
    assert DA1 not in before  # Textual sends DECRQM queries (`CSI ? 2026 $ p`), not DA1
    assert not [f for f in FORBIDDEN if f in before]

    write(log, PAYLOAD + f"{end}\n".encode())
    until_shown(end)
    write(log, f"\x1b]2;pwned-partial\x1b\\\x1b[6n{partial} login: ".encode())  # a prompt
    shown = until_shown(partial)
    raw = raw_with(partial.encode())
    after = raw[len(before):]

    assert [f for f in FORBIDDEN if f in raw] == []
    assert raw.count(DA1) == 0
    assert re.findall(rb"\x1b[\]P_^X]", after) == []  # no OSC/DCS/APC/PM/SOS after payload
    assert b"\x07" not in after
    text = raw.decode("utf-8")  # Textual writes UTF-8; no C1 control may be in it
    assert [c for c in text if "\x80" <= c <= "\x9f"] == []
    escaped = screen(escapes=True)
    assert [f for f in ("\x1b]", "ZXZpbA", "pwned", "\x1b[6n", "\x1b[c", "\x1bP", "\x9b")
            if f in escaped] == []
    for visible in ("clip-write", "clip-query", "title-bel", "title-st",
                    "da1-dsr-decrqss-c1", "|in-one-line"):
        assert visible in shown, visible
    assert "pwned" not in shown and "ZXZpbA" not in shown

    assert tmux("list-buffers") == ""  # no clipboard write reached tmux
    assert not [t for t in titles | {fmt("#{pane_title}")} if "pwned" in t], titles
    assert "zk connected" in shown and "VMs 1" in shown  # still the live dashboard
    assert fmt("#{pane_dead}") == "0"

    pid, server = int(fmt("#{pane_pid}")), int(fmt("#{pid}"))
    tmux("send-keys", "-t", pane, "q")
    deadline = time.monotonic() + 10
    while (status := fmt("#{pane_dead}:#{pane_dead_status}")) in ("0:", "1:"):
        assert time.monotonic() < deadline, f"q did not quit ({status}):\n{screen()}"
        if status == "1:" and is_zombie(pid):
            # tmux built with libutempter can miss the SIGCHLD (tmux/tmux#311, #4559): the
            # process has exited but is not reaped. Signal our own server to reap it.
            os.kill(server, signal.SIGCHLD)
        time.sleep(0.1)
    assert status == "1:0"
    assert tmux("list-buffers") == ""
    dash_log = state / "pvc-tui" / "dashboard.log"
    assert "Traceback" not in (dash_log.read_text() if dash_log.exists() else "")
