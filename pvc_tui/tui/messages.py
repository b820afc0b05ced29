"""Typed messages from worker threads (and kazoo's thread) to the UI."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.message import Message

if TYPE_CHECKING:
    from pvc_tui.cluster import ClusterClient
    from pvc_tui.cluster.store import ClusterSnapshot, ClusterStore


class ClusterChanged(Message):
    """Changes are waiting in the feed (posted once per batch; the handler drains)."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ClusterChanged)


@dataclass
class Connected(Message):
    """The store is running: the first complete picture of the cluster."""

    client: ClusterClient
    store: ClusterStore
    snapshot: ClusterSnapshot


@dataclass
class ConnectFailed(Message):
    """ZooKeeper could not be reached (the connect worker keeps trying)."""

    reason: str


@dataclass
class ActionFinished(Message):
    """A mutating action's outcome (text is untrusted: shown without markup)."""

    text: str
    ok: bool
