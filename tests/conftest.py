"""Shared fixtures: a real ZooKeeper server on loopback, real agents on libvirt's test driver.

Each test gets its own ZooKeeper chroot, so tests never see each other's records.
Where a real dependency is missing, a test fails under CI=true and skips elsewhere.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient

from pvc_tui.cluster import ClusterClient, layout
from pvc_tui.cluster.auth import ROLES, Credentials, enable_acls, write_credentials_file
from pvc_tui.cluster.connection import connect, ensure_schema, wait_on_znode
from pvc_tui.sandbox.ceph import CephCluster, ceph_unavailable_reason, start_ceph, stop_ceph
from pvc_tui.sandbox.demo import TEST_NODE_XML
from pvc_tui.sandbox.processes import ProcessRef, spawn, terminate
from pvc_tui.sandbox.zookeeper import (
    ZooKeeperServer,
    start_zookeeper,
    stop_zookeeper,
    zookeeper_unavailable_reason,
)

IN_CI = os.environ.get("CI", "").lower() == "true"


def require(reason: str | None) -> None:
    """Fail (in CI) or skip (elsewhere) when a real dependency is missing."""
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"required dependency missing in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def zk_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperServer]:
    """One real ZooKeeper server for the whole session."""
    require(zookeeper_unavailable_reason())
    server = start_zookeeper(tmp_path_factory.mktemp("zookeeper"), fast_unsafe=True)
    yield server
    stop_zookeeper(server)


@pytest.fixture
def zk_hosts(zk_server: ZooKeeperServer) -> str:
    """A connect string with a fresh chroot: an empty cluster for this test."""
    return new_chroot(zk_server)


def new_chroot(zk_server: ZooKeeperServer, acls: bool = True) -> str:
    """A connect string with a fresh chroot on `zk_server`, with ACLs on (auth.py): every
    test runs against a cluster that enforces its three roles (`acls=False`: an open
    one, as a cluster that never switched them on)."""
    chroot = f"/test-{uuid.uuid4().hex[:12]}"
    zk = KazooClient(hosts=zk_server.address)
    zk.start(timeout=10)
    zk.create(chroot)
    zk.stop()
    zk.close()
    hosts = f"{zk_server.address}{chroot}"
    if not acls:
        return hosts
    admin = connect(hosts, 10.0, ROLE_CREDENTIALS["agent"])
    try:
        enable_acls(admin, ROLE_CREDENTIALS)
        ensure_schema(admin)
    finally:
        admin.stop()
        admin.close()
    return hosts


# One set of credentials per test session; the CLI, the dashboard and everything else
# that reads $PVC_ZK_AUTH in this process (and its children) is an operator.
ROLE_CREDENTIALS = {role: Credentials(role, secrets.token_urlsafe(12)) for role in ROLES}
os.environ["PVC_ZK_AUTH"] = f"operator:{ROLE_CREDENTIALS['operator'].password}"
os.environ.pop("PVC_ZK_AUTH_FILE", None)


def _session_agent_file() -> Path:
    base = Path(tempfile.mkdtemp(prefix="pvc-test-auth-"))
    atexit.register(shutil.rmtree, base, True)
    return credentials_file(base, "agent")


def credentials_file(base: Path, role: str) -> Path:
    """`role`'s credentials in a 0600 file under `base` (for agents: --zk-auth-file)."""
    path = base / f"{role}.auth"
    if not path.exists():
        write_credentials_file(path, ROLE_CREDENTIALS[role])
    return path


@pytest.fixture
def client(zk_hosts: str) -> Iterator[ClusterClient]:
    """A connected cluster client on the test's empty cluster. It holds the agent role,
    because tests also write records the way agents do (the CLI and the dashboard in a
    test are operators)."""
    with ClusterClient.connect(zk_hosts, credentials=ROLE_CREDENTIALS["agent"]) as c:
        yield c


@dataclass
class AgentProcess:
    """A real `pvc-node-agent` process on its own test-driver hypervisor."""

    name: str
    ref: ProcessRef
    proc: subprocess.Popen[bytes]
    log: Path
    argv: list[str]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def wait_agent_running(client: ClusterClient, agent: AgentProcess, timeout: float = 20) -> None:
    """Until this agent process holds the node's liveness znode and reports `run`."""
    wait_on_znode(client.zk, layout.node_alive_path(agent.name),
                  lambda d, s: True if layout.parse_alive(d)[1] == agent.ref.pid else None,
                  timeout,
                  lambda: f"agent {agent.name} did not register:\n{agent.log_text()}")

    def running(data: bytes | None, stat: Any) -> bool | None:
        if data and layout.decode(data, layout.NODE_FIELDS)["daemon_state"] == "run":
            return True
        return None

    wait_on_znode(client.zk, layout.node_path(agent.name), running, timeout,
                  lambda: f"agent {agent.name} did not run:\n{agent.log_text()}")


AgentFactory = Callable[..., AgentProcess]


