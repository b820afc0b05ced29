"""Making cluster-supplied strings safe to show on a terminal (single-line fields)."""

from __future__ import annotations

from pvc_tui.cluster.sanitize import sanitize_line

MAX_FIELD_CHARS = 500


def printable(value: object, limit: int = MAX_FIELD_CHARS) -> str:
    """`value` as one safe line: escape sequences removed whole (payloads included),
    other controls, bidi overrides and invalid characters neutralised, newlines made
    spaces; long text is cut with '…'."""
    raw = str(value)
    if raw.isascii() and raw.isprintable():  # nothing to neutralise: the common case
        return raw[:limit] + "…" if len(raw) > limit else raw
    text = sanitize_line(raw[: limit + 1].replace("\t", " "))
    return text[:limit] + "…" if len(text) > limit else text
