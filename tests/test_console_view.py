"""Pilot tests for the console view: what the operator sees and what the pane is told."""

from __future__ import annotations

import time

from textual import events
from textual.app import App, ComposeResult

from pvc_tui.tui.console_view import ConsoleView


class ConsoleApp(App[None]):
    def __init__(self, max_lines: int = 20_000) -> None:
        super().__init__()
        self.max_lines = max_lines
        self.follow_events: list[tuple[bool, int]] = []

    def compose(self) -> ComposeResult:
        yield ConsoleView(self.max_lines, id="console")

    def on_console_view_follow_changed(self, message: ConsoleView.FollowChanged) -> None:
        self.follow_events.append((message.following, message.new_lines))

    @property
    def view(self) -> ConsoleView:
        return self.query_one(ConsoleView)


def rows(view: ConsoleView) -> list[str]:
    """The text of every visible row, cropped to the area left of the scrollbar."""
    region = view.scrollable_content_region
    return [view.render_line(y).crop(0, region.width).text.rstrip() for y in range(region.height)]


def numbered(start: int, stop: int) -> list[str]:
    return [f"line {i}" for i in range(start, stop)]


async def test_appended_lines_appear_on_screen() -> None:
    app = ConsoleApp()
    async with app.run_test(size=(80, 24)) as pilot:
        app.view.append_lines(["hello", "world"])
        await pilot.pause()
        assert rows(app.view)[:3] == ["hello", "world", ""]
        assert "hello" in app.export_screenshot()
        assert app.view.line_count == 2


async def test_view_follows_new_lines_at_the_bottom() -> None:
    app = ConsoleApp()
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.view
        view.append_lines(numbered(0, 100))
        await pilot.pause()
        assert rows(view)[-1] == "line 99"
        view.append_lines(numbered(100, 130))
        await pilot.pause()
        assert rows(view)[-1] == "line 129"
        assert view.following and view.new_lines == 0
        assert app.follow_events == []


async def test_scrolling_up_pauses_and_counts_then_end_resumes() -> None:
    app = ConsoleApp()
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.view
        view.focus()
        view.append_lines(numbered(0, 100))
        await pilot.pause()
        await pilot.press("up")
        assert not view.following
        before = rows(view)
        assert before[-1] == "line 98"
        for start in range(100, 150, 10):
            view.append_lines(numbered(start, start + 10))
        await pilot.pause()
        assert rows(view) == before
        assert view.new_lines == 50
        # one message when pausing, then one per append batch
        assert app.follow_events == [
            (False, 0),
            (False, 10),
            (False, 20),
            (False, 30),
            (False, 40),
            (False, 50),
        ]
        await pilot.press("end")
        await pilot.pause()
        assert view.following and view.new_lines == 0
        assert app.follow_events[-1] == (True, 0)
        assert rows(view)[-1] == "line 149"
        view.append_lines(["fresh"])
        await pilot.pause()
        assert rows(view)[-1] == "fresh"


async def test_pageup_pauses_and_scrolling_down_to_bottom_resumes() -> None:
    app = ConsoleApp()
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.view
        view.focus()
        view.append_lines(numbered(0, 200))
        await pilot.pause()
        await pilot.press("pageup")
        top = rows(view)[0]
        view.append_lines(numbered(200, 205))
        await pilot.pause()
        assert rows(view)[0] == top and view.new_lines == 5
        await pilot.press("pagedown", "pagedown")
        await pilot.pause()
        assert view.following and view.new_lines == 0
        assert app.follow_events[-1] == (True, 0)


async def test_mouse_wheel_up_pauses_following() -> None:
    app = ConsoleApp()
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.view
        view.append_lines(numbered(0, 100))
        await pilot.pause()
        view.post_message(events.MouseScrollUp(view, 5, 5, 0, -1, 0, False, False, False))
        await pilot.pause()
        assert not view.following
        top = rows(view)[0]
        view.append_lines(["more"])
        await pilot.pause()
        assert rows(view)[0] == top and view.new_lines == 1
        assert app.follow_events == [(False, 0), (False, 1)]


