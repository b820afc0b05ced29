"""Guest console buffers in ZooKeeper: the format, and reading them (tail, follow).

Each VM's buffer is a meta record at /pvc/consoles/<uuid> plus chunks of CHUNK_LINES
lines at /pvc/consoles/<uuid>/<index>, where chunk k holds sequence numbers
[k * CHUNK_LINES, (k + 1) * CHUNK_LINES). Every line has a sequence number that only
grows (across restarts and migrations), so a reader asks for "lines after N" and knows
exactly how many it missed if it fell behind the buffer. A writer rewrites only the
current chunk and the meta record, never the whole buffer.

Text is kept losslessly: lines are decoded from the guest's bytes with
errors="surrogateescape" and JSON keeps the lone surrogates, so `raw_bytes()` gives the
guest's bytes back. Nothing here is safe to print: pass text through the sanitizer.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kazoo.exceptions import ConnectionLoss, NoAuthError, NoNodeError, OperationTimeoutError
from kazoo.recipe.watchers import DataWatch

from pvc_tui.cluster import layout
from pvc_tui.cluster.errors import InvalidRequest, NotAllowed

if TYPE_CHECKING:
    from pvc_tui.cluster.client import ClusterClient

CHUNK_LINES = 16
MAX_LINE_BYTES = 4096  # longer lines arrive cut into pieces (cont=True)
MAX_BUFFER_LINES = 100_000
FLAG_CONT = 1  # the line continues in the next one (cut at MAX_LINE_BYTES)
FLAG_MARKER = 2  # written by pvc (restart, gap), not by the guest

META_FIELDS: dict[str, Any] = {
    "generation": 0,  # + 1 whenever the guest's log starts again (restart, truncation)
    "first_seq": 0,  # the oldest line still in the buffer
    "next_seq": 0,  # the sequence number the next line will get
    "partial": "",  # the unterminated last line (a prompt), not yet a line
    "node": "",  # the node whose agent writes the buffer now
    "source": {},  # that agent's position in its log file: {"inode", "offset"}
    "updated_at": 0.0,
    "publish": "",  # token of the request that wrote this (lets a writer recognise its own)
}


def console_path(uuid: str) -> str:
    """Path of a VM's console meta record."""
    return f"{layout.CONSOLES}/{uuid}"


def chunk_path(uuid: str, index: int) -> str:
    """Path of chunk `index` of a VM's console buffer."""
    return f"{layout.CONSOLES}/{uuid}/{index:012d}"


def chunk_of(seq: int) -> int:
    """The chunk holding sequence number `seq`."""
    return seq // CHUNK_LINES


@dataclass(frozen=True)
class ConsoleLine:
    """One line of a guest's console (untrusted text)."""

    seq: int
    text: str
    cont: bool = False  # no newline after it: the next line continues it
    marker: bool = False  # pvc's own line (e.g. a restart), not the guest's

    def raw_bytes(self) -> bytes:
        """The guest's bytes for this line, newline included unless `cont`."""
        return self.text.encode("utf-8", "surrogateescape") + (b"" if self.cont else b"\n")


@dataclass(frozen=True)
class Gap:
    """Lines the reader missed because it fell further behind than the buffer holds."""

    missed: int


@dataclass(frozen=True)
class Partial:
    """The current unterminated last line (e.g. `login: `), replaced by the next event."""

    text: str


@dataclass(frozen=True)
class Ended:
    """The follow ended: the VM was undefined."""

    reason: str


ConsoleEvent = ConsoleLine | Gap | Partial | Ended


def encode_entry(text: str, flags: int) -> Any:
    """A line as stored in a chunk: plain text, or [text, flags]."""
    return [text, flags] if flags else text


def encode_chunk(entries: list[Any]) -> bytes:
    """A chunk's content (JSON, ASCII-only so lone surrogates survive)."""
    return json.dumps(entries, ensure_ascii=True, separators=(",", ":")).encode()


