"""Detail screens: one VM (with its domain XML) and one node (with its VMs and flush)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Label, Static, TextArea

from pvc_tui.cluster.describe import node_details, vm_details
from pvc_tui.cluster.errors import PvcError
from pvc_tui.cluster.models import VM, Node
from pvc_tui.cluster.moves import item_reached_goal
from pvc_tui.cluster.text import printable
from pvc_tui.tui.columns import STATE_STYLES

if TYPE_CHECKING:
    from pvc_tui.cluster import ClusterClient


def fields_text(pairs: Iterable[tuple[str, object]]) -> Text:
    """Aligned `key: value` lines; values made printable, states coloured."""
    pairs = list(pairs)
    width = max((len(k) for k, _ in pairs), default=0)
    text = Text()
    for key, value in pairs:
        shown = printable(value, 300)
        text.append(f"{key.rjust(width)}: ", style="bold")
        text.append(shown + "\n", style=STATE_STYLES.get(shown, ""))
    return text


def progress_text(progress: dict[str, Any]) -> Text:
    """A flush/ready request and each VM's outcome so far."""
    if not progress.get("id"):
        return Text("no flush or ready has run on this node", style="dim")
    action = printable(progress.get("action", "?"), 20)
    finished = bool(progress.get("finished"))
    text = Text()
    text.append(f"{action}: ", style="bold")
    text.append("finished" if finished else "running", style="green" if finished else "yellow")
    if finished and isinstance(progress.get("seconds"), int | float):
        text.append(f" in {progress['seconds']:.1f} s")
    text.append("\n")
    for item in progress.get("items", []) if isinstance(progress.get("items"), list) else []:
        if isinstance(item, dict):
            text.append_text(item_text(item))
    return text


def item_text(item: dict[str, Any]) -> Text:
    """One VM's outcome in a flush or ready."""
    result = printable(item.get("result", ""), 200)
    good = item_reached_goal(item)
    line = Text(f"  {printable(item.get('vm', '?'), 60)} -> "
                f"{printable(item.get('target') or '-', 40)}: ")
    line.append(result + "\n", style="green" if good else "bold red")
    return line


class DetailScreen(Screen[None]):
    """Common: escape closes; the app calls `show` with fresh records."""

    BINDINGS = [Binding("escape,q", "app.pop_screen", "Back")]

    key: str

    def on_screen_resume(self) -> None:
        app = self.app
        self.show(app.vm_table.items, app.node_table.items)  # type: ignore[attr-defined]

    def show(self, vms: dict[str, VM], nodes: dict[str, Node]) -> None:
        """Redraw from the app's current records."""


@dataclass
class XmlLoaded(Message):
    """The domain XML (sanitised), or why it could not be read."""

    text: str
    ok: bool


class VMDetailScreen(DetailScreen):
    """One VM: its fields (live) and its domain XML."""

    def __init__(self, uuid: str, client: ClusterClient | None) -> None:
        super().__init__()
        self.key = uuid
        self._client = client

    def compose(self) -> ComposeResult:
        yield Static(id="fields", classes="detail-fields")
        yield Label(Text("Domain XML", style="bold"), classes="section")
        yield TextArea(id="xml", read_only=True, soft_wrap=False, show_line_numbers=True)
        yield Footer()

    def on_mount(self) -> None:
        if self._client is not None:
            self._load_xml(self._client)

    @work(thread=True, exit_on_error=False)
    def _load_xml(self, client: ClusterClient) -> None:
        try:
            xml = client.get_vm_xml(self.key)
        except PvcError as exc:
            self.post_message(XmlLoaded(str(exc), False))
            return
        lines = (printable(line.expandtabs(4), 2000) for line in xml.splitlines())
        self.post_message(XmlLoaded("\n".join(lines), True))

    def on_xml_loaded(self, message: XmlLoaded) -> None:
        area = self.query_one("#xml", TextArea)
        area.load_text(message.text if message.ok else f"cannot read the XML: {message.text}")

    def show(self, vms: dict[str, VM], nodes: dict[str, Node]) -> None:
        vm = vms.get(self.key)
        fields = self.query_one("#fields", Static)
        if vm is None:
            fields.update(Text("this VM no longer exists (undefined)", style="bold red"))
            return
        fields.update(fields_text(vm_details(vm)))


class NodeDetailScreen(DetailScreen):
    """One node: resources, its VMs, and its flush / ready state."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.key = name

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(id="fields", classes="detail-fields")
            yield Label(Text("Flush / ready", style="bold"), classes="section")
            yield Static(id="progress")
            yield Label(Text("VMs on this node", style="bold"), classes="section")
            yield Static(id="vms")
        yield Footer()

    def show(self, vms: dict[str, VM], nodes: dict[str, Node]) -> None:
        node = nodes.get(self.key)
        if node is None:
            self.query_one("#fields", Static).update(Text("this node no longer exists",
                                                          style="bold red"))
            return
        self.query_one("#fields", Static).update(fields_text(node_details(node)))
        self.query_one("#progress", Static).update(progress_text(node.domain_progress))
        mine = sorted((v for v in vms.values() if v.node == node.name), key=lambda v: v.name)
        listing = Text()
        for vm in mine:
            listing.append(f"  {printable(vm.name, 60):<24} ")
            listing.append(f"{printable(vm.state, 20):<9}", style=STATE_STYLES.get(vm.state, ""))
            power = printable(vm.power_state, 20)
            listing.append(f" {power}\n", style=STATE_STYLES.get(power, ""))
        self.query_one("#vms", Static).update(listing or Text("  none", style="dim"))