async def test_buffer_is_bounded_and_counts_dropped_lines() -> None:
    app = ConsoleApp(max_lines=100)
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.view
        for start in range(0, 2500, 100):
            view.append_lines(numbered(start, start + 100))
        await pilot.pause()
        assert view.line_count == 100
        assert view.dropped == 2400
        assert view.text().splitlines()[0] == "line 2400"
        assert rows(view)[-1] == "line 2499"
        # paused at capacity: the view stays on the same content while old lines go
        view.focus()
        await pilot.press("up", "up", "up")
        before = rows(view)
        view.append_lines(numbered(2500, 2510))
        await pilot.pause()
        assert rows(view) == before
        assert view.dropped == 2410


async def test_wrap_off_crops_and_wrap_on_folds_long_lines() -> None:
    app = ConsoleApp()
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.view
        view.focus()
        long = "".join(str(i % 10) for i in range(150)) + "TAIL"
        view.append_lines(["short", long, "after"])
        await pilot.pause()
        width = view.scrollable_content_region.width
        shown = rows(view)
        assert shown[1] == long[:width]
        assert shown[2] == "after"
        assert "TAIL" not in "".join(shown)
        for _ in range(10):
            await pilot.press("right")  # horizontal scrolling while cropped
        assert rows(view)[1] == long[10 : 10 + width]
        await pilot.press("end")
        assert rows(view)[1] == long[:width]
        await pilot.press("w")
        await pilot.pause()
        assert view.wrap
        shown = rows(view)
        assert shown[1] == long[:width]
        assert shown[2] == long[width:]
        assert shown[2].endswith("TAIL")
        assert shown[3] == "after"
        await pilot.press("w")
        await pilot.pause()
        assert rows(view)[2] == "after"


async def test_wrap_toggle_keeps_the_same_logical_line_on_top() -> None:
    app = ConsoleApp()
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.view
        view.focus()
        view.append_lines([f"row {i} " + "x" * 200 for i in range(300)])
        await pilot.pause()
        await pilot.press("home")
        for _ in range(50):
            await pilot.press("down")
        assert rows(view)[0].startswith("row 50 ")
        view.toggle_wrap()
        await pilot.pause()
        assert rows(view)[0].startswith("row 50 ")
        view.toggle_wrap()
        await pilot.pause()
        assert rows(view)[0].startswith("row 50 ")


async def test_find_moves_to_match_and_n_goes_to_next() -> None:
    app = ConsoleApp()
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.view
        view.focus()
        lines = numbered(0, 1000)
        lines[10] = "kernel: Needle one"
        lines[600] = "systemd: a NEEDLE two"
        view.append_lines(lines)
        await pilot.pause()
        assert view.find("needle")
        await pilot.pause()
        assert "kernel: Needle one" in rows(view)
        assert not view.following
        await pilot.press("n")
        await pilot.pause()
        assert "systemd: a NEEDLE two" in rows(view)
        assert "kernel: Needle one" not in rows(view)
        await pilot.press("n")  # wraps around
        await pilot.pause()
        assert "kernel: Needle one" in rows(view)
        await pilot.press("N")  # backwards, wraps to the end
        await pilot.pause()
        assert "systemd: a NEEDLE two" in rows(view)
        before = rows(view)
        assert not view.find("no such text")
        await pilot.pause()
        assert rows(view) == before


async def test_find_highlights_matches_and_is_not_a_regex() -> None:
    app = ConsoleApp()
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.view
        view.append_lines(["a.c abc A.C", "plain"])
        await pilot.pause()
        assert view.find("a.c")
        await pilot.pause()
        match_bg = view.get_component_rich_style("console-view--match").bgcolor
        segments = list(view.render_line(0))
        highlighted = [s.text for s in segments if s.style and s.style.bgcolor == match_bg]
        assert highlighted == ["a.c", "A.C"]


