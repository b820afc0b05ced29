"""The record format and domain XML checks: what bad input is refused, and how."""

from __future__ import annotations

import pytest

from pvc_tui.cluster import InvalidRequest, layout
from pvc_tui.cluster.domain_xml import (
    console_log_file,
    managed_by,
    mark_managed,
    parse_domain_xml,
    with_console_log,
)
from pvc_tui.cluster.text import printable
from tests.conftest import vm_xml


def test_record_round_trip_fills_defaults() -> None:
    data = layout.encode({"name": "web1", "uuid": "u", "state": "start", "node": "hv1"})
    record = layout.decode(data, layout.VM_FIELDS)
    assert record["previous_node"] == "" and record["runtime"] == {}


@pytest.mark.parametrize("data, why", [
    (b"", "empty"),
    (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"name": 5}', "field 'name' should be str"),
    (b'{"memory_mib": "lots"}', "field 'memory_mib' should be int"),
    (b"{" + b" " * (70 * 1024) + b"}", "exceeds"),
    (b'{"schema": 2, "name": "web1"}', "written by a newer pvc"),
    (b'{"schema": "2"}', "record schema '2' is not a number"),
])
def test_malformed_records_are_refused_with_a_reason(data: bytes, why: str) -> None:
    with pytest.raises(layout.RecordError, match=why):
        layout.decode(data, layout.VM_FIELDS)


def test_oversized_record_is_never_written() -> None:
    with pytest.raises(layout.RecordError):
        layout.encode({"failed_reason": "x" * (layout.MAX_RECORD_BYTES + 1)})


def test_domain_xml_facts_and_generated_uuid() -> None:
    spec = parse_domain_xml(vm_xml("web1", memory_mib=2048, vcpus=4))
    assert (spec.name, spec.memory_mib, spec.vcpus) == ("web1", 2048, 4)
    assert layout.UUID_PATTERN.match(spec.uuid)
    assert spec.uuid in spec.xml  # libvirt and the cluster agree on the identity
    assert parse_domain_xml(spec.xml).uuid == spec.uuid


@pytest.mark.parametrize("memory, mib", [("<memory>1048576</memory>", 1024),
                                         ("<memory unit='GiB'>2</memory>", 2048),
                                         ("<memory unit='MB'>1000</memory>", 953)])
def test_memory_units(memory: str, mib: int) -> None:
    spec = parse_domain_xml(f"<domain type='test'><name>a</name>{memory}</domain>")
    assert spec.memory_mib == mib


@pytest.mark.parametrize("xml, message", [
    ("<domain><name>x</name>", "malformed XML"),
    ("<network><name>x</name></network>", "not a libvirt domain"),
    ("<domain><memory>1024</memory></domain>", "no <name>"),
    ("<domain><name>bad/name</name><memory>1</memory></domain>", "invalid VM name"),
    ("<domain><name>vm-[/x]</name><memory>1</memory></domain>", "invalid VM name"),
    ("<domain><name>a</name></domain>", "no <memory>"),
    ("<domain><name>a</name><uuid>zzz</uuid><memory>1024</memory></domain>", "invalid <uuid>"),
    ("<domain><name>a</name><memory unit='parsec'>1</memory></domain>", "unknown memory unit"),
    ("<domain><name>a</name><memory>1024</memory><vcpu>0</vcpu></domain>", "out of range"),
    ('<!DOCTYPE d [<!ENTITY x "y">]><domain><name>&x;</name></domain>', "DOCTYPE"),
])
def test_bad_domain_xml_is_refused(xml: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_domain_xml(xml)


def test_managed_marker_and_console_log() -> None:
    xml = ("<domain type='qemu'><name>a</name><memory>1024</memory><devices><serial "
           "type='pty'><log file='/var/log/pvc/a.log' append='off'/></serial></devices>"
           "</domain>")
    assert managed_by(xml) is None
    marked = mark_managed(xml, "c1")
    assert managed_by(marked) == "c1"
    assert managed_by(mark_managed(marked, "c2")) == "c2"
    assert mark_managed(marked, "c1").count("managed") == 1
    assert console_log_file(marked) == "/var/log/pvc/a.log"
    moved = with_console_log(marked, "/srv/hv2/console")
    assert console_log_file(moved) == "/srv/hv2/console/a.log"
    assert with_console_log(moved, "/srv/hv2/console") == moved


def test_printable_neutralises_terminal_controls() -> None:
    hostile = "vm\x1b]52;c;aGk=\x07\x1b[2J\u202eevil\x9b31m\r\n"
    shown = printable(hostile)
    assert not any(c in shown for c in "\x1b\x07\x9b\u202e\r\n")
    assert "evil" in shown
    assert printable("x" * 600).endswith("…") and len(printable("x" * 600)) == 501