@pytest.fixture
def start_agent(zk_hosts: str, client: ClusterClient,
                tmp_path: Path) -> Iterator[AgentFactory]:
    """Start agents (`start_agent("hv1")`); all are ended by PID after the test."""
    started: list[AgentProcess] = []

    def start(name: str, *extra: str, wait: bool = True,
              running: tuple[str, ...] = ()) -> AgentProcess:
        agent = launch_agent(zk_hosts, tmp_path, name, len(started), *extra,
                             running=running)
        started.append(agent)
        if wait:
            wait_agent_running(client, agent)
        return agent

    yield start
    stop_agents(started)


def launch_agent(zk_hosts: str, base: Path, name: str, index: int,
                 *extra: str, running: tuple[str, ...] = ()) -> AgentProcess:
    """One agent process on a test-driver hypervisor under `base/name` (not waited for).

    `running`: domain XML the hypervisor already runs when the agent starts (guests
    that outlived their agent)."""
    node_dir = base / name
    node_dir.mkdir(exist_ok=True)
    xml = node_dir / "hypervisor.xml"
    node = TEST_NODE_XML.format(cpus=8, memory_kib=16 * 1024 * 1024)
    xml.write_text(node.replace("</node>", "".join(running) + "</node>"))
    argv = [sys.executable, "-m", "node_agent", "--name", name, "--zk", zk_hosts,
            "--libvirt-uri", f"test://{xml}", "--console-log-dir", str(node_dir),
            "--keepalive-interval", "1", "--shutdown-timeout", "3",
            "--zk-auth-file", str(credentials_file(base, "agent")), *extra]
    ref, proc = spawn(argv, node_dir / f"agent-{index}.log")
    return AgentProcess(name, ref, proc, node_dir / f"agent-{index}.log", argv)


def stop_agents(agents: list[AgentProcess]) -> None:
    """End agent processes by PID."""
    terminate([a.ref for a in agents], timeout=5)
    for a in agents:
        a.proc.wait(timeout=5)


def vm_xml(name: str, memory_mib: int = 256, vcpus: int = 1, uuid_: str | None = None) -> str:
    """Domain XML that libvirt's test driver accepts."""
    uuid_el = f"<uuid>{uuid_}</uuid>" if uuid_ else ""
    return (f"<domain type='test'><name>{name}</name>{uuid_el}"
            f"<memory unit='MiB'>{memory_mib}</memory><vcpu>{vcpus}</vcpu>"
            "<os><type>hvm</type></os></domain>")


def dump_tree(zk: KazooClient, path: str = "/") -> dict[str, bytes]:
    """Every znode under `path` with its data: for 'nothing changed' assertions."""
    out: dict[str, bytes] = {}
    for child in zk.get_children(path):
        full = f"{path.rstrip('/')}/{child}"
        data, _ = zk.get(full)
        out[full] = data
        out.update(dump_tree(zk, full))
    return out


def desired_state(zk: KazooClient) -> dict[str, Any]:
    """What operators own: VM records and names, and nodes' domain state and requests.

    For 'nothing changed' checks while agents run (their keepalives change the rest)."""
    tree = dump_tree(zk)
    out: dict[str, Any] = {}
    for path, data in tree.items():
        if path.startswith((layout.VMS + "/", layout.VM_NAMES + "/")):
            record = data
            if path.count("/") == 3 and path.startswith(layout.VMS + "/"):
                parsed = layout.decode(data, layout.VM_FIELDS)
                parsed.pop("runtime")
                record = parsed  # type: ignore[assignment]
            out[path] = record
        elif path.count("/") == 3 and path.startswith(layout.NODES + "/"):
            parsed = layout.decode(data, layout.NODE_FIELDS)
            out[path] = (parsed["domain_state"], parsed["domain_progress"])
    return out


@dataclass
class StorageCluster:
    hosts: str
    client: ClusterClient
    ceph: CephCluster


@pytest.fixture(scope="module")
def storage(zk_server: ZooKeeperServer,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[StorageCluster]:
    """A real tiny Ceph and one primary agent (hv1) on a fresh chroot, for a module."""
    require(ceph_unavailable_reason())
    base = tmp_path_factory.mktemp("storage")
    ceph = start_ceph(base / "ceph", osds=1)
    hosts = new_chroot(zk_server)
    client = ClusterClient.connect(hosts, credentials=ROLE_CREDENTIALS["agent"])
    agent = launch_agent(hosts, base, "hv1", 0, "--ceph-conf", str(ceph.conf))
    try:
        wait_agent_running(client, agent)
        wait_on_znode(client.zk, layout.STORAGE_STATUS, lambda d, s: bool(d) or None, 30,
                      lambda: f"no storage primary:\n{agent.log_text()}")
        yield StorageCluster(hosts, client, ceph)
    finally:
        stop_agents([agent])
        client.close()
        stop_ceph(ceph)


# For agents run inside the test process (AgentConfig(zk_auth_file=...)).
AGENT_AUTH_FILE = _session_agent_file()
