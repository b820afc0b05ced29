"""Starting and ending the sandbox's own processes, strictly by PID.

A process is remembered as (pid, start time) so that a recycled PID is never
signalled. Waiting for exit uses a pidfd (no sleep-and-poll).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessRef:
    """A process the sandbox started: its PID and kernel start time (clock ticks)."""

    pid: int
    start_time: int

    @classmethod
    def of(cls, pid: int) -> ProcessRef:
        """Reference the running process `pid` (raises ProcessLookupError if gone)."""
        started = _start_time(pid)
        if started is None:
            raise ProcessLookupError(pid)
        return cls(pid, started)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'
    return raw[raw.rindex(")") + 2 :].split()


def _start_time(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def is_running(ref: ProcessRef) -> bool:
    """True if that very process still exists and is not a zombie."""
    fields = _stat_fields(ref.pid)
    return bool(fields) and fields[0] != "Z" and int(fields[19]) == ref.start_time  # type: ignore[index]


def spawn(argv: list[str], log_path: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> tuple[ProcessRef, subprocess.Popen[bytes]]:
    """Start `argv` in its own session with output to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, env=env, cwd=cwd, close_fds=True,
        )
    return ProcessRef.of(proc.pid), proc


def wait_exit(ref: ProcessRef, timeout: float) -> bool:
    """Wait up to `timeout` s for the process to end; True if it has."""
    if not is_running(ref):
        return True
    try:
        fd = os.pidfd_open(ref.pid)
    except ProcessLookupError:
        return True
    try:
        if not is_running(ref):
            return True
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return not is_running(ref)
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(ref.pid, os.WNOHANG)  # reap if it is our child
                return True
    finally:
        os.close(fd)


def terminate(refs: list[ProcessRef], timeout: float = 10.0) -> None:
    """SIGTERM each process, wait, then SIGKILL whatever is left; only if still ours."""
    live = [r for r in refs if is_running(r)]
    for ref in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(ref.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for ref in live:
        if not wait_exit(ref, max(0.0, deadline - time.monotonic())) and is_running(ref):
            with contextlib.suppress(ProcessLookupError):
                os.kill(ref.pid, signal.SIGKILL)
            wait_exit(ref, 5.0)
