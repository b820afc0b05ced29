"""The flush / ready progress view: each VM's target and result as it happens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Label, Log, Static

from pvc_tui.cluster.describe import flush_item
from pvc_tui.cluster.errors import PvcError
from pvc_tui.cluster.moves import item_reached_goal
from pvc_tui.cluster.text import printable

if TYPE_CHECKING:
    from pvc_tui.cluster import ClusterClient



@dataclass
class ItemDone(Message):
    """One VM of the flush / ready reached its outcome."""

    item: dict[str, Any]


@dataclass
class RequestDone(Message):
    """The whole request ended (ok: every VM reached its goal)."""

    text: str
    ok: bool


class DomainProgressScreen(ModalScreen[None]):
    """Runs a node flush or ready and streams its progress; escape hides it (the
    request carries on in the node's agent)."""

    BINDINGS = [Binding("escape", "close", "Close")]

    def __init__(self, client: ClusterClient, node: str, action: str) -> None:
        super().__init__(classes="dialog-screen")
        self._client, self._node, self._action = client, node, action
        self.items: list[dict[str, Any]] = []
        self.outcome: RequestDone | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog progress"):
            yield Label(Text(f"{self._action} of node {printable(self._node, 60)}",
                             style="bold"), classes="dialog-title")
            yield Log(id="items", max_lines=10_000)
            yield Static(Text("requesting…", style="yellow"), id="status")
            yield Label(Text("escape: close (the request carries on)", style="dim"))

    def on_mount(self) -> None:
        self._run()

    @work(thread=True, exit_on_error=False)
    def _run(self) -> None:
        call = self._client.flush_node if self._action == "flush" else self._client.ready_node
        try:
            progress = call(self._node, wait=True, timeout=3600,
                            on_item=self._item)
        except PvcError as exc:
            self.post_message(RequestDone(f"{self._action} of {self._node} failed: {exc}", False))
            return
        items = progress.get("items", [])
        bad = [i for i in items if not item_reached_goal(i)]
        goal = "flushed" if self._action == "flush" else "ready"
        text = (f"node {self._node} is {goal}: {len(items)} VMs in "
                f"{float(progress.get('seconds', 0)):.1f} s")
        if bad:
            text += f"; {len(bad)} did not reach their goal"
        self.post_message(RequestDone(text, not bad))

    def _item(self, item: dict[str, Any]) -> None:
        self.post_message(ItemDone(dict(item)))

    def on_item_done(self, message: ItemDone) -> None:
        self.items.append(message.item)
        self.query_one("#items", Log).write_line(printable(flush_item(message.item), 300))
        self.query_one("#status", Static).update(
            Text(f"{len(self.items)} VMs done…", style="yellow"))

    def on_request_done(self, message: RequestDone) -> None:
        self.outcome = message
        self.query_one("#status", Static).update(
            Text(printable(message.text, 300), style="bold green" if message.ok else "bold red"))

    def action_close(self) -> None:
        """Hide the view."""
        self.dismiss(None)
