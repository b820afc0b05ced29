"""The console pane: a guest's serial console, followed live beside the tables.

A worker thread runs the library's `follow` and sanitises every line there (no escape
sequence from a guest reaches the terminal; nothing is parsed as markup), then hands
display items to the UI through a coalescing inbox: one wake-up per batch, however
fast the guest prints.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Input, Label

from pvc_tui.cluster.console import ConsoleLine, Ended, Gap, Partial, follow
from pvc_tui.cluster.errors import PvcError
from pvc_tui.cluster.sanitize import ConsoleSanitizer, sanitize_line
from pvc_tui.cluster.text import printable
from pvc_tui.tui.console_view import ConsoleView

if TYPE_CHECKING:
    from pvc_tui.cluster import ClusterClient

INITIAL_LINES = 1000
ItemKind = Literal["lines", "marker", "partial", "ended"]


@dataclass(frozen=True)
class DisplayItem:
    """What the pane shows next: safe text only."""

    kind: ItemKind
    lines: list[str] = field(default_factory=list)  # grows while waiting in the inbox
    text: str = ""
    at: float = 0.0  # when the worker received it (monotonic), for the lag figure


class ConsoleInbox:
    """Items from the follow thread, drained by the UI; wakes the UI once per batch."""

    def __init__(self, wake: Callable[[], object]) -> None:
        self._wake = wake
        self._lock = threading.Lock()
        self._items: list[DisplayItem] = []

    def put(self, item: DisplayItem) -> None:
        """Add an item (worker thread)."""
        with self._lock:
            first = not self._items
            last = self._items[-1] if self._items else None
            if item.kind == "lines" and last is not None and last.kind == "lines":
                last.lines.extend(item.lines)  # one batch, however many lines wait
            else:
                self._items.append(item)
        if first:
            self._wake()

    def drain(self) -> list[DisplayItem]:
        """Everything waiting (UI thread)."""
        with self._lock:
            items, self._items = self._items, []
            return items


def to_display(event: object, sanitizer: ConsoleSanitizer) -> DisplayItem | None:
    """A follow event as a display item (sanitised here, off the UI thread)."""
    now = time.monotonic()
    if isinstance(event, ConsoleLine):
        text = sanitizer.feed_line(event.text) + ("…" if event.cont else "")
        if event.marker:
            return DisplayItem("marker", text=f"── {text} ──", at=now)
        return DisplayItem("lines", [text], at=now)
    if isinstance(event, Gap):
        return DisplayItem("marker", text=f"── {event.missed} lines missed ──", at=now)
    if isinstance(event, Partial):
        return DisplayItem("partial", text=sanitize_line(event.text), at=now)
    if isinstance(event, Ended):
        return DisplayItem("ended", text=f"── {sanitize_line(event.reason)} ──", at=now)
    return None


class ConsoleWake(Message):
    """Display items are waiting in the pane's inbox."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ConsoleWake)


class SearchField(Input):
    """The `/` field under a ConsoleView: enter searches the view (plain text)."""

    def __init__(self, view: Callable[[], ConsoleView], *, id: str) -> None:
        super().__init__(id=id, placeholder="search (enter)", classes="search")
        self._view = view

    def on_mount(self) -> None:
        self.display = False

    def open(self) -> None:
        """Show the field and take the focus."""
        self.display = True
        self.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.display = False
        view = self._view()
        view.focus()
        if event.value and not view.find(event.value):
            self.notify(f"not found: {printable(event.value, 80)}", markup=False)


