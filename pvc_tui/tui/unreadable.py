"""The list of records the dashboard could not read, each with its reason."""

from __future__ import annotations

from collections.abc import Mapping

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from pvc_tui.cluster.store import InvalidRecord
from pvc_tui.cluster.text import printable


def describe_unreadable(invalid: Mapping[str, object]) -> Text:
    """`path: reason` lines, every part made printable (both come from the cluster)."""
    text = Text()
    for path in sorted(invalid):
        record = invalid[path]
        reason = record.reason if isinstance(record, InvalidRecord) else str(record)
        text.append(printable(path, 200), style="bold")
        text.append(f"  {printable(reason, 300)}\n")
    return text if invalid else Text("every record reads fine", style="green")


class UnreadableScreen(ModalScreen[None]):
    """Records that are not valid for this version (malformed, oversized, newer)."""

    BINDINGS = [Binding("escape", "dismiss", "Close")]

    def __init__(self, invalid: Mapping[str, object]) -> None:
        super().__init__(classes="dialog-screen")
        self._invalid = dict(invalid)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog picker"):
            yield Label(Text(f"Unreadable records: {len(self._invalid)} (shown as they are "
                             "not; everything else works)", style="bold"),
                        classes="dialog-title")
            with VerticalScroll(id="items"):
                yield Static(describe_unreadable(self._invalid), id="unreadable")
            yield Label(Text("escape: close", style="dim"))
