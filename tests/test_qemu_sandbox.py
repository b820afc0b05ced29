"""End-to-end: two real libvirtd hypervisor nodes, real QEMU (TCG) guests, live migration.

Needs root, qemu-system-x86_64, libvirtd, virtlogd, unshare and busybox; fails under CI=true
and skips elsewhere when they are missing. The tests in this module share two nodes and run in
file order; the last one stops the nodes and checks that nothing is left behind.
"""

from __future__ import annotations

import os
import re
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import libvirt
import pytest

from pvc_tui.sandbox.guest_image import BANNER_PREFIX, STATUS_LINE_RE
from pvc_tui.sandbox.qemu import (
    GuestImage,
    LibvirtdNode,
    ensure_guest_image,
    guest_domain_xml,
    qemu_unavailable_reason,
    start_libvirtd_node,
    stop_libvirtd_node,
)

pytestmark = pytest.mark.qemu

T = TypeVar("T")

BOOT_TIMEOUT = 60.0
SHUTDOWN_TIMEOUT = 30.0
MIGRATION_FLAGS = (
    libvirt.VIR_MIGRATE_LIVE
    | libvirt.VIR_MIGRATE_PEER2PEER
    | libvirt.VIR_MIGRATE_PERSIST_DEST
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
)


def wait_for(what: str, check: Callable[[], T | None], timeout: float) -> T:
    """Poll ``check`` until it returns something truthy (and return that), or fail."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def read_console(path: Path) -> str:
    try:
        return path.read_bytes().replace(b"\0", b"").decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def status_uptimes(text: str, name: str) -> list[float]:
    return [float(m["uptime"]) for m in STATUS_LINE_RE.finditer(text) if m["name"] == name]


def banner_count(text: str, name: str) -> int:
    return len(re.findall(rf"^{re.escape(BANNER_PREFIX)} {re.escape(name)} ", text, re.M))


def console_log_of(dom: libvirt.virDomain) -> Path:
    log = ET.fromstring(dom.XMLDesc(0)).find("./devices/serial/log")
    assert log is not None, "guest XML has no serial log"
    return Path(log.attrib["file"])


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] not in ("Z", "X")


def guest_pids(node: LibvirtdNode) -> set[int]:
    pids = set()
    for pidfile in (node.node_dir / "run/libvirt/qemu").glob("*.pid"):
        if pidfile.name != "driver.pid":
            pids.add(int(pidfile.read_text().split()[0]))
    return pids


def mounts_under(root: Path) -> list[str]:
    prefix = str(root.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount_point = line.split()[4].replace("\\040", " ")
        if mount_point == prefix or mount_point.startswith(prefix + "/"):
            found.append(line)
    return found


@dataclass
class Cluster:
    root: Path
    image: GuestImage
    nodes: list[LibvirtdNode]
    recorded_pids: set[int] = field(default_factory=set)
    stopped: bool = False

    def record(self, node: LibvirtdNode) -> None:
        self.recorded_pids |= {node.libvirtd_pid, node.virtlogd_pid} | guest_pids(node)
        nsinit_pid = node.node_dir / "pids/nsinit.pid"
        if nsinit_pid.exists():
            self.recorded_pids.add(int(nsinit_pid.read_text().split()[0]))

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            for node in self.nodes:
                self.record(node)
                stop_libvirtd_node(node)


def guest_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pvc-tui"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    reason = qemu_unavailable_reason()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"real QEMU nodes unavailable in CI: {reason}")
        pytest.skip(reason)
    image = ensure_guest_image(guest_cache_dir())
    root = tmp_path_factory.mktemp("qemu")  # short: unix socket paths must stay < 108 bytes
    nodes: list[LibvirtdNode] = []
    state = Cluster(root=root, image=image, nodes=nodes)
    try:
        for index in (1, 2):
            nodes.append(start_libvirtd_node(root / f"hv{index}", f"hv{index}", index))
            state.record(nodes[-1])
        yield state
    finally:
        state.stop()


def start_guest(cluster: Cluster, node: LibvirtdNode, name: str) -> libvirt.virDomain:
    conn = libvirt.open(node.uri)
    log = node.console_log_dir / f"{name}.log"
    xml = guest_domain_xml(name, str(uuid.uuid4()), cluster.image, log)
    dom = conn.defineXML(xml)
    dom.create()
    cluster.record(node)
    wait_for(
        f"{name}'s banner and a status line in {log}",
        lambda: (
            banner_count(read_console(log), name) == 1 and status_uptimes(read_console(log), name)
        ),
        BOOT_TIMEOUT,
    )
    return dom


def test_guest_boots_prints_status_and_powers_off(cluster: Cluster) -> None:
    hv1 = cluster.nodes[0]
    dom = start_guest(cluster, hv1, "web1")
    conn = dom.connect()
    assert conn.getHostname() == "hv1"
    log = hv1.console_log_dir / "web1.log"
    text = read_console(log)
    assert "Linux version" in text  # kernel boot messages reach the console log too
    first = status_uptimes(text, "web1")[-1]
    wait_for(
        "a second status line", lambda: status_uptimes(read_console(log), "web1")[-1] > first, 15
    )

    # The virtio balloon driver reports guest memory statistics.
    stats = wait_for("balloon memory stats", lambda: "unused" in dom.memoryStats(), 15)
    assert stats

    dom.shutdown()  # ACPI power button -> busybox acpid -> poweroff -f
    wait_for(
        "web1 to shut off",
        lambda: dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF,
        SHUTDOWN_TIMEOUT,
    )
    assert "powering off" in read_console(log)
    dom.undefine()
    conn.close()


def test_live_migration_keeps_guest_running(cluster: Cluster) -> None:
    hv1, hv2 = cluster.nodes
    name = "mig1"
    dom = start_guest(cluster, hv1, name)
    log = console_log_of(dom)

    def uptimes_once(path: Path, enough: Callable[[list[float]], bool]) -> list[float] | None:
        uptimes = status_uptimes(read_console(path), name)
        return uptimes if uptimes and enough(uptimes) else None

    before = wait_for(
        "two status lines before migrating", lambda: uptimes_once(log, lambda u: len(u) >= 2), 15
    )[-1]

    dom.migrateToURI3(
        hv2.migration_uri, {libvirt.VIR_MIGRATE_PARAM_URI: "tcp://127.0.0.12"}, MIGRATION_FLAGS
    )

    src = dom.connect()
    assert name not in [d.name() for d in src.listAllDomains()]  # UNDEFINE_SOURCE
    dst = libvirt.open(hv2.uri)
    moved = dst.lookupByName(name)
    assert moved.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert moved.isPersistent()
    cluster.record(hv2)
    dest_log = console_log_of(moved)
    # The guest keeps printing on node 2: uptime continues past its pre-migration value.
    after = wait_for(
        "status lines from the migrated guest",
        lambda: uptimes_once(dest_log, lambda u: u[-1] >= before + 4),
        30,
    )
    text = read_console(dest_log)
    assert banner_count(text, name) <= 1, "the guest rebooted during migration"
    assert "Linux version" not in text.split(BANNER_PREFIX)[-1]
    assert min(after[-2:]) > before, f"uptime went back: {before} -> {after}"
    src.close()
    dst.close()


def test_stop_nodes_leaves_nothing_behind(cluster: Cluster) -> None:
    dst = libvirt.open(cluster.nodes[1].uri)
    running = [d.name() for d in dst.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)]
    dst.close()
    cluster.stop()
    assert len(cluster.recorded_pids) >= 6  # 2 x (nsinit, virtlogd, libvirtd) + guests
    alive = sorted(pid for pid in cluster.recorded_pids if pid_alive(pid))
    assert not alive, f"still alive after stop: {alive} (guests running before: {running})"
    assert mounts_under(cluster.root) == []
    assert mounts_under(Path("/run/libvirt")) == []
