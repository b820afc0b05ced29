"""A DataTable kept current by keyed diffs: the node and VM views.

`ResourceTable` holds every record it was given (`items`) and shows those that pass
its filter. A change updates only the cells that differ, adds or removes one row, and
sorts only when a new row arrived or the sort column's value changed. The cursor stays
on the same record (row key) through updates, re-sorts and filters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, RowDoesNotExist

from pvc_tui.tui.columns import Cell, Column
from pvc_tui.tui.query import RowFilter

MARK_COLUMN = "mark"
MARK = Text("●", style="bold magenta")
NO_MARK = Text(" ")
# Beyond this many row removals, rebuilding the table is cheaper than removing rows
# one by one (DataTable.remove_row re-indexes every row).
REBUILD_THRESHOLD = 200


class ResourceTable(DataTable[Text]):
    """Rows of nodes or VMs, keyed by name or uuid, updated in place."""

    def __init__(self, columns: tuple[Column, ...], fields: Mapping[str, Callable[[Any], str]],
                 key_of: Callable[[Any], str], *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.columns_spec = columns
        self.fields = fields
        self.key_of = key_of
        self.items: dict[str, Any] = {}
        self.marked: set[str] = set()
        self.row_filter = RowFilter()
        self.sort_column = "name"
        self.sort_reverse = False
        self.shown: set[str] = set()
        self.applied_updates = 0  # cells changed since mount (figures and tests)

    def on_mount(self) -> None:
        self.add_column(" ", key=MARK_COLUMN, width=1)
        for column in self.columns_spec:
            self.add_column(column.label, key=column.key, width=column.width)

    # ---- what the cursor is on -------------------------------------------------------

    @property
    def current_key(self) -> str | None:
        """The row key under the cursor, if any row is shown."""
        if not self.row_count:
            return None
        try:
            row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        except (CellDoesNotExist, RowDoesNotExist):
            return None
        return str(row_key.value)

    @property
    def current(self) -> Any | None:
        """The record under the cursor."""
        key = self.current_key
        return self.items.get(key) if key else None

    def move_to(self, key: str | None) -> None:
        """Put the cursor on `key` if it is shown."""
        if key is not None and key in self.shown:
            self.move_cursor(row=self.get_row_index(key), animate=False)

    def selection(self) -> list[Any]:
        """The marked records, or else the one under the cursor."""
        marked = [self.items[k] for k in sorted(self.marked) if k in self.items]
        if marked:
            return marked
        return [self.current] if self.current is not None else []

    def toggle_mark(self) -> None:
        """Mark or unmark the record under the cursor."""
        key = self.current_key
        if key is None:
            return
        self.marked.symmetric_difference_update({key})
        self.update_cell(key, MARK_COLUMN, MARK if key in self.marked else NO_MARK)

    def clear_marks(self) -> None:
        """Unmark every row."""
        for key in self.marked & self.shown:
            self.update_cell(key, MARK_COLUMN, NO_MARK)
        self.marked.clear()

    # ---- applying changes -------------------------------------------------------------

    def _cells(self, key: str, item: Any) -> list[Text]:
        return [MARK if key in self.marked else NO_MARK,
                *(column.cell(item) for column in self.columns_spec)]

    def _visible(self, item: Any) -> bool:
        if not self.row_filter.active:
            return True
        values = {name: get(item) for name, get in self.fields.items()}
        text = " ".join(cell.plain for cell in self._cells("", item)[1:])
        return self.row_filter.matches(values, text)

    def apply(self, changes: Iterable[tuple[str, Any | None]]) -> int:
        """Apply (key, new record or None) changes; returns how many rows changed."""
        keep = self.current_key
        resort = False
        touched = 0
        for key, item in changes:
            if item is None:
                self.items.pop(key, None)
                self.marked.discard(key)
                if key in self.shown:
                    self.shown.discard(key)
                    self.remove_row(key)
                    touched += 1
                continue
            self.items[key] = item
            if not self._visible(item):
                if key in self.shown:
                    self.shown.discard(key)
                    self.remove_row(key)
                    touched += 1
                continue
            cells = self._cells(key, item)
            if key not in self.shown:
                self.add_row(*cells, key=key)
                self.shown.add(key)
                resort = True
                touched += 1
                continue
            row = self.get_row(key)
            changed = False
            for column_key, old, new in zip(self._column_keys(), row, cells, strict=True):
                if old != new:
                    self.update_cell(key, column_key, new)
                    self.applied_updates += 1
                    changed = True
                    resort = resort or column_key == self.sort_column
            touched += changed
        if resort:
            self._sort()
        if keep in self.shown:
            self.move_to(keep)
        return touched

    def _column_keys(self) -> list[str]:
        return [MARK_COLUMN, *(c.key for c in self.columns_spec)]

    def replace_all(self, items: Mapping[str, Any]) -> None:
        """Show exactly `items` (the first load, or a resynchronisation)."""
        gone = [k for k in self.items if k not in items]
        if len(gone) > REBUILD_THRESHOLD:
            self.items = {}
            self._rebuild()
        self.apply([*((k, None) for k in gone), *items.items()])

    # ---- filter and sort ---------------------------------------------------------------

    def set_filter(self, row_filter: RowFilter) -> None:
        """Show only the records `row_filter` passes."""
        self.row_filter = row_filter
        visible = {k for k, item in self.items.items() if self._visible(item)}
        if len(self.shown - visible) > REBUILD_THRESHOLD:
            self._rebuild()
        else:
            self.apply(list(self.items.items()))

    def set_sort(self, column: str, reverse: bool = False) -> None:
        """Sort by `column` (then by name); the cursor keeps its record."""
        keep = self.current_key
        self.sort_column, self.sort_reverse = column, reverse
        self._sort()
        self.move_to(keep)

    def _rebuild(self) -> None:
        keep = self.current_key
        self.clear()
        self.shown = set()
        rows = [(k, self._cells(k, item)) for k, item in self.items.items()
                if self._visible(item)]
        for key, cells in rows:
            self.add_row(*cells, key=key)
            self.shown.add(key)
        self._sort()
        self.move_to(keep)

    def _sort(self) -> None:
        if self.sort_column == "name":
            self.sort("name", key=lambda cell: cell.sort_key, reverse=self.sort_reverse)
        else:
            self.sort(self.sort_column, "name",
                      key=lambda cells: (cells[0].sort_key, cells[1].sort_key),
                      reverse=self.sort_reverse)


__all__ = ["Cell", "ResourceTable"]
