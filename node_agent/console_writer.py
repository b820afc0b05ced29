"""Appending to a VM's console buffer in ZooKeeper (see pvc_tui/cluster/console.py).

One writer per VM on the node that runs it. Each publish writes the chunks that
changed (normally just the current one) and the meta record in one transaction that
checks the meta version: if another agent wrote meanwhile (the source of a migration
finishing its last lines), this writer reloads the buffer and appends its pending
lines after the other's. Requests stay far below ZooKeeper's 1 MiB limit.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, KazooException, NodeExistsError, NoNodeError

from pvc_tui.cluster import layout
from pvc_tui.cluster.console import (
    CHUNK_LINES,
    FLAG_MARKER,
    META_FIELDS,
    chunk_of,
    chunk_path,
    console_path,
    encode_chunk,
    encode_entry,
)

log = logging.getLogger(__name__)
MAX_REQUEST_BYTES = 768 * 1024  # one transaction; ZooKeeper refuses more than 1 MiB
MAX_PARTIAL_CHARS = 4096
HANDOVER_TIMEOUT = 10.0


class ConsoleWriter:
    """The buffer of one VM, as this agent appends to it."""

    def __init__(self, zk: KazooClient, uuid: str, node: str, max_lines: int,
                 after_handover: bool = False) -> None:
        self._zk = zk
        self.uuid = uuid
        self._node = node
        self._max_lines = max_lines
        self._pending: list[tuple[str, int]] = []  # appended since the last publish
        self._unsure: PublishPlan | None = None  # sent, outcome unknown (see publish)
        self._writer_id = secrets.token_hex(6)  # with a counter: each request's token
        self._requests = 0
        self._skipped = 0  # lines dropped from `_pending` (ZooKeeper away too long)
        self._partial = ""
        self._published_partial = ""
        self._restart_pending = False
        self.source: dict[str, Any] = {}
        self._owner = node  # written as the meta's `node`; "" once released
        self._load()
        # A VM that arrived live: the source may still publish its last lines. Hold ours
        # until it releases the buffer (bounded, should the source have died).
        self._hold_until = (time.monotonic() + HANDOVER_TIMEOUT
                            if after_handover and self.loaded_node not in ("", node) else 0.0)

    # ---- state -------------------------------------------------------------------

    def _load(self) -> None:
        """Read the buffer's meta and current chunk (to continue it)."""
        self._meta_version = -1
        self._generation = self._first_seq = self._next_seq = 0
        self._current: list[Any] = []
        self._stored_chunks: set[int] = set()  # chunk indexes that exist in ZooKeeper
        self.loaded_source: dict[str, Any] = {}
        self.loaded_node = ""
        self._loaded_token = ""
        try:
            data, stat = self._zk.get(console_path(self.uuid))
            meta = layout.decode(data, META_FIELDS)
        except (NoNodeError, layout.RecordError):
            return
        self._meta_version = stat.version
        self._generation = meta["generation"]
        self._first_seq, self._next_seq = meta["first_seq"], meta["next_seq"]
        self.loaded_source, self.loaded_node = meta["source"], meta["node"]
        self._loaded_token = meta["publish"]
        self._published_partial = meta["partial"]
        # What exists, as ZooKeeper has it (not as the meta suggests): a reload after a
        # conflict must leave this writer's view exactly true.
        try:
            children = self._zk.get_children(console_path(self.uuid))
        except NoNodeError:
            children = []
        self._stored_chunks = {int(name) for name in children if name.isdigit()}
        current_index = chunk_of(self._next_seq)
        slots = self._next_seq % CHUNK_LINES
        self._current = [None] * slots  # lines it cannot read back count as dropped
        if slots and current_index in self._stored_chunks:
            try:
                data, _ = self._zk.get(chunk_path(self.uuid, current_index))
                entries = json.loads(data.decode("ascii"))
                if isinstance(entries, list):
                    self._current = (entries + [None] * slots)[:slots]
            except (NoNodeError, ValueError):
                pass

    @property
    def pending_lines(self) -> int:
        """Lines waiting to be published."""
        return len(self._pending)

    @property
    def next_seq(self) -> int:
        """The sequence number the next line gets."""
        return self._next_seq + self._skipped + len(self._pending)

    # ---- appending -----------------------------------------------------------------

    def append(self, text: str, cont: bool = False) -> None:
        """Queue one line (or a cut piece, `cont`) for the next publish.

        At most `max_lines` wait: older ones are dropped (readers see an exact gap)."""
        self._pending.append((text, 1 if cont else 0))
        if len(self._pending) > self._max_lines:
            del self._pending[0]
            self._skipped += 1

    def marker(self, text: str, new_generation: bool = False) -> None:
        """Queue a line of pvc's own (e.g. a restart), optionally starting a generation."""
        self._pending.append((text, FLAG_MARKER))
        if new_generation:
            self._restart_pending = True

    def set_partial(self, text: str) -> None:
        """The current unterminated last line."""
        self._partial = text[:MAX_PARTIAL_CHARS]

    def dirty(self) -> bool:
        """Whether a publish would change anything."""
        return bool(self._pending) or self._partial != self._published_partial

    # ---- publishing ----------------------------------------------------------------

    def held(self) -> bool:
        """Whether publishing waits for the previous node to release the buffer."""
        if not self._hold_until:
            return False
        if time.monotonic() < self._hold_until:
            try:
                data, _ = self._zk.get(console_path(self.uuid))
                if layout.decode(data, META_FIELDS)["node"] not in ("", self._node):
                    return True
            except (NoNodeError, layout.RecordError):
                pass
        self._hold_until = 0.0
        return False

    def release(self) -> int:
        """Publish the last lines and hand the buffer over (this node stops writing)."""
        self._owner = ""
        return self.publish(force=True)

    def publish(self, force: bool = False) -> int:
        """Write pending lines and the meta record; returns bytes written (0 if held).

        Each request is one transaction (a burst too big for one goes out in several
        rounds), and each carries a token in the meta record: after a conflict or a lost
        connection this writer can tell whether its own request landed, and never
        appends the same lines twice."""
        if self.held() and not force:
            return 0
        written = 0
        for _ in range(64):
            if self._unsure is not None:  # a request whose outcome we did not hear
                self._load()
                plan, self._unsure = self._unsure, None
                if self._loaded_token == plan.token:
                    self._adopt(plan)
            if not self.dirty():
                return written
            plan = self.plan()
            self._unsure = plan
            try:
                commit(self._zk, plan.ops)
            except BadVersionError:
                log.info("console of %s was written by another agent: continuing after it",
                         self.uuid)
                continue
            self._unsure = None
            self.applied(plan)
            written += plan.size
        raise RuntimeError(f"console buffer of {self.uuid} kept changing")

    def plan(self) -> PublishPlan:
        """One request publishing as much of what is pending as fits (no I/O)."""
        generation = self._generation + (1 if self._restart_pending else 0)
        seq, current = self._next_seq, list(self._current)
        kept_from = 0
        if self._skipped:  # lines dropped here: they keep their numbers, stored as nulls
            seq = kept_from = seq + self._skipped
            current = [None] * (seq % CHUNK_LINES)
        chunks: dict[int, list[Any]] = {}
        consumed = size = 0
        for text, flags in self._pending:
            estimate = len(text) * 6 + 16  # the most JSON can make of it
            if consumed and size + estimate > MAX_REQUEST_BYTES:
                break  # the rest goes in the next request
            size += estimate
            current.append(encode_entry(text, flags))
            seq += 1
            consumed += 1
            chunks[chunk_of(seq - 1)] = current
            if len(current) == CHUNK_LINES:
                current = []
        partial = self._partial if consumed == len(self._pending) else self._published_partial
        first_seq = max(self._first_seq, seq - self._max_lines, kept_from, 0)
        stale = sorted(i for i in self._stored_chunks if i < chunk_of(first_seq))
        self._requests += 1
        token = f"{self._writer_id}.{self._requests}"
        meta = layout.encode({
            "generation": generation, "first_seq": first_seq, "next_seq": seq,
            "partial": partial, "node": self._owner, "source": self.source,
            "updated_at": time.time(), "publish": token,
        }, sort_keys=False)
        # The meta record goes first (it is the chunks' parent); setting it with the
        # version this writer last saw is the compare-and-set of the whole request.
        ops: list[Op] = [("create", console_path(self.uuid), meta, -1)
                         if self._meta_version < 0
                         else ("set", console_path(self.uuid), meta, self._meta_version)]
        for index in sorted(chunks):
            kind = "set" if index in self._stored_chunks else "create"
            ops.append((kind, chunk_path(self.uuid, index), encode_chunk(chunks[index]), -1))
        ops.extend(("delete", chunk_path(self.uuid, index), b"", -1) for index in stale)
        return PublishPlan(self, ops, sum(len(op[2]) for op in ops), consumed, partial, token,
                           (seq, current, generation, first_seq, stale, set(chunks)))

    def applied(self, plan: PublishPlan) -> None:
        """Take the state a committed request leads to."""
        seq, current, generation, first_seq, stale, written = plan.state
        self._meta_version += 1
        self._stored_chunks.update(written)
        self._stored_chunks.difference_update(stale)
        self._next_seq, self._current, self._generation = seq, current, generation
        self._first_seq = first_seq
        self._adopt(plan)

    def _adopt(self, plan: PublishPlan) -> None:
        """The lines of a request that landed are no longer pending."""
        del self._pending[: plan.consumed]
        self._skipped = 0
        self._restart_pending = False
        self._published_partial = plan.partial


