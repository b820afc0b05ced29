"""`pvc-tui vm log`: a guest's console, in a pager or followed live.

Output is sanitised (no escape or control sequence from the guest reaches the
terminal) unless --raw, which writes the guest's bytes unchanged for other tools.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import threading
from typing import BinaryIO, TextIO

from pvc_tui.cli.commands import connect
from pvc_tui.cluster import ClusterClient, console
from pvc_tui.cluster.console import ConsoleLine, Ended, Gap, Partial
from pvc_tui.cluster.errors import InvalidRequest
from pvc_tui.cluster.sanitize import ConsoleSanitizer
from pvc_tui.cluster.text import printable

CLEAR_LINE = "\r\x1b[K"  # ours, for redrawing a partial line on a terminal
CUT_MARK = "…"  # a line cut at the agent's line cap continues on the next line


class Renderer:
    """Turns console events into safe text (or raw bytes) for one output stream."""

    def __init__(self, out: TextIO, raw: BinaryIO | None, terminal: bool) -> None:
        self._out = out
        self._raw = raw
        self._terminal = terminal
        self._sanitizer = ConsoleSanitizer()
        self._partial_shown = False

    def line(self, line: ConsoleLine) -> None:
        """One console line."""
        if self._raw is not None:
            if not line.marker:
                self._raw.write(line.raw_bytes())
            return
        self._clear_partial()
        text = self._sanitizer.feed_line(line.text)
        if line.marker:
            text = f"[pvc] {text}"
        self._out.write(text + (CUT_MARK if line.cont else "") + "\n")

    def gap(self, missed: int) -> None:
        """Lines lost between two reads."""
        message = f"[pvc] --- {missed} lines missed (the buffer moved on) ---"
        if self._raw is not None:
            sys.stderr.write(message + "\n")
            return
        self._clear_partial()
        self._out.write(message + "\n")

    def partial(self, text: str, final: bool = False) -> None:
        """The unterminated last line: redrawn on a terminal, else shown only at the end."""
        if self._raw is not None:
            if final and text:
                self._raw.write(text.encode("utf-8", "surrogateescape"))
            return
        if self._terminal:
            self._clear_partial()
            if text:
                self._out.write(ConsoleSanitizer().feed_line(text))
                self._partial_shown = True
        elif final and text:
            self._out.write(ConsoleSanitizer().feed_line(text) + "\n")

    def _clear_partial(self) -> None:
        if self._partial_shown:
            self._out.write(CLEAR_LINE)
            self._partial_shown = False

    def flush(self) -> None:
        """Push the output out."""
        (self._raw or self._out).flush()


def vm_log(args: argparse.Namespace) -> int:
    """`vm log VM [--lines N] [--follow] [--raw]`."""
    console.check_lines(args.lines)
    terminal = sys.stdout.isatty()
    if args.raw and terminal:
        raise InvalidRequest("--raw writes the guest's bytes unchanged, escape sequences "
                             "included: not to a terminal; pipe or redirect it")
    with connect(args) as client:
        vm = client.get_vm(args.vm)
        raw = sys.stdout.buffer if args.raw else None
        if args.follow:
            return _follow(client, vm.uuid, args.lines or 10,
                           Renderer(sys.stdout, raw, terminal))
        result = console.tail(client, vm.uuid, args.lines)
    if result is None:
        print(f"VM {printable(vm.name)} has no console output yet", file=sys.stderr)
        return 0
    lines, partial = result
    if terminal and raw is None:
        return _page(lines, partial)
    renderer = Renderer(sys.stdout, raw, terminal=False)
    for line in lines:
        renderer.line(line)
    renderer.partial(partial, final=True)
    renderer.flush()
    return 0


def _follow(client: ClusterClient, uuid: str, last: int, renderer: Renderer) -> int:
    stop = threading.Event()
    try:
        for event in console.follow(client, uuid, last=last, stop=stop):
            if isinstance(event, ConsoleLine):
                renderer.line(event)
            elif isinstance(event, Gap):
                renderer.gap(event.missed)
            elif isinstance(event, Partial):
                renderer.partial(event.text)
            elif isinstance(event, Ended):
                renderer.flush()
                print(f"pvc-tui: {printable(event.reason)}", file=sys.stderr)
                return 1
            renderer.flush()
    except KeyboardInterrupt:
        stop.set()
        renderer.flush()
        return 0
    return 0


def _page(lines: list[ConsoleLine], partial: str) -> int:
    """Show the buffer in $PAGER (else less), as sanitised text."""
    from io import StringIO

    text = StringIO()
    renderer = Renderer(text, None, terminal=False)
    for line in lines:
        renderer.line(line)
    renderer.partial(partial, final=True)
    try:
        argv = shlex.split(os.environ.get("PAGER") or "less")
    except ValueError:  # an unparsable $PAGER: show the text plainly
        argv = []
    if not argv or shutil.which(argv[0]) is None:
        sys.stdout.write(text.getvalue())
        return 0
    with contextlib.suppress(KeyboardInterrupt):
        subprocess.run(argv, input=text.getvalue().encode(), check=False)
    return 0
