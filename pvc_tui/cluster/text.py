"""Making cluster-supplied strings safe to show on a terminal (single-line fields)."""

from __future__ import annotations

import unicodedata

_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")
MAX_FIELD_CHARS = 500


def printable(value: object, limit: int = MAX_FIELD_CHARS) -> str:
    """`value` as one line with every control, format or bidi character replaced.

    Escape sequences lose their ESC (and 8-bit C1 introducers become U+FFFD), so
    nothing in the result is acted on by a terminal. Long text is cut with '…'.
    """
    text = str(value)
    out = []
    for ch in text[: limit + 1]:
        if ch == "\t":
            out.append(" ")
        elif ch in _BIDI_CONTROLS or unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co"):
            out.append("\ufffd")
        else:
            out.append(ch)
    result = "".join(out)
    return result[:limit] + "…" if len(result) > limit else result
