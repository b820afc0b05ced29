"""The columns of the pool, volume and OSD tables (same rules as columns.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from rich.text import Text

from pvc_tui.cluster.storage import Osd, Pool, Volume
from pvc_tui.cluster.storage_checks import format_size
from pvc_tui.cluster.text import printable
from pvc_tui.tui.columns import Cell, Column

BAR_WIDTH = 10
HEALTH_STYLES = {"HEALTH_OK": "bold green", "HEALTH_WARN": "bold yellow",
                 "HEALTH_ERR": "bold red"}


def usage_bar(fraction: float, width: int = BAR_WIDTH) -> Cell:
    """`████▌·····  45%`: green, yellow past 70 %, red past 85 %; sorts by the fraction."""
    fraction = min(max(fraction, 0.0), 1.0)
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    bar = "█" * full + ("▏▎▍▌▋▊▉"[part - 1] if part else "")
    style = "red" if fraction > 0.85 else "yellow" if fraction > 0.70 else "green"
    cell = Cell(no_wrap=True, overflow="ellipsis")
    cell.append(bar, style=style)
    cell.append("·" * (width - len(bar)), style="bright_black")
    cell.append(f" {fraction * 100:4.1f}%")
    cell.sort_key = fraction
    return cell


def _size(value: int) -> Cell:
    return Cell.of(format_size(value) if value >= 0 else "?", value)


def _flag(value: bool, yes: str, no: str) -> Cell:
    return Cell.of(yes if value else no, int(value), style="green" if value else "bold red")


POOL_COLUMNS: tuple[Column, ...] = (
    Column("name", "NAME", lambda p: Cell.of(p.name), 16),
    Column("usage", "USED", lambda p: usage_bar(p.percent_used), BAR_WIDTH + 6),
    Column("stored", "STORED", lambda p: _size(p.stored), 9),
    Column("objects", "OBJECTS", lambda p: Cell.of(p.objects, p.objects), 8),
    Column("max_avail", "MAX AVAIL", lambda p: _size(p.max_avail), 9),
    Column("pgs", "PGS", lambda p: Cell.of(p.pg_num, p.pg_num), 5),
    Column("replicas", "REPLICAS", lambda p: Cell.of(f"{p.size}/{p.min_size}", p.size), 8),
    Column("read", "READ/S", lambda p: _size(p.read_bytes_sec), 9),
    Column("write", "WRITE/S", lambda p: _size(p.write_bytes_sec), 9),
)

VOLUME_COLUMNS: tuple[Column, ...] = (
    Column("pool", "POOL", lambda v: Cell.of(v.pool), 12),
    Column("name", "NAME", lambda v: Cell.of(v.name), 24),
    Column("size", "SIZE", lambda v: _size(v.size), 9),
    Column("used", "USED", lambda v: _size(v.used), 9),
    Column("snapshots", "SNAPS", lambda v: Cell.of(len(v.snapshots), len(v.snapshots)), 5),
    Column("parent", "PARENT", lambda v: Cell.of(v.parent or "-", limit=60), 30),
)

OSD_COLUMNS: tuple[Column, ...] = (
    Column("name", "OSD", lambda o: Cell.of(f"osd.{o.id}", o.id), 7),
    Column("host", "HOST", lambda o: Cell.of(o.host or "-"), 12),
    Column("up", "UP", lambda o: _flag(o.up, "up", "down"), 4),
    Column("in", "IN", lambda o: _flag(o.in_cluster, "in", "out"), 3),
    Column("usage", "USED", lambda o: usage_bar(o.utilization / 100), BAR_WIDTH + 6),
    Column("pgs", "PGS", lambda o: Cell.of(o.pgs, o.pgs), 5),
    Column("weight", "WEIGHT", lambda o: Cell.of(f"{o.weight:.4f}", o.weight), 7),
    Column("reweight", "REWEIGHT", lambda o: Cell.of(f"{o.reweight:.2f}", o.reweight), 8),
    Column("size", "SIZE", lambda o: _size(o.kb * 1024), 9),
)

POOL_FIELDS: Mapping[str, Callable[[Pool], str]] = {"name": lambda p: p.name}
VOLUME_FIELDS: Mapping[str, Callable[[Volume], str]] = {
    "name": lambda v: v.name, "pool": lambda v: v.pool,
}
OSD_FIELDS: Mapping[str, Callable[[Osd], str]] = {
    "host": lambda o: o.host, "up": lambda o: "up" if o.up else "down",
    "in": lambda o: "in" if o.in_cluster else "out",
}


def health_text(health: str, flags: tuple[str, ...] = ()) -> Text:
    """`ceph HEALTH_OK` coloured, with set OSD flags (noout, ...) after it."""
    text = Text("ceph ")
    text.append(printable(health, 20) or "unknown",
                style=HEALTH_STYLES.get(health, "bold magenta"))
    if flags:
        text.append(" " + printable(",".join(flags), 60), style="bold yellow")
    return text
