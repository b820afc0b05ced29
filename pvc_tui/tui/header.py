"""The header line: cluster address, ZooKeeper state, data age and counts."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from rich.text import Text
from textual.widgets import Static

from pvc_tui.cluster.text import printable
from pvc_tui.tui.columns import STATE_STYLES

CONNECTION_STYLES = {"connected": "bold green", "reconnecting": "bold yellow",
                     "lost": "bold red", "connecting": "bold yellow"}


@dataclass
class HeaderFacts:
    """Everything the header shows."""

    address: str = ""
    connection: str = "connecting"
    stale_since: float | None = None  # monotonic time the data stopped being live
    node_states: Counter[str] = field(default_factory=Counter)
    vm_states: Counter[str] = field(default_factory=Counter)
    invalid: int = 0
    readonly: bool = False
    storage: Text | None = None  # Ceph's health, once a storage primary has published


def _counts(label: str, states: Counter[str]) -> Text:
    text = Text()
    text.append(f"{label} {sum(states.values())}", style="bold")
    if states:
        text.append(" (")
        for i, (state, count) in enumerate(sorted(states.items())):
            text.append(", " if i else "")
            text.append(f"{count} {printable(state, 20)}", style=STATE_STYLES.get(state, ""))
        text.append(")")
    return text


def render_header(facts: HeaderFacts, now: float | None = None) -> Text:
    """The header as styled text (no markup is parsed)."""
    now = time.monotonic() if now is None else now
    text = Text()
    text.append(" pvc ", style="bold reverse")
    text.append(" ")
    text.append(printable(facts.address, 60), style="bold")
    text.append("  zk ")
    text.append(facts.connection, style=CONNECTION_STYLES.get(facts.connection, ""))
    if facts.stale_since is None:
        text.append("  data live", style="green")
    else:
        text.append(f"  data stale {now - facts.stale_since:.0f}s", style="bold red")
    if facts.storage is not None:
        text.append("  ")
        text.append_text(facts.storage)
    text.append("  │  ")
    text.append_text(_counts("nodes", facts.node_states))
    text.append("  ")
    text.append_text(_counts("VMs", facts.vm_states))
    if facts.invalid:
        text.append(f"  {facts.invalid} unreadable records (!)", style="bold red")
    if facts.readonly:
        text.append("  READ-ONLY", style="bold reverse yellow")
    return text


class ClusterHeader(Static):
    """Shows `HeaderFacts`; call `show(facts)` after each change."""

    DEFAULT_CSS = "ClusterHeader { height: 1; background: $panel; }"

    _shown: Text | None = None

    def show(self, facts: HeaderFacts) -> None:
        """Redraw from `facts` (only if the text changed: a layout pass is not free)."""
        text = render_header(facts)
        if text != self._shown:
            self._shown = text
            self.update(text)
