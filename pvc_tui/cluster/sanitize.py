"""Making guest serial-console text safe to print: nothing a terminal would act on survives.

Guest output is hostile. `ConsoleSanitizer` is a small state machine, shaped like a
VT500 parser, that carries its state across calls, so a sequence cut anywhere between
two chunks is handled exactly as if it had come whole. It drops, entirely:

- CSI (``ESC [`` / U+009B ... final byte 0x40-0x7E), colours included;
- OSC (``ESC ]`` / U+009D ... BEL or ST), DCS (``ESC P`` / U+0090), SOS (``ESC X`` /
  U+0098), PM (``ESC ^`` / U+009E) and APC (``ESC _`` / U+009F), each up to ST
  (``ESC \\`` or U+009C); OSC also ends at BEL;
- other ESC sequences: ESC, any intermediates 0x20-0x2F, one final 0x30-0x7E
  (``ESC c``, ``ESC 7``, ``ESC ( B``);
- every other C0 control but TAB, DEL, every other C1 control, the bidi controls
  (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069) and U+2028/U+2029 (which
  ``str.splitlines`` would treat as line breaks).

Lone surrogates (undecodable bytes under ``errors="surrogateescape"``) become U+FFFD.
TAB is kept as a TAB (one char toward the line cap); the widget expands it.

Line rules:

- A newline ends the line and any pending sequence, so an unterminated OSC swallows the
  rest of its own line (payload never leaks) but never the next line, and a stray ESC
  at a line's end cannot eat the next line's first character.
- CR: a CR just before the newline (or followed only by controls and sequences) is
  dropped; visible text after a CR replaces the line so far, as a terminal would
  overwrite it ("10%\\r20%" -> "20%").
- CAN/SUB abort a sequence; ESC inside one starts a new one, as on a terminal.
- A sequence swallows at most `max_sequence_chars` characters; past that it is
  abandoned and what follows is shown as (filtered) text.
- A line longer than `max_line_chars` is cut to that many characters, ending in "…".

Output is line-buffered: the text after a CR can still replace what came before it,
so `feed` returns only completed lines; `pending` shows the unfinished one and
`flush` ends it. Work is linear in the input: runs of plain text are taken by one
regex match, and sequence payloads are skipped the same way.
"""

from __future__ import annotations

import re

__all__ = ["ConsoleSanitizer", "sanitize_line"]

_GROUND, _ESCAPE, _ESC_INTER, _CSI, _OSC, _STRING = range(6)

# Runs of characters shown as they are: everything but C0 (except TAB), DEL, C1,
# bidi controls, line/paragraph separators and surrogates.
_PLAIN = re.compile(
    "[^\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
    "\u2028\u2029\ud800-\udfff]+"
)
# Payload runs: up to a character that may end (or abort) the string.
_OSC_BODY = re.compile("[^\x07\x0a\x18\x1a\x1b\x80-\x9f]+")
_STRING_BODY = re.compile("[^\x0a\x18\x1a\x1b\x80-\x9f]+")
_CSI_BODY = re.compile("[\x20-\x3f]+")

# Characters with the same effect in every state (the VT500 "anywhere" transitions).
_ANYWHERE = frozenset("\n\x1b\x18\x1a" + "".join(map(chr, range(0x80, 0xA0))))
_C1_START = {
    "\x9b": _CSI,
    "\x9d": _OSC,
    "\x90": _STRING,
    "\x98": _STRING,
    "\x9e": _STRING,
    "\x9f": _STRING,
}
_ESC_START = {"[": _CSI, "]": _OSC, "P": _STRING, "X": _STRING, "^": _STRING, "_": _STRING}
_ELLIPSIS = "…"


