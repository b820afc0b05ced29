"""A fast-append, line-API view of a guest's serial console over a bounded ring buffer.

Lines are untrusted: rendered as plain segments, never parsed as markup or ANSI. A prefix
sum of display rows per line maps a screen row to its line in O(log n), wrapped or not.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate, islice
from typing import ClassVar

from rich.cells import cell_len, chop_cells
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

__all__ = ["ConsoleView"]

# Defence in depth: the sanitizer upstream should already have removed all of these.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _replace_control(match: re.Match[str]) -> str:
    return "" if match.group() == "\r" else "\ufffd"


def _clean(lines: Sequence[str]) -> list[str]:
    """Expand tabs, neutralise control characters and split embedded newlines (O(batch))."""
    joined = "\n".join(lines)
    if "\t" in joined:
        joined = joined.expandtabs()  # tab stops restart after each newline
    return _CONTROL.sub(_replace_control, joined).split("\n")


def _width(text: str) -> int:
    return len(text) if text.isascii() else cell_len(text)


def _cuts(text: str, width: int, wrap_width: int) -> list[int]:
    """Cell offsets where `text` folds into rows of at most `wrap_width` cells."""
    if wrap_width <= 0 or width <= wrap_width:
        return [0, width]
    if text.isascii():
        return [*range(0, width, wrap_width), width]
    return [0, *accumulate(cell_len(piece) for piece in chop_cells(text, wrap_width))]


def _row_count(text: str, width: int, wrap_width: int) -> int:
    return 1 if wrap_width <= 0 or width <= wrap_width else len(_cuts(text, width, wrap_width)) - 1


_MOVES = {
    "up": "scroll_up",
    "down": "scroll_down",
    "left": "scroll_left",
    "home": "scroll_home",
    "right": "scroll_right",
    "pageup": "scroll_page_up",
    "pagedown": "scroll_page_down",
}


class ConsoleView(ScrollView, can_focus=True):
    """Scrollable console output with follow mode, wrap toggle and plain-text search."""

    ALLOW_SELECT = False  # saving goes through text(); the terminal's own selection still works

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "console-view--marker",
        "console-view--match",
        "console-view--current",
    }

    DEFAULT_CSS = """
    ConsoleView {
        background: $surface;
        color: $text;
        overflow-y: scroll;
        overflow-x: auto;
        &:focus { background-tint: $foreground 5%; }
        & > .console-view--marker { text-style: bold reverse; }
        & > .console-view--match { background: $warning; color: $background; }
        & > .console-view--current { background: $accent 40%; }
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        *(Binding(key, f"move('{key}')", show=False) for key in _MOVES),
        Binding("end", "follow", "Follow", show=False),
        Binding("n", "find_next", "Next match", show=False),
        Binding("N", "find_previous", "Previous match", show=False),
        Binding("w", "toggle_wrap", "Wrap", show=False),
    ]

    class FollowChanged(Message):
        """Posted when following or the count of unseen lines changes."""

        def __init__(self, console_view: ConsoleView, following: bool, new_lines: int) -> None:
            super().__init__()
            self.console_view = console_view
            self.following = following
            self.new_lines = new_lines

        @property
        def control(self) -> ConsoleView:
            """The ConsoleView that posted the message."""
            return self.console_view

    wrap: reactive[bool] = reactive(False)
    """Fold long lines at the widget's width instead of cropping them."""

    new_lines: reactive[int] = reactive(0, repaint=False)
    """Lines appended since following paused."""

    def __init__(
        self,
        max_lines: int = 20_000,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._max_lines = max(1, max_lines)
        self._cursor: int | None = None  # absolute line number of the current match
        self._needle = ""
        self._pattern: re.Pattern[str] | None = None
        self._reset()
        self._following = True
        self._posted = (True, 0)
        self._adjusting = False
        self._built_width = 0

    def _reset(self) -> None:
        # Storage position p holds absolute line number _base + p; live lines start at _head.
        self._lines: list[str] = []
        self._widths: list[int] = []
        self._cum: list[int] = [0]  # _cum[p]: display rows before storage position p
        self._base = 0
        self._head = 0
        self._dropped = 0
        self._max_width = 0
        self._markers: set[int] = set()
        self._partial = ""
        self._cursor = None

    @property
    def following(self) -> bool:
        """True while new lines scroll into view."""
        return self._following

    @property
    def dropped(self) -> int:
        """Number of oldest lines discarded to stay within max_lines."""
        return self._dropped

    @property
    def line_count(self) -> int:
        """Number of complete lines in the buffer."""
        return len(self._lines) - self._head

    @property
    def _wrap_width(self) -> int:
        return self.scrollable_content_region.width if self.wrap else 0

    def append_lines(self, lines: Sequence[str]) -> None:
        """Append complete console lines (plain text, never markup)."""
        if lines:
            self._append(_clean(lines), marker=False)

    def append_marker(self, text: str) -> None:
        """Append a line written by the tool itself, shown in the marker style."""
        self._append(_clean([text]), marker=True)

    def set_partial(self, text: str) -> None:
        """Show `text` as the unterminated last row; "" hides it."""
        self._partial = _clean([text])[0] if text else ""
        self._update_virtual_size()
        if self._following:
            self._scroll_quietly(end=True)
        self.refresh()

    def clear(self) -> None:
        """Remove all lines, the partial line and the search cursor."""
        self._reset()
        self.new_lines = 0
        self._update_virtual_size()
        self._scroll_quietly(0, 0)
        self._following = True
        self._notify()
        self.refresh()

    def text(self) -> str:
        """The whole buffer as text, including the partial line if any."""
        lines = self._lines[self._head :]
        if self._partial:
            lines = [*lines, self._partial]
        return "\n".join(lines)

    def _append(self, new: list[str], *, marker: bool) -> None:
        first = self._base + len(self._lines)
        widths = [_width(line) for line in new]
        wrap_width = self._wrap_width
        self._lines.extend(new)
        self._widths.extend(widths)
        if wrap_width:
            rows = map(_row_count, new, widths, [wrap_width] * len(new))
            self._cum.extend(islice(accumulate(rows, initial=self._cum[-1]), 1, None))
        else:
            last = self._cum[-1]
            self._cum.extend(range(last + 1, last + len(new) + 1))
        self._max_width = max(self._max_width, *widths)
        if marker:
            self._markers.update(range(first, first + len(new)))
        dropped_rows = self._prune()
        self._update_virtual_size()
        if self._following:
            self._scroll_quietly(end=True)
        else:
            self.new_lines += len(new)
            if dropped_rows:  # keep the operator's view on the same content
                self._scroll_quietly(y=self.scroll_y - dropped_rows)
        self._notify()
        self.refresh()

    def _prune(self) -> int:
        """Drop lines beyond max_lines; return the number of display rows removed."""
        excess = self.line_count - self._max_lines
        if excess <= 0:
            return 0
        old_head = self._head
        self._head += excess
        self._dropped += excess
        rows = self._cum[self._head] - self._cum[old_head]
        if self._head >= max(self._max_lines, 1024):  # amortised compaction
            cut = self._head
            del self._lines[:cut], self._widths[:cut], self._cum[:cut]
            self._base += cut
            self._head = 0
            self._markers = {m for m in self._markers if m >= self._base}
        return rows

    @property
    def _line_rows(self) -> int:
        return self._cum[-1] - self._cum[self._head]

    def _partial_cuts(self) -> list[int]:
        return _cuts(self._partial, _width(self._partial), self._wrap_width)

    def _update_virtual_size(self) -> None:
        height = self._line_rows
        width = self._max_width
        if self._partial:
            height += len(self._partial_cuts()) - 1
            width = max(width, _width(self._partial))
        self.virtual_size = Size(0 if self.wrap else width, height)

    def _rebuild_rows(self) -> None:
        """Recompute display rows for every line (wrap toggled or width changed)."""
        wrap_width = self._built_width = self._wrap_width
        top = self._line_at_row(round(self.scroll_y))
        if wrap_width:
            rows = map(_row_count, self._lines, self._widths, [wrap_width] * len(self._lines))
            self._cum = list(accumulate(rows, initial=0))
        else:
            self._cum = list(range(len(self._lines) + 1))
        self._update_virtual_size()
        if self._following:
            self._scroll_quietly(end=True)
        else:
            self._scroll_quietly(0, self._cum[top] - self._cum[self._head])
        self.refresh()

    def _line_at_row(self, row: int) -> int:
        """Storage position of the line shown at display row `row` (clamped)."""
        if self.line_count == 0:
            return self._head
        target = row + self._cum[self._head]
        position = bisect_right(self._cum, target, self._head, len(self._lines)) - 1
        return max(self._head, position)

    def watch_wrap(self) -> None:
        self._rebuild_rows()

    def on_resize(self, event: events.Resize) -> None:
        if self._wrap_width != self._built_width:
            self._rebuild_rows()
        elif self._following:
            self._scroll_quietly(end=True)

    def toggle_wrap(self) -> None:
        """Switch between folding and cropping long lines."""
        self.wrap = not self.wrap

    def _scroll_quietly(
        self, x: float | None = None, y: float | None = None, *, end: bool = False
    ) -> None:
        """Scroll without treating the move as the operator's."""
        if not self.is_mounted:
            return  # the first resize positions the view
        self._adjusting = True
        try:
            if end:
                self.scroll_end(animate=False, immediate=True, x_axis=False)
            else:
                self.scroll_to(x, y, animate=False)
        finally:
            self._adjusting = False

    def _set_following(self, following: bool) -> None:
        self._following = following
        if following:
            self.new_lines = 0
        self._notify()

    def _notify(self) -> None:
        state = (self._following, self.new_lines)
        if state != self._posted:
            self._posted = state
            self.post_message(self.FollowChanged(self, *state))

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if self._adjusting:
            return
        at_end = round(new_value) >= self.max_scroll_y
        if new_value < old_value and not at_end and self._following:
            self._set_following(False)
        elif new_value > old_value and at_end and not self._following:
            self._set_following(True)

    def action_move(self, key: str) -> None:
        """Scroll for a navigation key; moving away from the end pauses following."""
        if key in _MOVES:
            getattr(self, _MOVES[key])(animate=False)

    def action_follow(self) -> None:
        """Scroll to the last line and resume following."""
        self._scroll_quietly(x=0)
        self._scroll_quietly(end=True)
        self._set_following(True)

    def find(self, pattern: str, forward: bool = True) -> bool:
        """Find `pattern` (case-insensitive plain text), wrapping around; pauses following."""
        if not pattern or self.line_count == 0:
            return False
        regex = re.compile(re.escape(pattern), re.IGNORECASE)
        head, end = self._head, len(self._lines)
        height = max(1, self.scrollable_content_region.height)
        top = self._line_at_row(round(self.scroll_y))
        bottom = self._line_at_row(round(self.scroll_y) + height - 1)
        cursor = None if self._cursor is None else self._cursor - self._base
        if cursor is not None and top <= cursor <= bottom:
            start = cursor + 1 if forward else cursor - 1
        else:
            start = top if forward else bottom
        count = end - head
        step = 1 if forward else -1
        lines = self._lines
        for offset in range(count):
            position = head + (start - head + step * offset) % count
            match = regex.search(lines[position])
            if match is not None:
                break
        else:
            return False
        self._pattern, self._needle = regex, pattern
        self._cursor = self._base + position
        self._reveal(position, match.start(), match.end())
        self._set_following(False)
        self.refresh()
        return True

    def find_next(self) -> bool:
        """Repeat the last search forwards."""
        return self._pattern is not None and self.find(self._needle, True)

    def find_previous(self) -> bool:
        """Repeat the last search backwards."""
        return self._pattern is not None and self.find(self._needle, False)

    def clear_search(self) -> None:
        """Forget the last search and remove its highlighting."""
        self._pattern = None
        self._cursor = None
        self.refresh()

    def action_find_next(self) -> None:
        self.find_next()

    def action_find_previous(self) -> None:
        self.find_previous()

    def action_toggle_wrap(self) -> None:
        self.toggle_wrap()

    def _reveal(self, position: int, start: int, end: int) -> None:
        """Scroll so that the match at `start:end` in storage line `position` is visible."""
        region = self.scrollable_content_region
        first = self._cum[position] - self._cum[self._head]
        last = self._cum[position + 1] - self._cum[self._head] - 1
        x = self.scroll_x
        if not self.wrap:
            text = self._lines[position]
            left, right = cell_len(text[:start]), cell_len(text[:end])
            if left < x or right > x + region.width:
                x = max(0, left - region.width // 4)
        y = self.scroll_y
        if first < y or last >= y + region.height:
            y = max(0, first - region.height // 2)
        self._scroll_quietly(x, y)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self.refresh()

    def render_line(self, y: int) -> Strip:
        """Render display row `y` of the visible region."""
        scroll_x, scroll_y = self.scroll_offset
        row = scroll_y + y
        width = self.size.width
        base = self.rich_style
        line_rows = self._line_rows
        if row < line_rows:
            position = self._line_at_row(row)
            sub_row = row + self._cum[self._head] - self._cum[position]
            text, absolute = self._lines[position], self._base + position
            cuts = _cuts(text, self._widths[position], self._wrap_width)
        elif self._partial and row - line_rows < len(cuts := self._partial_cuts()) - 1:
            sub_row, text, absolute = row - line_rows, self._partial, -1
        else:
            return Strip.blank(width, base)
        segments, style = self._segments(text, absolute, base)
        strip = Strip(segments, cuts[-1])
        if self.wrap:
            strip = strip.crop(cuts[sub_row], cuts[sub_row + 1])
            scroll_x = 0
        return strip.crop_extend(scroll_x, scroll_x + width, style)

    def _segments(self, text: str, absolute: int, base: Style) -> tuple[list[Segment], Style]:
        """Plain segments for one logical line, and the style of the whole line."""
        style = base
        component = self.get_component_rich_style
        if absolute in self._markers:
            style = component("console-view--marker")
        if absolute == self._cursor:
            style += component("console-view--current")
        if self._pattern is None or absolute < 0:
            return [Segment(text, style)], style
        match_style = style + component("console-view--match")
        segments: list[Segment] = []
        done = 0
        for match in self._pattern.finditer(text):
            start, end = match.span()
            if start > done:
                segments.append(Segment(text[done:start], style))
            segments.append(Segment(text[start:end], match_style))
            done = end
        if done < len(text):
            segments.append(Segment(text[done:], style))
        return segments, style
