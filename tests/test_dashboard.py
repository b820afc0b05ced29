"""The dashboard under Pilot, against a real ZooKeeper and real agents (test driver)."""

from __future__ import annotations

import asyncio
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from textual.widgets import Static

from pvc_tui.cluster import ClusterClient, layout
from pvc_tui.cluster.connection import ensure_schema
from pvc_tui.cluster.layout import VMState
from pvc_tui.sandbox.zookeeper import (
    start_zookeeper,
    stop_zookeeper,
    zookeeper_unavailable_reason,
)
from pvc_tui.tui.app import Dashboard
from pvc_tui.tui.console_pane import ConsolePane, ConsoleWake
from pvc_tui.tui.dialogs import ConfirmScreen, TargetPicker, TypeNameScreen
from pvc_tui.tui.progress import DomainProgressScreen
from tests.conftest import AgentFactory, require, vm_xml
from tests.dashboard_helpers import row_text, until, write_node
from tests.test_cli import pvc
from tests.test_console import FAST, running_vm, write

SIZE = (160, 40)


@pytest.fixture
def cluster(client: ClusterClient, start_agent: AgentFactory) -> Iterator[ClusterClient]:
    """Three nodes and four running VMs."""
    for name in ("hv1", "hv2", "hv3"):
        start_agent(name)
    for i, node in enumerate(("hv1", "hv1", "hv2", "hv3")):
        client.define_vm(vm_xml(f"web{i + 1}"), node, start=True)
    for i in range(4):
        client.wait_vm_state(client.get_vm(f"web{i + 1}"), VMState.START, 20)
    yield client


def loaded(app: Dashboard, vms: int, nodes: int = 3) -> bool:
    return len(app.vm_table.items) == vms and len(app.node_table.items) == nodes


async def test_cli_change_appears_in_the_table(cluster: ClusterClient, zk_hosts: str) -> None:
    app = Dashboard(zk_hosts)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: loaded(app, 4), what="first load")
        uuid = cluster.get_vm("web2").uuid
        assert row_text(app, "vms", uuid)[1] == "start"
        result = pvc("vm", "stop", "web2", "--wait", zk=zk_hosts)
        assert result.returncode == 0, result.stderr
        await until(pilot, lambda: row_text(app, "vms", uuid)[1:3] == ["stop", "shutoff"],
                    what="web2 shown stopped")
        cluster.define_vm(vm_xml("db9"), "hv2")
        await until(pilot, lambda: loaded(app, 5), what="db9 added")
        assert app.crashes == []


async def test_migrate_by_keys(cluster: ClusterClient, zk_hosts: str) -> None:
    app = Dashboard(zk_hosts)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: loaded(app, 4), what="first load")
        web1 = cluster.get_vm("web1")
        app.vm_table.move_to(web1.uuid)
        await pilot.press("m")
        await until(pilot, lambda: isinstance(app.screen, TargetPicker), what="picker")
        picker = app.screen
        assert isinstance(picker, TargetPicker)
        options = picker.query_one("#targets")
        # hv1 is listed as not valid (the VM's own node); hv2/hv3 are valid
        ids = [options.get_option_at_index(i).id for i in range(options.option_count)]
        assert sorted(ids) == ["hv1", "hv2", "hv3"]
        assert options.get_option("hv1").disabled
        # choose hv3 explicitly
        options.highlighted = ids.index("hv3")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm")
        assert app.focused is not None and app.focused.id == "cancel"
        await pilot.press("tab", "enter")  # to Confirm
        await until(pilot, lambda: row_text(app, "vms", web1.uuid)[3] == "hv3",
                    what="web1 on hv3")
        await until(pilot, lambda: cluster.get_vm("web1").migration is None, what="finished")
        assert cluster.get_vm("web1").node == "hv3"
        assert cluster.get_vm("web1").previous_node == "hv1"
        assert app.crashes == []