class ConsoleSanitizer:
    """Incremental: state (an escape sequence cut across calls) persists between calls."""

    def __init__(self, max_line_chars: int = 4096, max_sequence_chars: int = 4096) -> None:
        if max_line_chars < 1 or max_sequence_chars < 1:
            raise ValueError("max_line_chars and max_sequence_chars must be at least 1")
        self._max_line = max_line_chars
        self._max_seq = max_sequence_chars
        self.reset()

    def reset(self) -> None:
        """Forget any pending sequence and the unfinished line."""
        self._state = _GROUND
        self._seq_len = 0
        self._line: list[str] = []
        self._line_len = 0
        self._truncated = False
        self._cr = False

    def feed_line(self, text: str) -> str:
        """One console line (without its newline) -> the text safe to print on one terminal line.

        Same as ``feed(text + "\\n")`` without the newline; it completes any unfinished
        line left by `feed`. Newlines inside `text` (there should be none) become spaces.
        """
        done: list[str] = []
        self._run(text, done)
        done.append(self._end_line())
        return " ".join(done)

    def feed(self, text: str) -> str:
        """Any chunk (may hold newlines, may cut a sequence anywhere) -> safe text; newlines kept.

        Returns the lines this chunk completed, each ending in "\\n"; the unfinished
        last line is held back (see `pending` and `flush`).
        """
        done: list[str] = []
        self._run(text, done)
        return "".join(line + "\n" for line in done)

    def pending(self) -> str:
        """The unfinished line as it would read if it ended now (state is unchanged)."""
        text = "".join(self._line)
        return text[: self._max_line - 1] + _ELLIPSIS if self._truncated else text

    def flush(self) -> str:
        """End the unfinished line (as a newline would) and return it, without "\\n"."""
        return self._end_line()

    def _end_line(self) -> str:
        text = self.pending()
        self._state = _GROUND
        self._line = []
        self._line_len = 0
        self._truncated = False
        self._cr = False
        return text

    def _emit(self, run: str) -> None:
        if self._cr:  # text after a lone CR overwrites the line
            self._cr = False
            self._line = []
            self._line_len = 0
            self._truncated = False
        room = self._max_line - self._line_len
        if len(run) > room:
            self._truncated = True
            run = run[:room]
        if run:
            self._line.append(run)
            self._line_len += len(run)

    def _anywhere(self, ch: str, done: list[str]) -> None:
        self._seq_len = 0
        if ch == "\n":
            done.append(self._end_line())
        elif ch == "\x1b":
            self._state = _ESCAPE
        elif ch in "\x18\x1a":
            self._state = _GROUND
        else:
            self._state = _C1_START.get(ch, _GROUND)

    def _skip(self, body: re.Pattern[str], text: str, i: int) -> int:
        """Consume a payload run at `i`; abandon the sequence at the length cap."""
        m = body.match(text, i)
        if m is None:
            return i
        room = self._max_seq - self._seq_len
        if m.end() - i > room:
            self._state = _GROUND
            return i + room
        self._seq_len += m.end() - i
        return m.end()

    def _run(self, text: str, done: list[str]) -> None:
        i, n = 0, len(text)
        while i < n:
            state = self._state
            if state == _GROUND:
                m = _PLAIN.match(text, i)
                if m is not None:
                    self._emit(m.group())
                    i = m.end()
                    continue
                ch = text[i]
                i += 1
                if ch in _ANYWHERE:
                    self._anywhere(ch, done)
                elif ch == "\r":
                    self._cr = True
                elif "\ud800" <= ch <= "\udfff":
                    self._emit("\ufffd")
                continue  # any other control or bidi character is dropped

            if state in (_OSC, _STRING, _CSI):
                body = _CSI_BODY if state == _CSI else _OSC_BODY if state == _OSC else _STRING_BODY
                i = self._skip(body, text, i)
                if i >= n or self._state == _GROUND:
                    continue
            ch = text[i]
            i += 1
            if ch in _ANYWHERE:
                self._anywhere(ch, done)
            elif state == _OSC:
                if ch == "\x07":
                    self._state = _GROUND
            elif state == _STRING:
                pass  # unreachable: its body takes everything but "anywhere" characters
            elif ch == "\r":
                self._cr = True  # executed inside CSI/ESC, as a terminal does
            elif ch < " " or ch == "\x7f":
                pass  # other C0 and DEL are ignored inside a sequence
            elif state == _CSI:
                self._state = _GROUND
                if not "\x40" <= ch <= "\x7e":
                    i -= 1  # not CSI syntax: abort, show the char as text
            elif state == _ESCAPE and ch in _ESC_START:
                self._state = _ESC_START[ch]
                self._seq_len = 0
            elif " " <= ch <= "/" and self._seq_len < self._max_seq:
                self._state = _ESC_INTER  # intermediate: ESC ( B, ESC # 8, ...
                self._seq_len += 1
            elif "0" <= ch <= "~":
                self._state = _GROUND  # final byte of a two-byte (or ESC I..F) sequence
            else:
                self._state = _GROUND  # not ESC syntax (or too long): show the char as text
                i -= 1


def sanitize_line(text: str) -> str:
    """One line with fresh state (for single fields)."""
    return ConsoleSanitizer().feed_line(text)
