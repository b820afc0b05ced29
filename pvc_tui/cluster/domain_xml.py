"""Reading and checking libvirt domain XML (no libvirt needed)."""

from __future__ import annotations

import uuid as uuidlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import PurePosixPath

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as safe_fromstring

from pvc_tui.cluster.errors import InvalidRequest
from pvc_tui.cluster.layout import MAX_XML_BYTES, NAME_PATTERN

PVC_METADATA_NS = "https://pvc-tui.invalid/xmlns/domain/1"
_UNIT_TO_KIB = {
    "b": 1 / 1024, "bytes": 1 / 1024,
    "k": 1, "kib": 1, "kb": 1000 / 1024,
    "m": 1024, "mib": 1024, "mb": 1000**2 / 1024,
    "g": 1024**2, "gib": 1024**2, "gb": 1000**3 / 1024,
    "t": 1024**3, "tib": 1024**3, "tb": 1000**4 / 1024,
}  # fmt: skip


@dataclass(frozen=True)
class DomainSpec:
    """The facts pvc needs from a domain definition."""

    name: str
    uuid: str
    memory_mib: int
    vcpus: int
    xml: str  # normalised: always carries the <uuid>


def check_name(name: str, what: str = "name") -> str:
    """Return `name` if it is a valid VM or node name, else raise InvalidRequest."""
    if not NAME_PATTERN.match(name):
        raise InvalidRequest(
            f"invalid {what} {name!r}: use 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def parse_domain_xml(text: str) -> DomainSpec:
    """Validate libvirt domain XML and return its name, UUID, memory and vCPUs.

    A missing <uuid> is generated and inserted, so the cluster and libvirt agree.
    """
    if len(text.encode()) > MAX_XML_BYTES:
        raise InvalidRequest(f"domain XML is larger than {MAX_XML_BYTES // 1024} KiB")
    try:
        root = safe_fromstring(text, forbid_dtd=True)
    except ET.ParseError as exc:
        raise InvalidRequest(f"malformed XML: {exc}") from None
    except DefusedXmlException:
        raise InvalidRequest("domain XML must not contain a DOCTYPE or entities") from None
    if root.tag != "domain":
        raise InvalidRequest(f"not a libvirt domain: root element is <{root.tag}>")
    name = (root.findtext("name") or "").strip()
    if not name:
        raise InvalidRequest("domain XML has no <name>")
    check_name(name, "VM name")
    uuid_el = root.find("uuid")
    if uuid_el is None or not (uuid_el.text or "").strip():
        vm_uuid = str(uuidlib.uuid4())
        uuid_el = ET.Element("uuid")
        uuid_el.text = vm_uuid
        root.insert(1, uuid_el)
    else:
        try:
            vm_uuid = str(uuidlib.UUID((uuid_el.text or "").strip()))
        except ValueError:
            raise InvalidRequest(f"invalid <uuid> {uuid_el.text!r}") from None
        uuid_el.text = vm_uuid
    memory_mib = _memory_mib(root)
    vcpus = _vcpus(root)
    return DomainSpec(
        name=name,
        uuid=vm_uuid,
        memory_mib=memory_mib,
        vcpus=vcpus,
        xml=ET.tostring(root, encoding="unicode"),
    )


def _memory_mib(root: ET.Element) -> int:
    el = root.find("memory")
    if el is None or not (el.text or "").strip():
        raise InvalidRequest("domain XML has no <memory>")
    unit = el.get("unit", "KiB").lower()
    if unit not in _UNIT_TO_KIB:
        raise InvalidRequest(f"unknown memory unit {el.get('unit')!r}")
    try:
        amount = int((el.text or "").strip())
    except ValueError:
        raise InvalidRequest(f"invalid <memory> {el.text!r}") from None
    mib = int(amount * _UNIT_TO_KIB[unit] // 1024)
    if mib < 1:
        raise InvalidRequest("<memory> must be at least 1 MiB")
    return mib


def _vcpus(root: ET.Element) -> int:
    el = root.find("vcpu")
    if el is None:
        return 1
    try:
        vcpus = int((el.text or "").strip())
    except ValueError:
        raise InvalidRequest(f"invalid <vcpu> {el.text!r}") from None
    if not 1 <= vcpus <= 4096:
        raise InvalidRequest(f"<vcpu> {vcpus} is out of range")
    return vcpus


def mark_managed(xml: str, cluster: str) -> str:
    """Add pvc's <metadata> marker with the cluster id: the domain is this cluster's."""
    ET.register_namespace("pvc", PVC_METADATA_NS)
    root = safe_fromstring(xml)
    metadata = root.find("metadata")
    if metadata is None:
        metadata = ET.SubElement(root, "metadata")
    marker = metadata.find(f"{{{PVC_METADATA_NS}}}managed")
    if marker is None:
        marker = ET.SubElement(metadata, f"{{{PVC_METADATA_NS}}}managed")
    marker.set("cluster", cluster)
    return ET.tostring(root, encoding="unicode")


def managed_by(xml: str) -> str | None:
    """The cluster id in a domain's pvc marker, or None if it carries none."""
    try:
        root = safe_fromstring(xml)
    except (ET.ParseError, DefusedXmlException):
        return None
    marker = root.find(f"metadata/{{{PVC_METADATA_NS}}}managed")
    return marker.get("cluster", "") if marker is not None else None


def console_log_file(xml: str) -> str | None:
    """The serial console log file named in the XML (<serial><log file=...>), if any."""
    return console_log(xml)[0]


def console_log(xml: str) -> tuple[str | None, bool]:
    """(log file, append) of the serial console; libvirt truncates unless append='on'."""
    try:
        root = safe_fromstring(xml)
    except (ET.ParseError, DefusedXmlException):
        return None, False
    log = root.find("devices/serial/log")
    if log is None:
        return None, False
    return log.get("file"), log.get("append") == "on"


def with_console_log(xml: str, console_log_dir: str) -> str:
    """Point the serial console log into `console_log_dir` (same file name).

    Each agent keeps its guests' console logs in its own directory; a definition or a
    migration that arrives from another node is moved over. XML without a serial log
    is returned unchanged.
    """
    root = safe_fromstring(xml)
    log = root.find("devices/serial/log")
    current = log.get("file") if log is not None else None
    if log is None or not current or not console_log_dir:
        return xml
    wanted = str(PurePosixPath(console_log_dir) / PurePosixPath(current).name)
    if wanted == current:
        return xml
    log.set("file", wanted)
    return ET.tostring(root, encoding="unicode")


def rbd_volumes(xml: str) -> list[tuple[str, str]]:
    """(pool, volume) of every RBD disk (<source protocol='rbd' name='pool/volume'>)."""
    try:
        root = safe_fromstring(xml)
    except (ET.ParseError, DefusedXmlException):
        return []
    volumes = []
    for source in root.iterfind("devices/disk/source"):
        if source.get("protocol") == "rbd" and "/" in (name := source.get("name", "")):
            pool, _, volume = name.partition("/")
            volumes.append((pool, volume.split("@", 1)[0]))
    return volumes
