"""Checks of storage command arguments, done before anything is sent: one-line errors."""

from __future__ import annotations

import re

from pvc_tui.cluster.errors import InvalidRequest

# Ceph allows more in pool and image names, but these become znode names, cross shells
# and reach terminals: letters, digits, '.', '_' and '-', not starting with '.' or '-'.
CEPH_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,99}$")
MAX_PGS = 32768
MAX_REPLICAS = 10
MAX_SIZE = 1 << 60  # 1 EiB
UNITS = {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^(\d+)\s*([BKMGT])(?:I?B)?$", re.IGNORECASE)
# The OSD map flags `ceph osd set` takes.
OSD_FLAGS = ("full", "pause", "noup", "nodown", "noout", "noin", "nobackfill",
             "norebalance", "norecover", "noscrub", "nodeep-scrub", "notieragent",
             "nosnaptrim")


def check_ceph_name(name: str, what: str) -> str:
    """`name` if it is a valid pool, volume or snapshot name, else InvalidRequest."""
    if not CEPH_NAME_PATTERN.match(name):
        raise InvalidRequest(f"invalid {what} name {name!r}: use 1-100 letters, digits, "
                             "'.', '_' or '-', not starting with '.' or '-'")
    return name


def parse_size(text: str) -> int:
    """Bytes from a size with a binary unit: 512M, 10G, 1T, 4096K, 100B (also 10GiB)."""
    match = _SIZE.match(text.strip())
    if not match:
        raise InvalidRequest(f"invalid size {text!r}: a whole number with a unit B, K, M, "
                             "G or T (binary: 1K = 1024 bytes), e.g. 10G")
    size = int(match.group(1)) * UNITS[match.group(2).upper()]
    if not 0 < size <= MAX_SIZE:
        raise InvalidRequest(f"invalid size {text!r}: must be more than 0 and at most 1 EiB")
    return size


def format_size(size: int) -> str:
    """Bytes as the largest whole-ish binary unit: 10 GiB, 1.5 MiB, 512 B."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "B" or value == int(value) \
                else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def check_pgs(count: int) -> int:
    """A placement-group count: a power of two from 1 to MAX_PGS."""
    if not 1 <= count <= MAX_PGS or count & (count - 1):
        raise InvalidRequest(f"invalid PG count {count}: a power of two from 1 to {MAX_PGS}")
    return count


def parse_replication(text: str) -> tuple[int, int]:
    """(size, min_size) from `size=N,min=M`, with 1 <= M <= N <= MAX_REPLICAS."""
    values: dict[str, int] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in ("size", "min") or not value.strip().isdigit():
            raise InvalidRequest(f"invalid replication {text!r}: use size=N,min=M, "
                                 "e.g. size=3,min=2")
        values[key.strip()] = int(value)
    if set(values) != {"size", "min"}:
        raise InvalidRequest(f"invalid replication {text!r}: give both size=N and min=M")
    size, minimum = values["size"], values["min"]
    if not 1 <= minimum <= size <= MAX_REPLICAS:
        raise InvalidRequest(f"invalid replication {text!r}: need 1 <= min <= size <= "
                             f"{MAX_REPLICAS}")
    return size, minimum


def check_osd_id(text: str | int) -> int:
    """An OSD id: a whole number from 0."""
    value = str(text).strip()
    if value.startswith("osd."):
        value = value[4:]
    if not value.isdigit() or len(value) > 6:
        raise InvalidRequest(f"invalid OSD id {text!r}: a number such as 3 (or osd.3)")
    return int(value)


def check_osd_flag(flag: str) -> str:
    """One of the OSD map flags Ceph takes."""
    if flag not in OSD_FLAGS:
        raise InvalidRequest(f"invalid OSD flag {flag!r}: one of {', '.join(OSD_FLAGS)}")
    return flag