async def test_cancel_is_the_default(cluster: ClusterClient, zk_hosts: str) -> None:
    app = Dashboard(zk_hosts)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: loaded(app, 4), what="first load")
        web1 = cluster.get_vm("web1")
        app.vm_table.move_to(web1.uuid)
        await pilot.press("x")  # power off
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm")
        await pilot.press("enter")  # Cancel has the focus
        await pilot.pause(0.3)
        assert cluster.get_vm("web1").state == "start"


async def test_readonly_has_no_mutating_action(cluster: ClusterClient, zk_hosts: str) -> None:
    app = Dashboard(zk_hosts, readonly=True)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: loaded(app, 4), what="first load")
        for view, keys in (("vms", "mMuosdxr"), ("nodes", "fyR")):
            await pilot.press("1" if view == "nodes" else "2")
            active = {b.binding.action for b in app.screen.active_bindings.values()}
            for key in keys:
                await pilot.press(key)
                await pilot.pause(0.05)
                assert not isinstance(app.screen, ConfirmScreen | TargetPicker)
            assert not active & {"vm('migrate')", "vm('stop')", "node('flush')",
                                 "node('ready')", "vm('restart')", "vm('start')"}
        from pvc_tui.tui.palette import palette_entries

        names = [name for name, _, _ in palette_entries(app)]
        assert not [n for n in names if n.startswith(("VM:", "Node:"))]
        assert cluster.get_vm("web1").state == "start"


async def test_console_pane_follows_new_lines_sanitised(
        client: ClusterClient, start_agent: AgentFactory, zk_hosts: str) -> None:
    agent = start_agent("hv1", *FAST)
    log = running_vm(client, agent, "web1")
    write(log, b"booting\n")
    app = Dashboard(zk_hosts)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: loaded(app, 1, 1), what="first load")
        assert app.vm_table.current is not None
        await pilot.press("c")
        view = app.console_pane.view
        await until(pilot, lambda: "booting" in view.text(), what="first line")
        assert app.focused is view
        # hostile bytes: title set, OSC 52 clipboard write, a device query, markup
        write(log, b"\x1b]0;pwned\x07\x1b]52;c;ZXZpbA==\x07\x1b[6nready [@click=app.quit]x\n")
        await until(pilot, lambda: "ready" in view.text(), what="appended line")
        last = view.text().splitlines()[-1]
        assert last == "ready [@click=app.quit]x"
        assert "\x1b" not in view.text()
        # mutating keys are not live while the console has the focus
        await pilot.press("x", "r", "m")
        await pilot.pause(0.2)
        assert not isinstance(app.screen, ConfirmScreen | TargetPicker)
        assert client.get_vm("web1").state == "start"
        # scrolled up: following pauses and counts new lines; End resumes
        write(log, b"".join(b"line %d\n" % i for i in range(200)))
        await until(pilot, lambda: "line 199" in view.text(), what="200 lines")
        await pilot.press("home")
        write(log, b"after 1\nafter 2\n")
        await until(pilot, lambda: view.new_lines == 2, what="2 new lines counted")
        assert not view.following
        await pilot.press("end")
        assert view.following and view.new_lines == 0
        assert app.crashes == []


async def test_hostile_names_display_literally(client: ClusterClient, zk_hosts: str,
                                               start_agent: AgentFactory) -> None:
    """Records written by something other than pvc may carry any text at all."""
    start_agent("hv1")
    web1 = client.define_vm(vm_xml("web1"), "hv1")
    data, _ = client.zk.get(layout.vm_path(web1.uuid))
    record = layout.decode(data, layout.VM_FIELDS)
    hostile = {"vm-[/x]": "[@click=app.quit]", "[b]bold\x1b]0;t\x07": "vm [/x] \x1b[2J"}
    for name, reason in hostile.items():
        uid = str(uuidlib.uuid4())
        client.zk.create(layout.vm_path(uid), layout.encode(
            {**record, "uuid": uid, "name": name, "state": "fail", "failed_reason": reason}))
    app = Dashboard(zk_hosts)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: loaded(app, 3, 1), what="first load")
        names = sorted(row[0] for row in (row_text(app, "vms", k) for k in app.vm_table.items))
        assert names == ["[b]bold", "vm-[/x]", "web1"]
        reasons = {row_text(app, "vms", k)[-1] for k in app.vm_table.items}
        assert {"[@click=app.quit]", "vm [/x] "} <= reasons  # the ESC sequence is dropped whole
        await pilot.press("end", "enter")  # the detail screen of a hostile VM
        await pilot.pause(0.3)
        await pilot.press("escape")
        await pilot.press("colon", *"vm /vm-\\[/x]", "enter")  # a regex: vm-\[/x]
        await pilot.pause(0.2)
        assert len(app.vm_table.shown) == 1
        assert app.is_running and app.crashes == []


async def test_zookeeper_loss_banner_disabled_actions_and_resync(tmp_path: Path) -> None:
    """ZooKeeper stops: banner, stale data, actions disabled; it returns: live again,
    with what changed meanwhile."""
    require(zookeeper_unavailable_reason())
    server = start_zookeeper(tmp_path / "zk", fast_unsafe=True)
    try:
        with ClusterClient.connect(server.address) as writer:
            ensure_schema(writer.zk)
            write_node(writer, "hv1", alive=False)
            writer.define_vm(vm_xml("web1"), "hv1")
        app = Dashboard(server.address)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: loaded(app, 1, 1), what="first load")
            stop_zookeeper(server)
            await until(pilot, lambda: app.facts.connection != "connected", what="loss seen")
            banner = app.main_screen.query_one("#banner", Static)
            assert banner.display and "stale" in str(banner.render())
            assert app.facts.stale_since is not None
            assert app.check_action("stop", ()) is None  # shown, disabled
            app.vm_table.move_to(next(iter(app.vm_table.items)))
            await pilot.press("x")
            await pilot.pause(0.2)
            assert not isinstance(app.screen, ConfirmScreen)
            server = start_zookeeper(tmp_path / "zk", port=server.port, fast_unsafe=True)
            with ClusterClient.connect(server.address, timeout=20) as writer:
                writer.define_vm(vm_xml("web2"), "hv1")
            await until(pilot, lambda: loaded(app, 2, 1), timeout=60, what="resync")
            await until(pilot, lambda: app.facts.connection == "connected", what="live")
            assert not banner.display and app.facts.stale_since is None
            assert app.check_action("stop", ()) is True
            assert app.crashes == []
    finally:
        stop_zookeeper(server)


async def test_pause_sort_filter_keep_the_cursor(cluster: ClusterClient, zk_hosts: str) -> None:
    app = Dashboard(zk_hosts)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: loaded(app, 4), what="first load")
        web3 = cluster.get_vm("web3").uuid
        app.vm_table.move_to(web3)
        await pilot.press("S", "S", "S")  # sort by node: web3 moves, the cursor follows
        assert app.vm_table.sort_column == "node"
        assert app.vm_table.current_key == web3
        await pilot.press("p")
        cluster.define_vm(vm_xml("db1"), "hv2")
        await pilot.pause(0.5)
        assert len(app.vm_table.items) == 4  # held while paused
        assert "PAUSED" in str(app.main_screen.query_one("#banner", Static).render())
        await pilot.press("p")
        await until(pilot, lambda: loaded(app, 5), what="held change applied")
        assert app.vm_table.current_key == web3
        await pilot.press("slash", *"!web", "enter")  # inverted: only db1
        assert [row_text(app, "vms", k)[0] for k in app.vm_table.shown] == ["db1"]
        await pilot.press("escape")  # clears the filter
        assert len(app.vm_table.shown) == 5
        await pilot.press("slash", *"(", "enter")  # a bad regex changes nothing
        assert len(app.vm_table.shown) == 5 and app.crashes == []


async def test_flush_by_keys_streams_progress(cluster: ClusterClient, zk_hosts: str) -> None:
    app = Dashboard(zk_hosts)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: loaded(app, 4), what="first load")
        await pilot.press("1")
        app.node_table.move_to("hv1")
        await pilot.press("f")
        await until(pilot, lambda: isinstance(app.screen, TypeNameScreen), what="confirm")
        await pilot.press("enter")  # Cancel is focused: nothing happens
        assert cluster.get_node("hv1").domain_state == "ready"
        await pilot.press("f")
        await until(pilot, lambda: isinstance(app.screen, TypeNameScreen), what="confirm")
        await pilot.press("tab", *"hv1", "enter")
        await until(pilot, lambda: isinstance(app.screen, DomainProgressScreen), what="view")
        progress = app.screen
        assert isinstance(progress, DomainProgressScreen)
        await until(pilot, lambda: progress.outcome is not None, timeout=60, what="flushed")
        assert progress.outcome is not None and progress.outcome.ok, progress.outcome
        assert sorted(i["vm"] for i in progress.items) == ["web1", "web2"]
        assert all(v.node != "hv1" for v in cluster.list_vms())
        await pilot.press("escape")
        await until(pilot, lambda: row_text(app, "nodes", "hv1")[2] == "flushed",
                    what="node row flushed")


async def test_a_widget_crash_is_reported_not_fatal(
        cluster: ClusterClient, zk_hosts: str, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    app = Dashboard(zk_hosts)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: loaded(app, 4), what="first load")
        await pilot.press("c")  # the console pane follows web1

        def broken(self: object, message: object) -> None:
            raise RuntimeError("injected fault [/x]")

        monkeypatch.setattr(ConsolePane, "on_console_wake", broken)  # a bug, injected
        app.console_pane.post_message(ConsoleWake())
        # (pilot.pause waits for every widget to go idle, and the crashed pane never
        # will: wait with plain sleeps from here on)
        await sleep_until(lambda: bool(app.crashes), "crash reported")
        assert "injected fault" in caplog.text and "Traceback" in caplog.text
        shown = [n.message for n in app._notifications]
        assert any("internal error: RuntimeError: injected fault [/x]" in m for m in shown)
        # the rest of the dashboard carries on
        cluster.define_vm(vm_xml("db1"), "hv2")
        await sleep_until(lambda: loaded(app, 5), "still live")
        assert app.is_running and app.fatal_error == ""


async def sleep_until(check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_bulk_shutdown_of_marked_rows(cluster: ClusterClient, zk_hosts: str) -> None:
    app = Dashboard(zk_hosts)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: loaded(app, 4), what="first load")
        app.vm_table.move_to(cluster.get_vm("web1").uuid)
        await pilot.press("space", "space")  # marks web1 and web2 (space moves down)
        assert {v.name for v in app.vm_table.selection()} == {"web1", "web2"}
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm")
        await pilot.press("tab", "enter")
        await until(pilot, lambda: {cluster.get_vm(n).power_state for n in ("web1", "web2")}
                    == {"shutoff"}, timeout=30, what="both shut down")
        assert cluster.get_vm("web3").state == "start"
        await until(pilot, lambda: any("2 of 2 done" in n.message
                                       for n in app._notifications), what="outcome")


async def test_palette_and_console_search_and_save(
        client: ClusterClient, start_agent: AgentFactory, zk_hosts: str,
        tmp_path: Path) -> None:
    log = running_vm(client, start_agent("hv1", *FAST), "web1")
    # the agent keeps 100 lines (FAST): the match is 60 lines up, off the screen
    write(log, b"".join(b"boot line %d\n" % i for i in range(20)) + b"needle here\n"
          + b"".join(b"later %d\n" % i for i in range(60)))
    app = Dashboard(zk_hosts)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: loaded(app, 1, 1), what="first load")
        await pilot.press("ctrl+p", *"show nodes", "enter")  # the palette reaches views
        await until(pilot, lambda: app.current_table is app.node_table, what="node view")
        await pilot.press("2", "c")
        view = app.console_pane.view
        await until(pilot, lambda: "later 59" in view.text(), what="console loaded")
        await pilot.press("slash", *"needle", "enter")
        assert not view.following  # searching holds the view where the match is
        saved = tmp_path / "web1.log"
        await pilot.press("s")
        field = app.screen.query_one("#path")
        field.value = str(saved)  # type: ignore[attr-defined]
        await pilot.press("enter")
        await until(pilot, saved.exists, what="saved buffer")
        assert "needle here" in saved.read_text() and "\x1b" not in saved.read_text()
