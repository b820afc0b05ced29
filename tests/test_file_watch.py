"""DirectoryWatcher: inotify and polling modes on real directories."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from node_agent.file_watch import DirectoryWatcher

POLL = 0.05
TIMEOUT = 3.0


class Recorder:
    """Collects the names reported by a watcher."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.cond = threading.Condition()

    def __call__(self, name: str) -> None:
        with self.cond:
            self.names.append(name)
            self.cond.notify_all()

    def clear(self) -> None:
        with self.cond:
            self.names.clear()

    def wait_for(self, name: str, timeout: float = TIMEOUT) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: name in self.names, timeout)


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


@pytest.fixture(params=["inotify", "polling"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def watched(tmp_path: Path, mode: str) -> Iterator[tuple[DirectoryWatcher, Recorder, Path]]:
    recorder = Recorder()
    watcher = DirectoryWatcher(recorder, poll_interval=POLL, force_polling=mode == "polling")
    if mode == "inotify" and not watcher.uses_inotify:
        watcher.stop()
        pytest.skip("inotify unavailable here")
    directory = tmp_path / "logs"
    directory.mkdir()
    watcher.watch(directory)
    watcher.watch(directory)                     # idempotent
    watcher.start()
    yield watcher, recorder, directory
    watcher.stop()


def test_detects_create_append_truncate_delete_rename_in(
        watched: tuple[DirectoryWatcher, Recorder, Path], tmp_path: Path) -> None:
    _, recorder, directory = watched
    log = directory / "vm1.log"
    log.write_bytes(b"boot\n")
    assert recorder.wait_for("vm1.log")
    time.sleep(2 * POLL)
    for action in (lambda: append(log, b"more\n"),
                   lambda: os.truncate(log, 0),
                   log.unlink):
        time.sleep(2 * POLL)                     # let the previous action's events settle
        recorder.clear()
        action()
        assert recorder.wait_for("vm1.log")
    outside = tmp_path / "elsewhere.log"
    outside.write_bytes(b"x\n")
    recorder.clear()
    outside.rename(directory / "vm2.log")
    assert recorder.wait_for("vm2.log")
    recorder.clear()
    (directory / "vm2.log").rename(tmp_path / "gone.log")
    assert recorder.wait_for("vm2.log")


def test_several_directories(watched: tuple[DirectoryWatcher, Recorder, Path],
                             tmp_path: Path) -> None:
    watcher, recorder, _ = watched
    other = tmp_path / "other"
    other.mkdir()
    watcher.watch(other)
    (other / "vm3.log").write_bytes(b"hi\n")
    assert recorder.wait_for("vm3.log")


def test_directory_created_later(watched: tuple[DirectoryWatcher, Recorder, Path],
                                 tmp_path: Path) -> None:
    watcher, recorder, _ = watched
    late = tmp_path / "late"
    watcher.watch(late)
    time.sleep(2 * POLL)
    late.mkdir()
    (late / "vm4.log").write_bytes(b"hi\n")
    assert recorder.wait_for("vm4.log")
    time.sleep(2 * POLL)
    recorder.clear()
    append(late / "vm4.log", b"again\n")
    assert recorder.wait_for("vm4.log")


def test_callback_error_does_not_kill_the_thread(tmp_path: Path, mode: str) -> None:
    recorder = Recorder()

    def flaky(name: str) -> None:
        recorder(name)
        raise RuntimeError("boom")

    watcher = DirectoryWatcher(flaky, poll_interval=POLL, force_polling=mode == "polling")
    watcher.watch(tmp_path)
    watcher.start()
    try:
        (tmp_path / "a.log").write_bytes(b"1\n")
        assert recorder.wait_for("a.log")
        (tmp_path / "b.log").write_bytes(b"2\n")
        assert recorder.wait_for("b.log")
    finally:
        watcher.stop()


def test_stop_is_prompt_and_idle_is_cheap(
        watched: tuple[DirectoryWatcher, Recorder, Path]) -> None:
    watcher, _, directory = watched
    for i in range(20):
        (directory / f"vm{i}.log").write_bytes(b"x\n")
    time.sleep(0.2)
    thread = watcher.thread
    assert thread is not None and thread.native_id is not None

    def cpu() -> float:
        for t in psutil.Process().threads():
            if t.id == thread.native_id:
                return float(t.user_time + t.system_time)
        raise AssertionError("watcher thread not found")

    before = cpu()
    time.sleep(1.0)
    assert cpu() - before < 0.1                  # no busy loop (loose: tens of ms at most)
    started = time.monotonic()
    watcher.stop()
    assert time.monotonic() - started < 1.0
    assert not thread.is_alive()
    watcher.stop()                               # idempotent


def test_inotify_used_by_default(tmp_path: Path) -> None:
    watcher = DirectoryWatcher(lambda name: None)
    polling = DirectoryWatcher(lambda name: None, force_polling=True)
    try:
        assert not polling.uses_inotify
        if not watcher.uses_inotify:
            pytest.skip("inotify unavailable here")
    finally:
        watcher.stop()
        polling.stop()
