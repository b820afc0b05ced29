"""Handing store changes from the store's thread to the UI thread, coalesced by key.

The store calls `ChangeFeed.add` on its own thread. The feed keeps only the
latest value per record and calls `wake` once when the first change of a batch
arrives; the UI then `drain`s everything at once. A burst of 1,000 changes costs one
wake-up and one screen update, and a record that changed ten times is drawn once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pvc_tui.cluster.store import StoreChange


@dataclass(frozen=True)
class Pending:
    """The changes since the last drain: the latest value per (kind, key)."""

    changes: dict[tuple[str, str], StoreChange]

    def of_kind(self, kind: str) -> list[StoreChange]:
        """The changes of one kind (`node`, `vm`, `invalid`, `connection`)."""
        return [c for (k, _), c in self.changes.items() if k == kind]


class ChangeFeed:
    """Coalesces StoreChanges until the UI drains them; thread-safe."""

    def __init__(self, wake: Callable[[], Any]) -> None:
        self._wake = wake
        self._lock = threading.Lock()
        self._changes: dict[tuple[str, str], StoreChange] = {}

    def add(self, change: StoreChange) -> None:
        """Record a change (any thread); wakes the UI on the first of a batch."""
        key = (change.kind, change.key)
        with self._lock:
            first = not self._changes
            earlier = self._changes.get(key)
            # keep the oldest `old` so the UI sees one change from what it last drew
            self._changes[key] = change if earlier is None else StoreChange(
                change.kind, change.key, earlier.old, change.new)
        if first:
            self._wake()

    def drain(self) -> Pending:
        """Everything since the last drain (possibly nothing)."""
        with self._lock:
            changes, self._changes = self._changes, {}
            return Pending(changes)

    def __len__(self) -> int:
        with self._lock:
            return len(self._changes)