def decode_chunk(data: bytes, first_seq: int) -> list[ConsoleLine]:
    """The lines of a chunk whose first line has sequence number `first_seq`."""
    try:
        entries = json.loads(data.decode("ascii"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return []
    lines = []
    for offset, entry in enumerate(entries if isinstance(entries, list) else []):
        if entry is None:  # a line the writer had to drop (counted as a gap by readers)
            continue
        text, flags = (entry, 0) if isinstance(entry, str) else (
            (entry[0], entry[1]) if isinstance(entry, list) and len(entry) == 2
            and isinstance(entry[0], str) and isinstance(entry[1], int) else ("", 0))
        lines.append(ConsoleLine(first_seq + offset, text, bool(flags & FLAG_CONT),
                                 bool(flags & FLAG_MARKER)))
    return lines


def read_meta(client: ClusterClient, uuid: str) -> dict[str, Any] | None:
    """A VM's console meta record, or None if it never logged."""
    try:
        data, _ = client.zk.get(console_path(uuid))
    except NoNodeError:
        return None
    try:
        return layout.decode(data, META_FIELDS)
    except layout.RecordError:
        return None


def read_lines(client: ClusterClient, uuid: str, start: int, end: int) -> list[ConsoleLine]:
    """Lines with sequence numbers in [start, end) that are still stored."""
    lines: list[ConsoleLine] = []
    if end <= start:
        return lines
    for index in range(chunk_of(start), chunk_of(end - 1) + 1):
        try:
            data, _ = client.zk.get(chunk_path(uuid, index))
        except NoNodeError:
            continue
        lines.extend(line for line in decode_chunk(data, index * CHUNK_LINES)
                     if start <= line.seq < end)
    return lines


def check_lines(lines: int | None) -> int | None:
    """A --lines value: None (everything), or 1..MAX_BUFFER_LINES."""
    if lines is not None and not 1 <= lines <= MAX_BUFFER_LINES:
        raise InvalidRequest(f"--lines must be between 1 and {MAX_BUFFER_LINES}")
    return lines


def tail(client: ClusterClient, name: str, lines: int | None = None
         ) -> tuple[list[ConsoleLine], str] | None:
    """The last `lines` lines (default: all) and the partial line; None if never logged."""
    check_lines(lines)
    vm = client.get_vm(name)
    meta = read_meta(client, vm.uuid)
    if meta is None:
        client.zk.get(layout.CONSOLES)  # "never logged", or not allowed to know
        return None
    end = meta["next_seq"]
    start = max(meta["first_seq"], end - lines if lines else 0)
    return read_lines(client, vm.uuid, start, end), meta["partial"]


def follow(client: ClusterClient, name: str, last: int = 10,
           stop: threading.Event | None = None) -> Iterator[ConsoleEvent]:
    """Yield the last `last` lines, then every new line exactly once, in order.

    Driven by a watch on the meta record. Falling further behind than the buffer
    yields a Gap with the exact count; restarts and migrations are visible as marker
    lines written by the agents. Ends with Ended when the VM is undefined, or when
    `stop` is set.
    """
    try:
        yield from _follow(client, name, last, stop)
    except NoAuthError:
        raise NotAllowed("not allowed: a console is for operators and agents, not viewers"
                         ) from None


def _follow(client: ClusterClient, name: str, last: int,
            stop: threading.Event | None) -> Iterator[ConsoleEvent]:
    vm = client.get_vm(name)
    # The consoles' parent carries their ACL: a reader without it is refused here, even
    # when this VM's buffer does not exist yet (reading a missing znode checks no ACL).
    client.zk.get(layout.CONSOLES)
    changed: queue.Queue[bool] = queue.Queue()
    stop = stop or threading.Event()

    def on_meta(data: bytes | None, stat: Any, event: Any = None) -> bool:
        changed.put(True)
        return not stop.is_set()

    def vm_gone(data: bytes | None, stat: Any, event: Any = None) -> bool:
        if data is None and stat is None:
            changed.put(False)
            return False
        return not stop.is_set()

    DataWatch(client.zk, console_path(vm.uuid), on_meta)
    DataWatch(client.zk, layout.vm_path(vm.uuid), vm_gone)
    # A buffer that does not exist yet: everything it will hold is new to this reader.
    cursor: int | None = None if read_meta(client, vm.uuid) is not None else 0
    partial = ""
    try:
        while not stop.is_set():
            try:
                alive = changed.get(timeout=0.5)
            except queue.Empty:
                continue
            while not changed.empty():  # coalesce a burst of changes into one read
                alive = changed.get_nowait() and alive
            if not alive:  # the watch on the VM record saw it deleted
                yield Ended(f"VM {vm.name} was undefined")
                return
            try:
                meta = read_meta(client, vm.uuid)
                if meta is None:
                    continue
                start = max(meta["first_seq"], meta["next_seq"] - max(last, 0)) \
                    if cursor is None else cursor
                lines = read_lines(client, vm.uuid, max(start, meta["first_seq"]),
                                   meta["next_seq"])
            except (ConnectionLoss, OperationTimeoutError):
                # a ZooKeeper leader change, say: nothing was yielded from this read, so
                # reading again later keeps every line exactly once
                stop.wait(0.2)
                changed.put(True)
                continue
            if cursor is None:
                cursor = start
            elif cursor < meta["first_seq"]:
                yield Gap(meta["first_seq"] - cursor)
                cursor = meta["first_seq"]
            for line in lines:
                if line.seq > cursor:  # a chunk vanished under us: say what was lost
                    yield Gap(line.seq - cursor)
                yield line
                cursor = line.seq + 1
            if cursor < meta["next_seq"]:  # the rest was trimmed while we read
                yield Gap(meta["next_seq"] - cursor)
                cursor = meta["next_seq"]
            if meta["partial"] != partial:
                partial = meta["partial"]
                yield Partial(partial)
    finally:
        stop.set()


def delete_buffer(client: ClusterClient, uuid: str) -> None:
    """Remove a VM's console buffer (after it was undefined); absent is fine."""
    with contextlib.suppress(NoNodeError):
        client.zk.delete(console_path(uuid), recursive=True)


__all__ = ["ConsoleEvent", "ConsoleLine", "Ended", "Gap", "Partial", "follow", "tail"]
