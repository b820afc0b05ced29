"""Tailing the serial console logs of this node's running VMs into ZooKeeper.

One tailer per running VM, started and stopped by the agent's passes (`sync`). A single
thread wakes on file changes (inotify where available, else a poll every
`console_log_interval`), reads only new bytes, and publishes each VM's new lines at
most once per `console_publish_interval`. A buffer continues across agent restarts
(the file position is kept in the buffer's meta record) and migrations (the new owner
appends after what is in ZooKeeper); a restart of the guest's log starts a new
generation with a visible marker line.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException

from node_agent.console_file import ConsoleFile, FilePosition
from node_agent.console_writer import ConsoleWriter
from node_agent.file_watch import DirectoryWatcher
from pvc_tui.cluster.console import MAX_LINE_BYTES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TailSpec:
    """What the agent knows about a running VM's console."""

    name: str
    path: Path
    instance: int  # the domain's ID: a new one means the guest started again
    append: bool = False  # libvirt keeps the log across starts (append='on')
    arrived_live: bool = False  # it came here by live migration: no restart marker


@dataclass
class _Tail:
    spec: TailSpec
    file: ConsoleFile
    writer: ConsoleWriter
    last_publish: float = 0.0


class ConsoleManager:
    """All console tailers of one node."""

    def __init__(self, zk: KazooClient, node: str, max_lines: int, interval: float,
                 publish_interval: float) -> None:
        self._zk = zk
        self._node = node
        self._max_lines = max_lines
        self._interval = interval
        self._publish_interval = publish_interval
        self._tails: dict[str, _Tail] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._changed: set[str] = set()  # file names reported by the watcher
        self._watcher = DirectoryWatcher(self._on_file, poll_interval=interval)
        self._thread = threading.Thread(target=self._run, name="console", daemon=True)
        self.bytes_published = 0

    def start(self) -> None:
        """Begin watching and publishing."""
        self._watcher.start()
        self._thread.start()

    def stop(self) -> None:
        """Publish what is pending, then stop."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)
        self._watcher.stop()

    def sync(self, running: dict[str, TailSpec]) -> None:
        """Tail exactly the VMs in `running` (uuid -> spec); safe to call on every pass."""
        with self._lock:
            current = dict(self._tails)
        for uuid in set(current) - set(running):
            self._finish(uuid, current[uuid])
        for uuid, spec in running.items():
            tail = current.get(uuid)
            if tail is not None and (tail.spec.path, tail.spec.instance) == (spec.path,
                                                                           spec.instance):
                continue
            if tail is not None:
                self._finish(uuid, tail)
            try:
                self._begin(uuid, spec)
            except KazooException as exc:
                log.warning("console of %s: cannot start yet (%s)", spec.name, exc)
        self._wake.set()

    def _begin(self, uuid: str, spec: TailSpec) -> None:
        writer = ConsoleWriter(self._zk, uuid, self._node, self._max_lines,
                               after_handover=spec.arrived_live)
        source = writer.loaded_source
        here = writer.loaded_node in ("", self._node) and source.get("inode") is not None
        here = here and source.get("node", self._node) == self._node
        position = (FilePosition(int(source["inode"]), int(source.get("offset", 0)))
                    if here else None)
        resume = None
        if here and source.get("instance") == spec.instance:
            resume = position  # the same running guest (e.g. this agent restarted)
        elif spec.arrived_live:
            pass  # the same guest, a new log file on this node: continue from its start
        elif writer.next_seq:
            writer.marker(f"--- {spec.name} started on {self._node} ---", new_generation=True)
            if spec.append:
                resume = position  # libvirt kept the old text: continue after it
        file = ConsoleFile(spec.path, max_line_bytes=MAX_LINE_BYTES, resume=resume)
        self._watcher.watch(spec.path.parent)
        with self._lock:
            self._tails[uuid] = _Tail(spec, file, writer)
        log.info("console of %s: tailing %s", spec.name, spec.path)

    def _finish(self, uuid: str, tail: _Tail) -> None:
        with self._lock:
            self._tails.pop(uuid, None)
        try:
            self._read(tail)
            self.bytes_published += tail.writer.release()
        except (KazooException, RuntimeError, OSError) as exc:
            log.warning("console of %s: last lines not published: %s", tail.spec.name, exc)
        tail.file.close()

    def _on_file(self, file_name: str) -> None:
        with self._lock:
            self._changed.add(file_name)
        self._wake.set()

    def _run(self) -> None:
        timeout = self._interval
        while not self._stop.is_set():
            self._wake.wait(timeout)
            self._wake.clear()
            with self._lock:
                tails = dict(self._tails)
                self._changed.clear()
            # Reading a file that did not change costs one small read: service them all.
            next_due = min((due for tail in tails.values()
                            if (due := self._service(tail)) is not None), default=None)
            timeout = self._interval
            if next_due is not None:  # a publish held back by the rate bound
                timeout = min(timeout, max(0.01, next_due - time.monotonic()))

    def _read(self, tail: _Tail) -> None:
        for _ in range(64):  # bounded: 64 MiB per wake at most, then the next wake
            result = tail.file.read()
            if result.restarted and tail.writer.next_seq:
                tail.writer.marker("--- console restarted ---", new_generation=True)
            for line in result.lines:
                tail.writer.append(line.text, line.cont)
            tail.writer.set_partial(result.partial)
            if not result.more:
                break
        position = tail.file.position
        tail.writer.source = ({**asdict(position), "instance": tail.spec.instance,
                               "node": self._node} if position else {})

    def _service(self, tail: _Tail) -> float | None:
        """Read and (rate permitting) publish; returns when a held-back publish is due."""
        try:
            self._read(tail)
        except OSError as exc:
            log.warning("console of %s: %s", tail.spec.name, exc)
            return None
        if not tail.writer.dirty():
            return None
        due = tail.last_publish + self._publish_interval
        if time.monotonic() < due:
            return due
        if tail.writer.held():
            return time.monotonic() + 0.05  # the previous node is still handing over
        try:
            self.bytes_published += tail.writer.publish()
            tail.last_publish = time.monotonic()
        except (KazooException, RuntimeError) as exc:  # ZooKeeper away: lines wait, bounded
            log.warning("console of %s: publish failed (%s); will retry", tail.spec.name, exc)
            return time.monotonic() + self._interval
        return None
