"""Storage argument checks and record limits (pure functions, no cluster needed)."""

from __future__ import annotations

import pytest

from node_agent.storage import encode_volume
from pvc_tui.cluster import InvalidRequest, layout
from pvc_tui.cluster.storage_checks import (
    check_ceph_name,
    check_osd_id,
    check_pgs,
    format_size,
    parse_replication,
    parse_size,
)


@pytest.mark.parametrize(("text", "size"), [
    ("10G", 10 << 30), ("512M", 512 << 20), ("1T", 1 << 40), ("4096K", 4 << 20),
    ("100B", 100), ("10GiB", 10 << 30), ("2 g", 2 << 30), ("3gb", 3 << 30),
])
def test_sizes_take_binary_units(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["10", "10Q", "0G", "-1G", "1.5G", "G", "", "2000000T"])
def test_bad_sizes_are_refused(text: str) -> None:
    with pytest.raises(InvalidRequest, match="invalid size"):
        parse_size(text)


def test_format_size() -> None:
    assert [format_size(n) for n in (512, 1 << 20, 3 << 29, 10 << 30)] == [
        "512 B", "1 MiB", "1.5 GiB", "10 GiB"]


def test_names_pgs_replication_osd_ids() -> None:
    assert check_ceph_name("web1-disk0.raw_2", "volume") == "web1-disk0.raw_2"
    for bad in ("", ".x", "-x", "a/b", "a@b", "a b", "é", "x" * 101):
        with pytest.raises(InvalidRequest, match="invalid volume name"):
            check_ceph_name(bad, "volume")
    assert check_pgs(128) == 128
    for bad in (0, 3, 100, 65536):
        with pytest.raises(InvalidRequest, match="power of two"):
            check_pgs(bad)
    assert parse_replication("size=3,min=2") == (3, 2)
    for bad in ("size=2,min=3", "size=3", "3,2", "size=11,min=1", "size=x,min=1"):
        with pytest.raises(InvalidRequest, match="invalid replication"):
            parse_replication(bad)
    assert check_osd_id("osd.7") == 7 and check_osd_id(3) == 3
    with pytest.raises(InvalidRequest, match="invalid OSD id"):
        check_osd_id("-1")


def test_a_volume_with_very_many_snapshots_is_published_with_its_newest() -> None:
    snaps = [{"name": f"snap-{i:05d}", "size": 1 << 30, "timestamp": float(i)}
             for i in range(5000)]
    volume = {"pool": "rbd", "name": "v", "size": 1 << 30, "used": 0, "parent": "",
              "snapshots": snaps}
    data = encode_volume(volume)
    assert len(data) <= layout.MAX_RECORD_BYTES
    published = layout.decode(data, layout.STORAGE_VOLUME_FIELDS)["snapshots"]
    assert published[-1]["name"] == "snap-04999" and 0 < len(published) < 5000
