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
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException

from node_agent.console_file import ConsoleFile, FilePosition
from node_agent.console_writer import ConsoleWriter, publish_together
from node_agent.file_watch import DirectoryWatcher
from pvc_tui.cluster.console import MAX_LINE_BYTES

log = logging.getLogger(__name__)
ENDED_GRACE = 10.0  # seconds a stopped guest instance is not tailed again
LOADED_TICK_CONSOLES = 100  # busy consoles in one tick at which the tick is 1.25x long


@dataclass(frozen=True)
class TailSpec:
    """What the agent knows about a running VM's console."""

    name: str
    path: Path
    instance: int  # the domain's ID: a new one means the guest started again
    append: bool = False  # libvirt keeps the log across starts (append='on')
    arrived_live: bool = False  # it came here by live migration: no restart marker


class ConsolePaths:
    """Where each running VM's console log is, read from its live XML once per start."""

    def __init__(self, node: str, default_dir: Path,
                 read_log: Callable[[str], tuple[str | None, bool]]) -> None:
        self._node = node
        self._default_dir = default_dir
        self._read_log = read_log
        self._known: dict[str, tuple[Path, bool, int]] = {}  # uuid -> path, append, instance
        self._arrived: dict[str, int] = {}  # uuid -> the instance that arrived live

    def specs(self, running: list[tuple[str, str, dict[str, Any], int]]) -> dict[str, TailSpec]:
        """TailSpecs for (uuid, name, VM record, domain instance) of the running VMs."""
        specs: dict[str, TailSpec] = {}
        for uuid, name, record, instance in running:
            known = self._known.get(uuid)
            if known is None or known[2] != instance:
                named, append = self._read_log(uuid)
                path = Path(named) if named else self._default_dir / f"{name}.log"
                known = self._known[uuid] = (path, append, instance)
            move = record.get("migration") or {}
            if move.get("target") == self._node and move.get("phase") in ("migrating", "done"):
                self._arrived[uuid] = instance  # this very guest instance came in live
            live = self._arrived.get(uuid) == instance
            specs[uuid] = TailSpec(name, known[0], instance, known[1], live)
        for uuid in set(self._known) - set(specs):
            del self._known[uuid]  # read the path again when it runs again
            self._arrived.pop(uuid, None)
        return specs


@dataclass
class _Tail:
    spec: TailSpec
    file: ConsoleFile
    writer: ConsoleWriter