Op = tuple[str, str, bytes, int]  # (create | set | delete, path, data, version or -1)


@dataclass(frozen=True)
class PublishPlan:
    """One request publishing a writer's pending lines, and the state it leads to."""

    writer: ConsoleWriter
    ops: list[Op]
    size: int
    consumed: int  # pending lines it carries
    partial: str
    token: str  # written into the meta record: "this request landed"
    state: tuple[int, list[Any], int, int, list[int], set[int]]


def commit(zk: KazooClient, ops: list[Op]) -> None:
    """Run `ops` as one transaction; BadVersionError if the buffer changed under us."""
    tx = zk.transaction()
    for kind, path, data, version in ops:
        if kind == "create":
            tx.create(path, data)
        elif kind == "set":
            tx.set_data(path, data, version)
        else:
            tx.delete(path)
    results = tx.commit()
    failures = [r for r in results if isinstance(r, Exception)]
    if failures:
        if any(isinstance(r, (BadVersionError, NodeExistsError, NoNodeError))
               for r in failures):
            raise BadVersionError()
        raise failures[0]


def publish_together(zk: KazooClient, writers: list[ConsoleWriter]) -> int:
    """Publish several buffers in as few transactions as fit; returns bytes written.

    A buffer needing more than one request, or a transaction refused because one of
    its buffers changed meanwhile, is published on its own (which reloads and retries).
    """
    written = 0
    alone = [w for w in writers if w.held()]
    group: list[PublishPlan] = []
    size = 0

    def flush() -> None:
        nonlocal written, size
        if not group:
            return
        for plan in group:
            plan.writer._unsure = plan
        try:
            commit(zk, [op for plan in group for op in plan.ops])
        except BadVersionError:  # one of them changed: each goes alone (and re-checks)
            alone.extend(plan.writer for plan in group)
        else:
            for plan in group:
                plan.writer._unsure = None
                plan.writer.applied(plan)
                written += plan.size
        group.clear()
        size = 0

    for writer in writers:
        if writer in alone:
            continue
        plan = writer.plan()
        if plan.consumed < writer.pending_lines:  # a burst: it needs requests of its own
            alone.append(writer)
            continue
        if group and size + plan.size > MAX_REQUEST_BYTES:
            flush()
        group.append(plan)
        size += plan.size
    flush()
    for writer in alone:  # one buffer's trouble never holds up the others
        if writer.held():
            continue
        try:
            written += writer.publish()
        except (RuntimeError, KazooException) as exc:
            log.warning("console of %s not published: %s", writer.uuid, exc)
    return written
