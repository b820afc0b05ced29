"""Helpers for driving the dashboard under Textual's Pilot against a real cluster."""

from __future__ import annotations

import time
from collections.abc import Callable

from textual.pilot import Pilot

from pvc_tui.tui.app import Dashboard


async def until(pilot: Pilot[int], check: Callable[[], object], timeout: float = 20.0,
                what: str = "condition") -> None:
    """Let the app run until `check()` is true (the UI processes events meanwhile)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


def row_text(app: Dashboard, table_id: str, key: str) -> list[str]:
    """The plain text of one row of a table (marker column excluded)."""
    table = app.node_table if table_id == "nodes" else app.vm_table
    return [cell.plain for cell in table.get_row(key)[1:]]
