"""The dashboard: live node and VM tables, actions, and a console pane.

Data flow: ClusterStore (its own thread) -> ChangeFeed (coalesced by record) ->
one `ClusterChanged` message per batch -> `ResourceTable.apply` inside
`batch_update()`. No polling: without changes the UI does nothing but tick the
stale-data clock while ZooKeeper is unreachable.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import Counter
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual._context import active_message_pump
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.content import Content
from textual.screen import Screen
from textual.widgets import ContentSwitcher, Footer, Input, Static
from textual.worker import Worker, WorkerState, get_current_worker

from pvc_tui.cluster import ClusterClient
from pvc_tui.cluster.auth import Credentials, load_credentials
from pvc_tui.cluster.errors import ClusterUnavailable, PvcError
from pvc_tui.cluster.storage import StorageStatus
from pvc_tui.cluster.store import ClusterStore
from pvc_tui.cluster.text import printable
from pvc_tui.tui.actions import MUTATING, DashboardActions
from pvc_tui.tui.columns import FILTER_FIELDS
from pvc_tui.tui.console_pane import ConsolePane
from pvc_tui.tui.detail import DetailScreen, NodeDetailScreen, VMDetailScreen
from pvc_tui.tui.feed import ChangeFeed
from pvc_tui.tui.header import ClusterHeader, HeaderFacts
from pvc_tui.tui.messages import ActionFinished, ClusterChanged, Connected, ConnectFailed
from pvc_tui.tui.palette import DashboardCommands
from pvc_tui.tui.query import make_filter, parse_command
from pvc_tui.tui.storage_actions import STORAGE_ACTIONS, StorageActions
from pvc_tui.tui.storage_columns import health_text
from pvc_tui.tui.storage_views import (
    OsdTable,
    PoolTable,
    VolumeTable,
    apply_status,
    apply_volumes,
)
from pvc_tui.tui.unreadable import UnreadableScreen
from pvc_tui.tui.views import NodeTable, View, VMTable

log = logging.getLogger("pvc_tui.dashboard")
_STORAGE_MUTATING = frozenset(a.name for a in STORAGE_ACTIONS)
RETRY_SECONDS = 2.0


class Dashboard(App[int]):
    """`pvc-tui` with no command."""

    CSS_PATH = "dashboard.tcss"
    TITLE = "pvc"
    COMMANDS = App.COMMANDS | {DashboardCommands}
    BINDINGS = [
        Binding("1", "show_view('nodes')", "Nodes"),
        Binding("2", "show_view('vms')", "VMs"),
        Binding("3", "show_view('pools')", "Storage"),
        Binding("4", "show_view('volumes')", "Volumes", show=False),
        Binding("5", "show_view('osds')", "OSDs", show=False),
        Binding("colon", "command_line", "Command"),
        Binding("slash", "filter", "Filter"),
        Binding("p", "toggle_pause", "Pause"),
        Binding("exclamation_mark", "show_unreadable", "Unreadable records", show=False),
        Binding("c", "open_console", "Console"),
        Binding("z", "zoom_console", "Zoom console", show=False),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, hosts: str, *, readonly: bool = False, log_path: Path | None = None,
                 connect_timeout: float = 5.0, credentials: Credentials | None = None) -> None:
        super().__init__()
        self.hosts = hosts
        # default: as the CLI finds them ($PVC_ZK_AUTH, ...); never shown anywhere
        self.credentials = credentials if credentials is not None else load_credentials()
        self.readonly = readonly
        self.log_path = log_path
        self.connect_timeout = connect_timeout
        self.client: ClusterClient | None = None
        self.store: ClusterStore | None = None
        self.feed = ChangeFeed(lambda: self.post_message(ClusterChanged()))
        self.facts = HeaderFacts(address=hosts, readonly=readonly)
        self.paused = False
        self.invalid: dict[str, object] = {}
        self.crashes: list[str] = []  # internal errors reported in the UI (and logged)
        self.fatal_error = ""  # why the dashboard had to end, if it did
        self._quitting = threading.Event()
        self.loaded_at: float | None = None  # monotonic time the first full tables showed
        self.actions = DashboardActions(self)
        self.storage_actions = StorageActions(self)
        self.storage_status: StorageStatus | None = None
        # the main screen's widgets, reachable while another screen is on top
        self.node_table = NodeTable(id="nodes")
        self.vm_table = VMTable(id="vms")
        self.pool_table = PoolTable(id="pools")
        self.volume_table = VolumeTable(id="volumes")
        self.osd_table = OsdTable(id="osds")
        self.views: dict[str, View] = {"nodes": self.node_table, "vms": self.vm_table,
                                       "pools": self.pool_table,
                                       "volumes": self.volume_table, "osds": self.osd_table}
        self.console_pane = ConsolePane(id="console")

    # ---- layout -----------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield ClusterHeader(id="header")
        yield Static(id="banner")
        with Horizontal(id="main"):
            with ContentSwitcher(id="views", initial="vms"):
                yield from self.views.values()
            yield self.console_pane
        yield Input(id="command", placeholder=":vm node=hv1 /web   (enter, escape)")
        yield Input(id="filter", placeholder="/regex  (!regex inverts; enter, escape)")
        yield Footer()

    def on_mount(self) -> None:
        self.main_screen: Screen[object] = self.screen
        for widget_id in ("#banner", "#console", "#command", "#filter"):
            self.main_screen.query_one(widget_id).display = False
        self._show_header()
        self.set_interval(1.0, self._tick)
        self.vm_table.focus()
        self._connect()

    # ---- connecting -------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="connect", exit_on_error=False)
    def _connect(self) -> None:
        worker = get_current_worker()
        while not worker.is_cancelled:
            client: ClusterClient | None = None
            try:
                client = ClusterClient.connect(self.hosts, timeout=self.connect_timeout,
                                               credentials=self.credentials)
                store = ClusterStore(client.zk)
                store.subscribe(self.feed.add)
                store.start()
            except ClusterUnavailable as exc:
                if client is not None:
                    client.close()
                self.post_message(ConnectFailed(str(exc)))
                if self._quitting.wait(RETRY_SECONDS):  # back off; quitting ends the wait
                    return
                continue
            self.feed.drain()  # everything so far is in the snapshot
            self.post_message(Connected(client, store, store.snapshot()))
            return

    def on_connect_failed(self, message: ConnectFailed) -> None:
        self.facts.connection = "lost"
        if self.facts.stale_since is None:
            self.facts.stale_since = time.monotonic()
        self._banner(f"ZooKeeper unreachable: {message.reason}; retrying", "error")
        self._show_header()
        self.refresh_bindings()

    def on_connected(self, message: Connected) -> None:
        self.client, self.store = message.client, message.store
        snap = message.snapshot
        with self.batch_update():
            self.node_table.replace_all(dict(snap.nodes))
            self.vm_table.replace_all(dict(snap.vms))
            self.volume_table.replace_all({v.key: v for v in snap.volumes.values()})
            self._storage_changed(snap.storage)
        self.invalid = dict(snap.invalid)
        self.facts.connection = snap.connection
        self.facts.stale_since = None if snap.connection == "connected" else time.monotonic()
        self.loaded_at = time.monotonic()
        self._banner()
        self._show_header()
        self.refresh_bindings()  # the actions come alive
        self.on_cluster_changed(ClusterChanged())

    # ---- live changes -----------------------------------------------------------------

    def on_cluster_changed(self, message: ClusterChanged) -> None:
        if self.paused or self.store is None:
            return
        pending = self.feed.drain()
        if not pending.changes:
            return
        for change in pending.of_kind("connection"):
            self._connection_changed(str(change.new))
        for change in pending.of_kind("invalid"):
            if change.new is None:
                self.invalid.pop(change.key, None)
            else:
                self.invalid[change.key] = change.new
        with self.batch_update():
            self.node_table.apply((c.key, c.new) for c in pending.of_kind("node"))
            self.vm_table.apply((c.key, c.new) for c in pending.of_kind("vm"))
            apply_volumes(self.volume_table, pending.of_kind("volume"))
            for change in pending.of_kind("storage"):
                self._storage_changed(change.new)
        self._show_header()
        if isinstance(self.screen, DetailScreen):
            self.screen.show(self.vm_table.items, self.node_table.items)

    def _connection_changed(self, state: str) -> None:
        self.facts.connection = state
        if state == "connected":
            self.facts.stale_since = None
            self._banner()
            self.notify("ZooKeeper connection restored; data is live again")
        else:
            if self.facts.stale_since is None:
                self.facts.stale_since = time.monotonic()
            self._banner(f"ZooKeeper {state}: data is stale and actions are disabled "
                         "until it returns", "error")
        self.refresh_bindings()

    def _storage_changed(self, status: StorageStatus | None) -> None:
        self.storage_status = status
        apply_status(self.pool_table, self.osd_table, status)
        self.facts.storage = None if status is None else health_text(
            status.health or ("unreachable" if status.error else ""), status.flags)
        problems = ("; ".join(f"{name}: {text}" for name, text in
                              sorted(status.health_checks.items())) or status.error
                    if status is not None else "no storage primary has published yet")
        for table in (self.pool_table, self.osd_table):
            table.border_title = Content(printable(problems, 300))

    def _show_header(self) -> None:
        self.facts.node_states = Counter(n.daemon_state for n in self.node_table.items.values())
        self.facts.vm_states = Counter(v.state for v in self.vm_table.items.values())
        self.facts.invalid = len(self.invalid)
        self.main_screen.query_one(ClusterHeader).show(self.facts)

    def _tick(self) -> None:
        if self.facts.stale_since is not None:
            self._show_header()
        if self.paused:
            self._banner(f"PAUSED: live updates held ({len(self.feed)} records changed); "
                         "p resumes", "warning")

    def _banner(self, text: str = "", kind: str = "") -> None:
        banner = self.main_screen.query_one("#banner", Static)
        banner.display = bool(text)
        banner.set_classes(kind)
        banner.update(Text(printable(text, 400)))

    # ---- views, filter, sort, pause ---------------------------------------------------

    def action_show_view(self, view: str) -> None:
        """Switch to the `nodes`, `vms`, `pools`, `volumes` or `osds` view."""
        self.main_screen.query_one(ContentSwitcher).current = view
        self.views[view].focus()

    @property
    def current_table(self) -> View:
        """The table in view."""
        return self.views[self.main_screen.query_one(ContentSwitcher).current or "vms"]

    def action_command_line(self) -> None:
        """Open the `:` command line."""
        self._open_input("#command", "")

    def action_filter(self) -> None:
        """Open the `/` filter, holding the current pattern."""
        f = self.current_table.row_filter
        self._open_input("#filter", ("!" if f.invert else "") + f.pattern)

    def _open_input(self, selector: str, value: str) -> None:
        field = self.main_screen.query_one(selector, Input)
        field.value = value
        field.display = True
        field.focus()

    @on(Input.Submitted, "#command")
    def _command(self, event: Input.Submitted) -> None:
        self._close_input(event.input)
        if event.value.strip() in ("q", "quit"):
            self.exit(0)
            return
        try:
            query = parse_command(event.value, FILTER_FIELDS)
        except PvcError as exc:
            self.notify(str(exc), severity="error", markup=False)
            return
        self.action_show_view(query.view)
        self.current_table.set_filter(query.filter)
        self._show_filter()

    @on(Input.Submitted, "#filter")
    def _filter(self, event: Input.Submitted) -> None:
        self._close_input(event.input)
        table = self.current_table
        try:
            table.set_filter(make_filter(table.row_filter.fields, event.value))
        except PvcError as exc:
            self.notify(str(exc), severity="error", markup=False)
            return
        self._show_filter()

    def clear_filter(self) -> None:
        """Show every row of the current view again."""
        self.current_table.set_filter(make_filter())
        self._show_filter()

    def _close_input(self, field: Input) -> None:
        field.display = False
        self.current_table.focus()

    def _show_filter(self) -> None:
        table = self.current_table
        table.border_subtitle = Content(f"filter: {printable(table.row_filter.describe())} "
                                        f"({len(table.shown)} of {len(table.items)})"
                                        if table.row_filter.active else "")

    def on_key(self, event: object) -> None:
        key = getattr(event, "key", "")
        focused = self.focused
        if key == "escape" and isinstance(focused, Input) and focused.id in ("command",
                                                                             "filter"):
            self._close_input(focused)

    def action_toggle_pause(self) -> None:
        """Hold or resume live updates (a banner shows while held)."""
        self.paused = not self.paused
        if self.paused:
            self._tick()
        else:
            self._banner()
            self.on_cluster_changed(ClusterChanged())

    # ---- details and console ----------------------------------------------------------

    def open_detail(self) -> None:
        """The detail screen of the record under the cursor."""
        table = self.current_table
        key = table.current_key
        if key is None or table not in (self.vm_table, self.node_table):
            return
        screen: DetailScreen = (VMDetailScreen(key, self.client) if table is self.vm_table
                                else NodeDetailScreen(key))
        self.push_screen(screen)

    def action_show_unreadable(self) -> None:
        """The records that could not be read, with the reason for each."""
        self.push_screen(UnreadableScreen(self.invalid))

    def action_open_console(self) -> None:
        """Follow the selected VM's console in the pane beside the tables."""
        vm = self.vm_table.current
        if vm is None or self.client is None:
            self.notify("select a VM first (2 shows the VMs)", severity="warning")
            return
        pane = self.console_pane
        pane.display = True
        pane.follow_vm(self.client, vm.name)
        pane.view.focus()

    def action_zoom_console(self) -> None:
        """Toggle the console pane between beside the tables and full screen."""
        if not self.console_pane.display:
            self.action_open_console()
        self.main_screen.query_one("#main").toggle_class("console-zoomed")

    def action_close_console(self) -> None:
        """Close the console pane."""
        self.console_pane.stop()
        self.console_pane.display = False
        self.main_screen.query_one("#main").remove_class("console-zoomed")
        self.current_table.focus()

    # ---- actions ----------------------------------------------------------------------

    def vm_action(self, name: str) -> None:
        """A VM action on the marked VMs or the one under the cursor."""
        self.actions.vm_action(name)

    def node_action(self, name: str) -> None:
        """A node action on the node under the cursor."""
        self.actions.node_action(name)

    def storage_action(self, name: str) -> None:
        """A storage action (pools, volumes, snapshots, OSDs) on the row under the cursor."""
        self.storage_actions.run(name)

    def allows(self, action: str) -> bool:
        """Whether a mutating action may run now (and say why not)."""
        if self.readonly:
            self.notify("read-only dashboard: no changes", severity="warning")
            return False
        if self.client is None or self.facts.connection != "connected":
            self.notify("ZooKeeper is not connected: actions are disabled", severity="error")
            return False
        return True

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in MUTATING or action in _STORAGE_MUTATING:
            if self.readonly:
                return False
            return None if self.facts.connection != "connected" else True
        return True

    def on_action_finished(self, message: ActionFinished) -> None:
        self.notify(printable(message.text, 400), severity="information" if message.ok
                    else "error", markup=False, timeout=8 if message.ok else 15)

    # ---- failures ---------------------------------------------------------------------

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A worker that raised: report and log it like a widget crash."""
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            error = event.worker.error
            self._report_crash(error if isinstance(error, Exception) else Exception(error))
            if event.worker.group == "connect":
                self._banner(f"cannot watch the cluster: {error}", "error")

    def _handle_exception(self, error: Exception) -> None:
        """A crash in a widget: report it in the UI and log it, never show a traceback."""
        self._report_crash(error)

    def _report_crash(self, error: BaseException) -> None:
        detail = "".join(traceback.format_exception(error))
        log.error("internal error in the dashboard:\n%s", detail)
        self.crashes.append(detail)
        where = f"; details in {self.log_path}" if self.log_path else ""
        summary = f"internal error: {type(error).__name__}: {printable(error, 200)}{where}"
        pump = active_message_pump.get(None)
        if pump is self or isinstance(pump, Screen):
            # the app's (or a screen's) own message loop has ended: it cannot go on, so
            # leave cleanly with a one-line reason rather than sit frozen
            self.fatal_error = summary
            self.exit(1)
            return
        self.notify(summary + " (that part of the screen stopped; the rest carries on)",
                    severity="error", markup=False, timeout=30)

    async def on_unmount(self) -> None:
        self._quitting.set()
        self.console_pane.stop()
        if self.store is not None:
            self.store.stop()
        if self.client is not None:
            self.client.close()


__all__ = ["Dashboard"]
