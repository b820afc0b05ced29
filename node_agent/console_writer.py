"""Appending to a VM's console buffer in ZooKeeper (see pvc_tui/cluster/console.py).

One writer per VM on the node that runs it. Each publish writes the chunks that
changed (normally just the current one) and the meta record in one transaction that
checks the meta version: if another agent wrote meanwhile (the source of a migration
finishing its last lines), this writer reloads the buffer and appends its pending
lines after the other's. Requests stay far below ZooKeeper's 1 MiB limit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError

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
        self._stored_chunks: set[int] = set()
        self.loaded_source: dict[str, Any] = {}
        self.loaded_node = ""
        try:
            data, stat = self._zk.get(console_path(self.uuid))
            meta = layout.decode(data, META_FIELDS)
        except (NoNodeError, layout.RecordError):
            return
        self._meta_version = stat.version
        self._generation = meta["generation"]
        self._first_seq, self._next_seq = meta["first_seq"], meta["next_seq"]
        self.loaded_source, self.loaded_node = meta["source"], meta["node"]
        self._published_partial = meta["partial"]
        if self._next_seq % CHUNK_LINES:
            try:
                data, _ = self._zk.get(chunk_path(self.uuid, chunk_of(self._next_seq)))
                entries = json.loads(data.decode("ascii"))
                self._current = entries[: self._next_seq % CHUNK_LINES]
            except (NoNodeError, ValueError):
                self._current = []
        first_chunk = chunk_of(self._first_seq)
        self._stored_chunks = set(range(first_chunk, chunk_of(max(self._next_seq, 1) - 1) + 1))

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
        """Write pending lines and the meta record; returns bytes written (0 if held)."""
        if self.held() and not force:
            return 0
        for _ in range(10):
            try:
                return self._publish_once()
            except BadVersionError:
                log.info("console of %s was written by another agent: continuing after it",
                         self.uuid)
                self._load()
        raise RuntimeError(f"console buffer of {self.uuid} kept changing")

    def _publish_once(self) -> int:
        written = 0
        pending = list(self._pending)
        generation = self._generation + (1 if self._restart_pending else 0)
        seq, current = self._next_seq, list(self._current)
        kept_from = 0
        if self._skipped:  # lines dropped here: they keep their numbers, stored as nulls
            seq = kept_from = seq + self._skipped
            current = [None] * (seq % CHUNK_LINES)
        chunks: dict[int, list[Any]] = {}
        for text, flags in pending:
            current.append(encode_entry(text, flags))
            seq += 1
            chunks[chunk_of(seq - 1)] = current
            if len(current) == CHUNK_LINES:
                current = []
        first_seq = max(self._first_seq, seq - self._max_lines, kept_from)
        batches = self._batches(chunks)
        meta_version = self._meta_version
        for i, batch in enumerate(batches):
            final = i == len(batches) - 1
            tx = self._zk.transaction()
            if meta_version >= 0:
                tx.check(console_path(self.uuid), meta_version)
            batch_end = seq if final else (max(batch) + 1) * CHUNK_LINES
            meta = layout.encode({
                "generation": generation, "first_seq": max(first_seq, 0),
                "next_seq": batch_end, "partial": self._partial if final else "",
                "node": self._owner, "source": self.source, "updated_at": time.time(),
            })
            written += len(meta)
            if meta_version < 0:  # the meta record is the chunks' parent: it goes first
                tx.create(console_path(self.uuid), meta)
            else:
                tx.set_data(console_path(self.uuid), meta)
            for index in sorted(batch):
                payload = encode_chunk(chunks[index])
                written += len(payload)
                if index in self._stored_chunks:
                    tx.set_data(chunk_path(self.uuid, index), payload)
                else:
                    tx.create(chunk_path(self.uuid, index), payload)
            results = tx.commit()
            if any(isinstance(r, Exception) for r in results):
                if any(isinstance(r, (BadVersionError, NodeExistsError, NoNodeError))
                       for r in results):
                    raise BadVersionError()
                raise next(r for r in results if isinstance(r, Exception))
            meta_version = meta_version + 1 if meta_version >= 0 else 0
            self._stored_chunks.update(batch)
        self._meta_version = meta_version
        self._next_seq, self._current, self._generation = seq, current, generation
        self._first_seq = max(first_seq, 0)
        self._pending.clear()
        self._skipped = 0
        self._restart_pending = False
        self._published_partial = self._partial
        self._trim()
        return written

    def _batches(self, chunks: dict[int, list[Any]]) -> list[set[int]]:
        """Dirty chunks grouped so that no transaction exceeds MAX_REQUEST_BYTES."""
        batches: list[set[int]] = [set()]
        size = 0
        for index in sorted(chunks):
            payload = len(encode_chunk(chunks[index]))
            if batches[-1] and size + payload > MAX_REQUEST_BYTES:
                batches.append(set())
                size = 0
            batches[-1].add(index)
            size += payload
        return batches

    def _trim(self) -> None:
        """Delete chunks that hold only lines older than the buffer keeps."""
        keep_from = chunk_of(self._first_seq)
        for index in sorted(i for i in self._stored_chunks if i < keep_from):
            with contextlib.suppress(NoNodeError):
                self._zk.delete(chunk_path(self.uuid, index))
            self._stored_chunks.discard(index)