async def test_partial_line_shows_at_the_bottom_and_is_replaced() -> None:
    app = ConsoleApp()
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.view
        view.append_lines(["Debian GNU/Linux 12 vm1 ttyS0", ""])
        view.set_partial("vm1 login: ")
        await pilot.pause()
        assert rows(view)[:4] == ["Debian GNU/Linux 12 vm1 ttyS0", "", "vm1 login:", ""]
        view.set_partial("Password: ")
        await pilot.pause()
        assert rows(view)[2] == "Password:"
        assert "login" not in "".join(rows(view))
        assert view.text().endswith("\nPassword: ")
        view.set_partial("")
        await pilot.pause()
        assert rows(view)[2] == ""
        view.append_lines(numbered(0, 100))
        view.set_partial("prompt> ")
        await pilot.pause()
        assert rows(view)[-2:] == ["line 99", "prompt>"]


async def test_markup_like_text_renders_literally() -> None:
    app = ConsoleApp()
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.view
        hostile = ["[@click=app.quit]x", "vm-[/x]", "[bold red]b[/]", "\x1b]0;pwned\x07tab\there"]
        view.append_lines(hostile)
        view.append_marker("── [/oops] ──")
        await pilot.pause()
        shown = rows(view)
        assert shown[:3] == hostile[:3]
        assert "\x1b" not in shown[3] and "\x07" not in shown[3]
        assert shown[4] == "── [/oops] ──"
        for y in range(5):
            for segment in view.render_line(y):
                assert not (segment.style and segment.style.meta)
        await pilot.click(ConsoleView, offset=(2, 0))
        await pilot.pause()
        assert app.is_running
        assert "vm-[/x]" in app.export_screenshot()


async def test_marker_lines_use_the_marker_style() -> None:
    app = ConsoleApp()
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.view
        view.append_lines(["guest line"])
        view.append_marker("── VM restarted ──")
        await pilot.pause()
        normal = next(iter(view.render_line(0))).style
        marker = next(iter(view.render_line(1))).style
        assert rows(view)[1] == "── VM restarted ──"
        assert marker is not None and normal is not None
        assert marker.reverse and marker.bold and not normal.reverse


async def test_text_returns_the_buffer_and_clear_empties_it() -> None:
    app = ConsoleApp()
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.view
        view.append_lines(["one", "two"])
        view.append_marker("── 120 lines missed ──")
        view.set_partial("login: ")
        assert view.text() == "one\ntwo\n── 120 lines missed ──\nlogin: "
        assert view.line_count == 3
        view.clear()
        await pilot.pause()
        assert view.text() == "" and view.line_count == 0
        assert rows(view)[0] == ""


async def test_append_throughput() -> None:
    app = ConsoleApp()
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.view
        batches = [
            [f"[{i:6d}] systemd[1]: Started session {i} of user root." for i in range(b, b + 100)]
            for b in range(0, 20_000, 100)
        ]
        await pilot.pause()
        start = time.perf_counter()
        for batch in batches:
            view.append_lines(batch)
        await pilot.pause()
        append_rate = 20_000 / (time.perf_counter() - start)

        view.clear()
        view.toggle_wrap()
        await pilot.pause()
        start = time.perf_counter()
        for batch in batches:
            view.append_lines(batch)
            rows(view)  # render every visible row, as a repaint after each batch would
        painted_rate = 20_000 / (time.perf_counter() - start)
        await pilot.pause()
        print(
            f"\nConsoleView append: {append_rate:,.0f} lines/s (batches of 100, one repaint); "
            f"{painted_rate:,.0f} lines/s with wrap on and every visible row rendered per batch"
        )
        assert view.line_count == 20_000
        assert rows(view)[-1].endswith("of user root.")
