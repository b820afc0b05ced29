"""Every free-text input the dashboard takes (storage prompts, whether opened by key or
from the command palette, typed-name confirmations, the `:` command line and the `/`
filter), given malformed values: a one-line error in the UI, the dialog stays open, and
the ZooKeeper tree is byte-for-byte unchanged."""

from __future__ import annotations

from textual.pilot import Pilot
from textual.widgets import Button, Input, Label

from pvc_tui.cluster import ClusterClient
from pvc_tui.tui.app import Dashboard
from pvc_tui.tui.dialogs import PromptScreen, TypeNameScreen
from tests.conftest import dump_tree
from tests.dashboard_helpers import seed_cluster, seed_storage, until

HOSTILE = "v\x1b]52;c;aGVsbG8=\x07\u202e"
# (view key, action key, row to select, field values, what the error line says)
PROMPTS: list[tuple[str, str, str, list[str], str]] = [
    ("3", "n", "", ["bad/name", "64", ""], "invalid"),
    ("3", "n", "", ["p1", "100", ""], "power of two"),
    ("3", "n", "", ["p1", "64", "size=1,min=3"], "min"),
    ("3", "n", "", ["p1", "64", "size=x"], "replication"),
    ("3", "g", "rbd", ["-8"], "power of two"),
    ("3", "g", "rbd", ["many"], "power of two"),
    ("4", "n", "", ["", "v1", "1G"], "pool"),
    ("4", "n", "", ["rbd", ".x", "1G"], "invalid"),
    ("4", "n", "", ["rbd", HOSTILE, "1G"], "invalid"),
    ("4", "n", "", ["rbd", "v1", "16Q"], "size"),
    ("4", "n", "", ["rbd", "v1", "0G"], "size"),
    ("4", "e", "", ["ten"], "size"),
    ("4", "R", "", ["../x"], "invalid"),
    ("4", "C", "", ["a@b", ""], "invalid"),
    ("4", "C", "", ["copy", "s@1"], "invalid"),
    ("4", "t", "", ["s@1"], "invalid"),
]
COMMAND_LINES = [":frobnicate", ":vm nosuchfield=1", ":vm /[unclosed", ":node state"]


def _record_notes(app: Dashboard) -> list[str]:
    """Every notification the app shows from now on (they expire from the screen)."""
    notes: list[str] = []
    show = app.notify

    def notify(message: str, *args: object, **kwargs: object) -> None:
        notes.append(message)
        show(message, *args, **kwargs)  # type: ignore[arg-type]

    app.notify = notify  # type: ignore[method-assign]
    return notes


async def _fill_and_submit(pilot: Pilot[int], app: Dashboard, values: list[str]) -> str:
    screen = app.screen
    assert isinstance(screen, PromptScreen), screen
    fields = list(screen.query(".prompt-field").results(Input))
    assert len(fields) == len(values), (screen, values)
    for field, value in zip(fields, values, strict=True):
        field.value = value
    fields[-1].focus()
    await pilot.press("enter")
    await pilot.pause(0.1)
    assert app.screen is screen, "a malformed value closed the prompt"
    return str(screen.query_one("#prompt-error", Label).render())


async def test_malformed_dashboard_input_changes_nothing(client: ClusterClient,
                                                         zk_hosts: str) -> None:
    seed_cluster(client)
    seed_storage(client)
    before = dump_tree(client.zk)
    app = Dashboard(zk_hosts)
    failures: list[str] = []
    notes = _record_notes(app)
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, lambda: "rbd" in app.pool_table.items and
                    len(app.volume_table.items) > 0, what="storage shown")
        for view, key, row, values, said in PROMPTS:
            await pilot.press(view)
            if row:
                app.current_table.move_to(row)
            await pilot.press(key)
            await until(pilot, lambda: isinstance(app.screen, PromptScreen), what=key)
            error = await _fill_and_submit(pilot, app, values)
            if said not in error.lower() or "\n" in error.strip() or "\x1b" in error:
                failures.append(f"{view}{key} {values!r}: error line {error!r}")
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, PromptScreen), what="closed")

        # the same prompt opened from the command palette
        await pilot.press("ctrl+p")
        await pilot.press(*"new volume")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen), what="palette")
        error = await _fill_and_submit(pilot, app, ["rbd", "v1", "-5G"])
        if "size" not in error.lower():
            failures.append(f"palette new volume: error line {error!r}")
        await pilot.press("escape")

        # a typed-name confirmation with the wrong name does nothing
        await pilot.press("4", "D")
        await until(pilot, lambda: isinstance(app.screen, TypeNameScreen), what="remove")
        await pilot.press("tab", *"not-the-name", "enter")
        await pilot.pause(0.2)
        assert isinstance(app.screen, TypeNameScreen)
        assert app.screen.query_one("#confirm", Button).disabled
        await pilot.press("escape")

        # the command line and the filter
        for line in COMMAND_LINES:
            count = len(notes)
            await pilot.press("colon", *line[1:], "enter")
            await until(pilot, lambda n=count: len(notes) > n, what=line)  # type: ignore[misc]
            if "\n" in notes[-1].strip():
                failures.append(f"{line!r}: {notes[-1]!r}")
        count = len(notes)
        await pilot.press("1", "slash", *"[unclosed", "enter")
        await until(pilot, lambda: len(notes) > count, what="bad filter")
        assert "invalid regular expression" in notes[-1]
        assert app.is_running and app.crashes == []
    assert not failures, "\n".join(failures)
    assert dump_tree(client.zk) == before
