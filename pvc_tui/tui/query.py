"""What the operator asks a table to show: the `:` command line and the `/` filter.

Pure logic (no Textual): `:vm node=hv1 /web` selects the VM view, keeps rows whose
`node` is hv1 and whose text matches the regular expression `web`. A leading `!`
inverts a regular expression.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from pvc_tui.cluster.errors import InvalidRequest

VIEW_ALIASES: Mapping[str, str] = {
    "vm": "vms", "vms": "vms", "node": "nodes", "nodes": "nodes", "no": "nodes",
    "pool": "pools", "pools": "pools", "volume": "volumes", "volumes": "volumes",
    "vol": "volumes", "osd": "osds", "osds": "osds",
}
MAX_PATTERN_CHARS = 200


@dataclass(frozen=True)
class RowFilter:
    """Field equality tests plus an optional (possibly inverted) regular expression."""

    fields: tuple[tuple[str, str], ...] = ()
    pattern: str = ""
    invert: bool = False
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @property
    def active(self) -> bool:
        """Whether this filter hides anything at all."""
        return bool(self.fields or self.pattern)

    def matches(self, values: Mapping[str, str], text: str) -> bool:
        """Whether a row with these field `values` and searchable `text` is shown."""
        for name, wanted in self.fields:
            if values.get(name, "") != wanted:
                return False
        if self._regex is None:
            return True
        return (self._regex.search(text) is not None) != self.invert

    def describe(self) -> str:
        """A short human form, e.g. `node=hv1 !/web`."""
        parts = [f"{k}={v}" for k, v in self.fields]
        if self.pattern:
            parts.append(("!" if self.invert else "") + "/" + self.pattern)
        return " ".join(parts)


def compile_pattern(text: str) -> tuple[str, bool, re.Pattern[str] | None]:
    """(pattern, inverted, compiled) from `/` input such as `web` or `!^db`."""
    invert = text.startswith("!")
    pattern = text[1:] if invert else text
    if len(pattern) > MAX_PATTERN_CHARS:
        raise InvalidRequest(f"filter longer than {MAX_PATTERN_CHARS} characters")
    if not pattern:
        return "", False, None
    try:
        return pattern, invert, re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise InvalidRequest(f"invalid regular expression {pattern!r}: {exc}") from None


def make_filter(fields: tuple[tuple[str, str], ...] = (), pattern_text: str = "") -> RowFilter:
    """A RowFilter, validating the regular expression."""
    pattern, invert, regex = compile_pattern(pattern_text)
    return RowFilter(fields, pattern, invert, regex)


@dataclass(frozen=True)
class ViewQuery:
    """A parsed `:` command: which view, with which filter."""

    view: str
    filter: RowFilter


def parse_command(line: str, field_names: Mapping[str, tuple[str, ...]]) -> ViewQuery:
    """Parse `vm node=hv1 /web`; `field_names` lists the filterable fields per view."""
    words = line.strip().lstrip(":").split()
    if not words:
        raise InvalidRequest("empty command: try :vm, :node, :vm node=hv1 or :vm /web")
    view = VIEW_ALIASES.get(words[0].lower())
    if view is None:
        raise InvalidRequest(f"unknown view {words[0]!r}: try :vm, :node, :pool, :volume "
                             "or :osd")
    fields: list[tuple[str, str]] = []
    pattern_text = ""
    for word in words[1:]:
        if word.startswith(("/", "!/")):
            pattern_text = ("!" if word.startswith("!") else "") + word.split("/", 1)[1]
        elif "=" in word:
            name, _, value = word.partition("=")
            if name not in field_names.get(view, ()):
                allowed = ", ".join(field_names.get(view, ())) or "none"
                raise InvalidRequest(f"cannot filter {view} by {name!r} (fields: {allowed})")
            fields.append((name, value))
        else:
            raise InvalidRequest(f"do not understand {word!r}: use field=value or /regex")
    return ViewQuery(view, make_filter(tuple(fields), pattern_text))
