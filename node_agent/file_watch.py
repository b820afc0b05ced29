"""Waking on file changes in directories: Linux inotify (through ctypes), else polling.

Only a wake-up service: it says *which* file name changed, never what changed; the caller
reads the file (level-triggered), so a coalesced or lost event costs nothing but latency.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import select
import struct
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

IN_MODIFY = 0x0002
IN_ATTRIB = 0x0004
IN_CLOSE_WRITE = 0x0008
IN_MOVED_FROM = 0x0040
IN_MOVED_TO = 0x0080
IN_CREATE = 0x0100
IN_DELETE = 0x0200
IN_DELETE_SELF = 0x0400
IN_MOVE_SELF = 0x0800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
WATCH_MASK = (IN_MODIFY | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_CLOSE_WRITE
              | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
_EVENT = struct.Struct("iIII")          # struct inotify_event: wd, mask, cookie, len; name[len]
_READ_BYTES = 64 * 1024

Snapshot = dict[str, tuple[int, int, int]]


class _Inotify:
    """The three inotify system calls through libc (None from `open` if unavailable)."""

    def __init__(self, libc: ctypes.CDLL, fd: int) -> None:
        self._libc = libc
        self.fd = fd

    @classmethod
    def open(cls) -> _Inotify | None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            init1 = libc.inotify_init1
        except (OSError, AttributeError):
            return None
        init1.argtypes, init1.restype = [ctypes.c_int], ctypes.c_int
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        libc.inotify_add_watch.restype = ctypes.c_int
        fd = init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            log.warning("inotify unavailable (%s): polling for file changes",
                        os.strerror(ctypes.get_errno()))
            return None
        return cls(libc, fd)

    def add_watch(self, directory: Path) -> int:
        wd = int(self._libc.inotify_add_watch(self.fd, os.fsencode(directory), WATCH_MASK))
        if wd < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), str(directory))
        return wd

    def read_events(self) -> list[tuple[int, int, str]]:
        """(wd, mask, name) of the queued events; [] if none."""
        try:
            buf = os.read(self.fd, _READ_BYTES)
        except BlockingIOError:
            return []
        events = []
        pos = 0
        while pos + _EVENT.size <= len(buf):
            wd, mask, _cookie, length = _EVENT.unpack_from(buf, pos)
            pos += _EVENT.size
            name = os.fsdecode(buf[pos:pos + length].rstrip(b"\0"))
            pos += length
            events.append((wd, mask, name))
        return events

    def close(self) -> None:
        os.close(self.fd)


class DirectoryWatcher:
    """Calls `on_change(file_name)` (from its own thread) when a file in one of the watched
    directories is modified, created, deleted, moved in/out or truncated.

    Names are coalesced per wake-up (one call per name per batch of events); with
    `batch_delay`, events gather that long after the first one before they are read.
    If the kernel's event queue overflows, or a watched directory appears late, every
    file in the directory is reported.  A directory that does not exist (yet) or
    disappears is retried every `poll_interval`.  Exceptions from `on_change` are
    logged, never fatal to the thread.
    """

    def __init__(self, on_change: Callable[[str], None], poll_interval: float = 0.5,
                 force_polling: bool = False, batch_delay: float = 0.0) -> None:
        self._on_change = on_change
        self._interval = poll_interval
        self._batch_delay = batch_delay  # let events gather this long: fewer, larger batches
        self._inotify = None if force_polling else _Inotify.open()
        self._lock = threading.Lock()
        self._dirs: dict[Path, int | None] = {}       # directory -> inotify wd (None: not yet)
        self._snapshots: dict[Path, Snapshot] = {}    # polling mode
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def uses_inotify(self) -> bool:
        """True when the kernel tells us about changes; False when polling."""
        return self._inotify is not None

    def watch(self, directory: Path) -> None:
        """Watch `directory` too (idempotent); it need not exist yet."""
        directory = Path(directory)
        if self._stopping:
            raise RuntimeError("DirectoryWatcher is stopped")
        with self._lock:
            if directory in self._dirs:
                return
            self._dirs[directory] = None
            if self._inotify is None:
                self._snapshots[directory] = _snapshot(directory)
            else:
                self._try_add(directory, report=False)
        self._wake()                            # re-evaluate the retry timeout

    def start(self) -> None:
        """Start the watching thread."""
        if self._thread is not None or self._stopping:
            raise RuntimeError("DirectoryWatcher can be started once")
        self._thread = threading.Thread(target=self._run, name="file-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop and join the thread; release the descriptors.  Idempotent."""
        if self._stopping:
            return
        self._stopping = True
        self._wake()
        if self._thread is not None:
            self._thread.join()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        if self._inotify is not None:
            self._inotify.close()

    @property
    def thread(self) -> threading.Thread | None:
        """The watching thread (for diagnostics and tests)."""
        return self._thread

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # a full pipe wakes the thread anyway
            os.write(self._wake_w, b"!")

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        fds = [self._wake_r] + ([self._inotify.fd] if self._inotify else [])
        while not self._stopping:
            with self._lock:
                waiting = self._inotify is None or None in self._dirs.values()
            ready, _, _ = select.select(fds, [], [], self._interval if waiting else None)
            if self._stopping:
                return
            if self._wake_r in ready:
                _drain(self._wake_r)
            elif ready and self._batch_delay:  # interruptible by stop()
                select.select([self._wake_r], [], [], self._batch_delay)
            names: list[str] = []
            if self._inotify is None:
                if not ready:
                    names = self._poll()
            else:
                names = self._inotify_names(self._inotify.read_events())
            for name in dict.fromkeys(names):
                try:
                    self._on_change(name)
                except Exception:
                    log.exception("file change callback failed for %r", name)

    def _inotify_names(self, events: list[tuple[int, int, str]]) -> list[str]:
        names: list[str] = []
        with self._lock:
            by_wd = {w: d for d, w in self._dirs.items() if w is not None}
            for wd, mask, name in events:
                if mask & IN_Q_OVERFLOW:
                    log.warning("inotify queue overflowed: rescanning watched directories")
                    names.extend(n for d in by_wd.values() for n in _snapshot(d))
                elif mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF):
                    if wd in by_wd:               # directory gone: retry it by polling
                        self._dirs[by_wd.pop(wd)] = None
                elif name and wd in by_wd:       # (not a directory moved away and forgotten)
                    names.append(name)
            for directory, known in list(self._dirs.items()):
                if known is None:
                    names.extend(self._try_add(directory, report=True))
        return names

    def _try_add(self, directory: Path, report: bool) -> list[str]:
        """Add an inotify watch (lock held); on success with `report`, the dir's files."""
        assert self._inotify is not None
        try:
            self._dirs[directory] = self._inotify.add_watch(directory)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                log.warning("cannot watch %s: %s (retrying)", directory, exc)
            return []
        return list(_snapshot(directory)) if report else []

    def _poll(self) -> list[str]:
        names: list[str] = []
        with self._lock:
            for directory, old in self._snapshots.items():
                new = _snapshot(directory)
                names.extend(n for n in old.keys() | new.keys() if old.get(n) != new.get(n))
                self._snapshots[directory] = new
        return sorted(names)


def _snapshot(directory: Path) -> Snapshot:
    """name -> (inode, size, mtime_ns) of the files in `directory` ({} if unreadable)."""
    result: Snapshot = {}
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                try:
                    st = entry.stat()
                except OSError:
                    continue
                result[entry.name] = (st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError:
        pass
    return result


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass
