"""The dashboard's storage views and actions, against a real tiny Ceph and primary agent."""

from __future__ import annotations

from textual.widgets import Label

from pvc_tui.tui.app import Dashboard
from pvc_tui.tui.dialogs import ChoiceScreen, ConfirmScreen, PromptScreen, TypeNameScreen
from pvc_tui.tui.header import ClusterHeader
from tests.conftest import StorageCluster
from tests.dashboard_helpers import until

SIZE = (160, 40)


def cells(app: Dashboard, table: str, key: str) -> list[str]:
    return [cell.plain for cell in app.views[table].get_row(key)[1:]]


def header(app: Dashboard) -> str:
    return str(app.main_screen.query_one(ClusterHeader).render())


async def test_storage_views_and_actions(storage: StorageCluster) -> None:
    client = storage.client
    app = Dashboard(storage.hosts)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: "rbd" in app.pool_table.items, what="pools")
        assert "ceph HEALTH_OK" in header(app)
        await pilot.press("3")
        assert app.focused is app.pool_table
        row = cells(app, "pools", "rbd")
        assert row[0] == "rbd" and "%" in row[1] and row[1].count("·") + row[1].count("█") >= 1
        await pilot.press("5")
        assert cells(app, "osds", "0")[:4] == ["osd.0", cells(app, "osds", "0")[1], "up", "in"]

        # a new volume through the prompt; a bad size is refused in the dialog
        await pilot.press("4", "n")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen), what="prompt")
        await pilot.press("tab", *"dash1", "tab", *"16Q", "enter")
        await pilot.pause(0.2)
        assert isinstance(app.screen, PromptScreen)
        error = app.screen.query_one("#prompt-error", Label).render()
        assert "invalid size" in str(error)
        await pilot.press("backspace", "M", "enter")
        await until(pilot, lambda: "rbd/dash1" in app.volume_table.items, what="volume shown")
        assert cells(app, "volumes", "rbd/dash1")[:3] == ["rbd", "dash1", "16 MiB"]

        # shrinking asks for the name to be typed
        app.volume_table.move_to("rbd/dash1")
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen), what="resize")
        await pilot.press(*["backspace"] * 10, *"8M", "enter")
        await until(pilot, lambda: isinstance(app.screen, TypeNameScreen), what="shrink")
        await pilot.press("tab", *"dash1", "enter")
        await until(pilot, lambda: cells(app, "volumes", "rbd/dash1")[2] == "8 MiB",
                    what="shrunk")

        # a snapshot, then removing the volume is refused (Ceph: it has snapshots)
        await pilot.press("t")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen), what="snapshot")
        await pilot.press("enter")
        await until(pilot, lambda: cells(app, "volumes", "rbd/dash1")[4] == "1",
                    what="snapshot counted")
        await pilot.press("D")
        await until(pilot, lambda: isinstance(app.screen, TypeNameScreen), what="remove")
        await pilot.press("enter")  # Cancel has the focus
        assert "rbd/dash1" in app.volume_table.items

        # remove the snapshot (pick, confirm), then the volume (typed name)
        await pilot.press("T")
        await until(pilot, lambda: isinstance(app.screen, ChoiceScreen), what="snapshots")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm")
        await pilot.press("tab", "enter")
        await until(pilot, lambda: cells(app, "volumes", "rbd/dash1")[4] == "0",
                    what="snapshot gone")
        await pilot.press("D")
        await until(pilot, lambda: isinstance(app.screen, TypeNameScreen), what="remove")
        await pilot.press("tab", *"dash1", "enter")
        await until(pilot, lambda: "rbd/dash1" not in app.volume_table.items,
                    what="volume gone")
        assert "dash1" not in {v.name for v in client.storage.volumes.list("rbd")}

        # an OSD flag by keys shows in the header
        await pilot.press("5", "f")
        await until(pilot, lambda: isinstance(app.screen, ChoiceScreen), what="flags")
        choices = app.screen
        assert isinstance(choices, ChoiceScreen)
        await pilot.press(*["down"] * 4, "enter")  # full pause noup nodown noout
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm")
        await pilot.press("tab", "enter")
        await until(pilot, lambda: "noout" in header(app), what="noout in the header")
        await pilot.press("F")
        await until(pilot, lambda: isinstance(app.screen, ChoiceScreen), what="set flags")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm")
        await pilot.press("tab", "enter")
        await until(pilot, lambda: "noout" not in header(app), what="noout cleared")
        assert app.crashes == []


async def test_storage_readonly_and_filter(storage: StorageCluster) -> None:
    storage.client.storage.volumes.add("rbd", "ro-vol", 4 << 20)
    app = Dashboard(storage.hosts, readonly=True)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: "rbd/ro-vol" in app.volume_table.items, what="volume")
        await pilot.press("4")
        app.volume_table.move_to("rbd/ro-vol")
        for key in "neRCtbTD":
            await pilot.press(key)
            await pilot.pause(0.05)
            assert not isinstance(app.screen, PromptScreen | TypeNameScreen | ChoiceScreen)
        from pvc_tui.tui.palette import palette_entries

        assert not [n for n, _, _ in palette_entries(app) if n.startswith("Storage:")]
        await pilot.press("colon", *"vol pool=rbd /ro-", "enter")
        assert app.volume_table.shown == {"rbd/ro-vol"}
    storage.client.storage.volumes.remove("rbd", "ro-vol")