class ConsoleManager:
    """All console tailers of one node."""

    def __init__(self, zk: KazooClient, node: str, max_lines: int, interval: float,
                 publish_interval: float, resync: Callable[[], None] | None = None) -> None:
        self._zk = zk
        self._resync = resync  # asks for another `sync` (a start that had to wait)
        self._node = node
        self._max_lines = max_lines
        self._interval = interval
        self._publish_interval = publish_interval
        self._tails: dict[str, _Tail] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._changed: set[str] = set()  # file names reported by the watcher
        self._by_name: dict[str, set[str]] = {}  # log file name -> uuids
        self._closing: list[_Tail] = []  # tails to finish on the console thread
        self._closing_uuids: set[str] = set()
        # uuid -> (guest instance whose tail ended, when): a domain view from before the
        # stop can arrive just after it; IDs can repeat after a libvirtd restart, so the
        # guard holds only briefly
        self._ended: dict[str, tuple[int, float]] = {}
        # Lines are published at most every publish_interval anyway: let file events
        # gather for a fifth of that, so hundreds of busy logs cost few wake-ups.
        self._watcher = DirectoryWatcher(self._on_file, poll_interval=interval,
                                         batch_delay=publish_interval / 5)
        self._thread = threading.Thread(target=self._run, name="console", daemon=True)
        self.bytes_published = 0

    def start(self) -> None:
        """Begin watching and publishing."""
        self._watcher.start()
        self._thread.start()

    def stop(self) -> None:
        """Stop; the last lines of every tail are published and handed over."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)
        self._watcher.stop()
        with self._lock:
            closing = self._closing + list(self._tails.values())
            self._closing, self._tails = [], {}
        for tail in closing:  # the console thread has ended: this thread owns them now
            self._close(tail)

    def sync(self, running: dict[str, TailSpec]) -> None:
        """Tail exactly the VMs in `running` (uuid -> spec); safe to call on every pass.

        New tailers are read on the next sweep or change."""
        with self._lock:
            current = dict(self._tails)
        for uuid in set(current) - set(running):
            self._ended[uuid] = (current[uuid].spec.instance, time.monotonic())
            self._finish(uuid, current[uuid])
        for uuid, spec in running.items():
            ended = self._ended.get(uuid)
            if ended and ended[0] == spec.instance and time.monotonic() - ended[1] < ENDED_GRACE:
                # a guest instance never runs again: a view of the domains from before
                # it stopped must not open a second tail (and a second restart marker)
                continue
            tail = current.get(uuid)
            if tail is not None and (tail.spec.path, tail.spec.instance) == (spec.path,
                                                                           spec.instance):
                continue
            if tail is not None:
                self._finish(uuid, tail)
            with self._lock:
                closing = uuid in self._closing_uuids
            if closing:
                # one writer per buffer: the old tail hands over first (the console
                # thread then asks for another sync), or two writers would race
                continue
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
            self._by_name.setdefault(spec.path.name, set()).add(uuid)
        log.info("console of %s: tailing %s", spec.name, spec.path)

    def _finish(self, uuid: str, tail: _Tail) -> None:
        """Stop tailing; the console thread (the only one touching writers) publishes the
        last lines and hands the buffer over."""
        with self._lock:
            self._tails.pop(uuid, None)
            self._by_name.get(tail.spec.path.name, set()).discard(uuid)
            self._closing.append(tail)
            self._closing_uuids.add(uuid)
        self._wake.set()

    def _close(self, tail: _Tail) -> None:
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
        """Publish every dirty buffer together, at most once per `publish_interval` (one
        transaction for all); files are read when a publish is due, or on the sweep."""
        timeout = self._interval
        dirty: dict[str, _Tail] = {}
        last_publish = 0.0
        next_sweep = time.monotonic() + self._interval
        while not self._stop.is_set():
            self._wake.wait(timeout)
            self._wake.clear()
            now = time.monotonic()
            due = last_publish + self._publish_interval
            sweep = now >= next_sweep  # a safety net: every file now and then
            if now < due and not sweep and not self._closing:
                timeout = due - now  # gather changes until the next publish may happen
                continue
            with self._lock:
                tails = dict(self._tails)
                changed, self._changed = self._changed, set()
                closing, self._closing = self._closing, []
            if closing and not self._zk.connected:
                # ZooKeeper away: a release now would wait in kazoo's queue with this
                # thread, and every other console unread; finish them once it is back
                with self._lock:
                    self._closing[:0] = closing
                closing = []
            for tail in closing:
                dirty.pop(tail.writer.uuid, None)
                self._close(tail)
            if closing:
                with self._lock:
                    self._closing_uuids.difference_update(t.writer.uuid for t in closing)
                if self._resync is not None:
                    self._resync()
            if sweep:
                next_sweep = now + self._interval
                todo = tails
            else:  # only the tails whose file changed (by name: a shared name costs a read)
                todo = {u: tails[u] for name in changed for u in self._by_name.get(name, ())
                        if u in tails}
            for uuid, tail in todo.items():
                if self._service(tail):
                    dirty[uuid] = tail
            for uuid in set(dirty) - set(tails):
                del dirty[uuid]
            if dirty:
                last_publish = time.monotonic()
                # Under load (many busy consoles per tick) the tick stretches up to 1.25x:
                # fewer, larger transactions; a quiet node keeps the short tick.
                load = min(1.0, len(dirty) / LOADED_TICK_CONSOLES)
                last_publish += self._publish_interval * 0.25 * load
                dirty = self._publish(list(dirty.values()))
            timeout = max(0.005, next_sweep - time.monotonic())
            if dirty or self._closing:  # held back (handover, ZooKeeper away): soon again
                timeout = min(timeout, self._publish_interval)

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

    def _service(self, tail: _Tail) -> bool:
        """Read new lines; whether the buffer now has something to publish."""
        try:
            self._read(tail)
        except OSError as exc:
            log.warning("console of %s: %s", tail.spec.name, exc)
            return False
        return tail.writer.dirty()

    def _publish(self, tails: list[_Tail]) -> dict[str, _Tail]:
        """Publish these buffers together; returns those still to publish."""
        if not self._zk.connected:
            # ZooKeeper away: a request sent now would wait in kazoo's queue, and this
            # thread with it, so the files would go unread. Keep reading instead: each
            # writer holds its newest lines (bounded), published once ZooKeeper is back.
            return {t.writer.uuid: t for t in tails if t.writer.dirty()}
        ready = [t for t in tails if not t.writer.held()]  # held: a handover under way
        try:
            self.bytes_published += publish_together(self._zk, [t.writer for t in ready])
        except (KazooException, RuntimeError) as exc:  # ZooKeeper away: lines wait, bounded
            log.warning("console publish failed (%s); will retry", exc)
        return {t.writer.uuid: t for t in tails if t.writer.dirty()}