class SavePathScreen(ModalScreen[str | None]):
    """Ask where to save the buffer."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, default: str) -> None:
        super().__init__(classes="dialog-screen")
        self._default = default

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text("Save the console buffer to:", style="bold"))
            yield Input(value=self._default, id="path")

    @on(Input.Submitted, "#path")
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        """Close without saving."""
        self.dismiss(None)


class BufferScreen(Screen[None]):
    """The whole buffer as it was when opened, like `less` (search with / n N)."""

    BINDINGS = [Binding("escape,q", "app.pop_screen", "Back"),
                Binding("slash", "search", "Search")]

    def __init__(self, title: str, lines: list[str]) -> None:
        super().__init__()
        self._title, self._lines = title, lines

    def compose(self) -> ComposeResult:
        yield Label(Text(self._title, style="bold"), classes="pane-title")
        yield ConsoleView(max_lines=max(len(self._lines), 1), id="buffer")
        yield SearchField(lambda: self.query_one(ConsoleView), id="buffer-search")
        yield Footer()

    def on_mount(self) -> None:
        view = self.query_one(ConsoleView)
        view.append_lines(self._lines)
        view.focus()

    def action_search(self) -> None:
        """Open the search field."""
        self.query_one(SearchField).open()


class ConsolePane(Vertical):
    """Follows one VM's console. Keys: / search, n N next/previous, w wrap, s save,
    v full buffer, End resume following."""

    BINDINGS = [
        Binding("slash", "search", "Search"),
        Binding("s", "save", "Save"),
        Binding("v", "view_buffer", "Full buffer"),
        Binding("escape", "app.close_console", "Close console"),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.vm_name = ""
        self.ended = False
        self._stop = threading.Event()
        self._inbox = ConsoleInbox(lambda: self.post_message(ConsoleWake()))

    def compose(self) -> ComposeResult:
        yield Label(id="console-title", classes="pane-title")
        yield ConsoleView(id="console-view")
        yield SearchField(lambda: self.view, id="console-search")

    @property
    def view(self) -> ConsoleView:
        """The line view."""
        return self.query_one("#console-view", ConsoleView)

    def follow_vm(self, client: ClusterClient, name: str) -> None:
        """Start following VM `name` (stops following the previous one)."""
        self._stop.set()
        self._stop = threading.Event()
        self._inbox.drain()
        self.vm_name, self.ended = name, False
        self.view.clear()
        self._title()
        self._follow(client, name, self._stop)

    def stop(self) -> None:
        """Stop following."""
        self._stop.set()

    @work(thread=True, exclusive=True, group="console", exit_on_error=False)
    def _follow(self, client: ClusterClient, name: str, stop: threading.Event) -> None:
        sanitizer = ConsoleSanitizer()
        try:
            for event in follow(client, name, last=INITIAL_LINES, stop=stop):
                item = to_display(event, sanitizer)
                if item is not None and not stop.is_set():
                    self._inbox.put(item)
        except PvcError as exc:
            if not stop.is_set():
                self._inbox.put(DisplayItem("ended", text=f"── {exc} ──"))
        except Exception as exc:  # ZooKeeper gone mid-read: say so, keep the screen
            if not stop.is_set():
                self._inbox.put(DisplayItem("ended", text=f"── console stopped: {exc} ──"))

    def on_console_wake(self, message: ConsoleWake) -> None:
        view = self.view
        for item in self._inbox.drain():
            if item.kind == "lines":
                view.append_lines(item.lines)
            elif item.kind == "marker":
                view.append_marker(item.text)
            elif item.kind == "partial":
                view.set_partial(item.text)
            else:
                view.append_marker(item.text)
                self.ended = True
        self._title()

    @on(ConsoleView.FollowChanged)
    def _follow_changed(self, message: ConsoleView.FollowChanged) -> None:
        self._title()

    def _title(self) -> None:
        view = self.view
        title = Text.assemble(("console ", "bold"), (printable(self.vm_name, 60), "bold cyan"))
        if self.ended:
            title.append("  ended", style="bold red")
        elif view.following:
            title.append("  following", style="green")
        else:
            title.append(f"  paused: {view.new_lines} new lines (End to follow)",
                         style="bold yellow")
        if view.wrap:
            title.append("  wrap", style="dim")
        self.query_one("#console-title", Label).update(title)

    def action_search(self) -> None:
        """Open the search field."""
        self.query_one(SearchField).open()

    def action_save(self) -> None:
        """Save the buffer to a file (asks where)."""
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", self.vm_name)[:60] or "console"
        default = f"{safe}-console-{time.strftime('%Y%m%d-%H%M%S')}.log"
        self.app.push_screen(SavePathScreen(default), self._save_to)

    def _save_to(self, path: str | None) -> None:
        if not path:
            return
        try:
            Path(path).expanduser().write_text(self.view.text() + "\n", encoding="utf-8")
        except OSError as exc:
            self.notify(f"cannot save: {exc}", severity="error", markup=False)
            return
        self.notify(f"saved {self.view.line_count} lines to {path}", markup=False)

    def action_view_buffer(self) -> None:
        """Show the whole buffer, static, with search."""
        lines = self.view.text().split("\n")
        self.app.push_screen(BufferScreen(f"console of {printable(self.vm_name, 60)} "
                                          f"({len(lines)} lines, static)", lines))
