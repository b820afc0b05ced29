"""The local sandbox cluster: a real ZooKeeper, N hypervisor nodes, agents, demo VMs.

All state lives in one directory (`sandbox.json` records what was started, by PID and
start time), so `down` ends exactly what `up` started and nothing else.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pvc_tui.cluster import AlreadyExists, ClusterClient, layout
from pvc_tui.cluster.auth import (
    ACL_IDS_PATH,
    ROLES,
    Credentials,
    enable_acls,
    read_credentials_file,
    write_credentials_file,
)
from pvc_tui.cluster.connection import connect, ensure_schema
from pvc_tui.cluster.errors import InvalidRequest
from pvc_tui.cluster.layout import VMState
from pvc_tui.sandbox.ceph import CephCluster, ceph_unavailable_reason, start_ceph, stop_ceph
from pvc_tui.sandbox.processes import ProcessRef, is_running, spawn, terminate
from pvc_tui.sandbox.zookeeper import (
    ZooKeeperServer,
    restart_server,
    start_ensemble,
    start_zookeeper,
    zookeeper_running,
)

STATE_FILE = "sandbox.json"
LIBVIRTD_TCP_PORT = 16509
DEMO_VM_NAMES = ("web1", "db1", "web2", "cache1", "worker1", "worker2", "web3", "batch1")
TEST_NODE_XML = """<node>
  <cpu><mhz>2400</mhz><model>x86_64</model><active>{cpus}</active><total>{cpus}</total>
    <nodes>1</nodes><sockets>1</sockets><cores>{cpus}</cores><threads>1</threads></cpu>
  <memory>{memory_kib}</memory>
</node>
"""


def default_state_dir() -> Path:
    """$PVC_SANDBOX_DIR, else $XDG_STATE_HOME/pvc-tui/sandbox (~/.local/state/...)."""
    if env := os.environ.get("PVC_SANDBOX_DIR"):
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "pvc-tui" / "sandbox"


def default_driver() -> str:
    """`qemu` where real guests can run here, else `test`."""
    from pvc_tui.sandbox.qemu import qemu_unavailable_reason

    return "qemu" if qemu_unavailable_reason() is None else "test"


@dataclass
class SandboxNode:
    """One hypervisor node of the sandbox."""

    name: str
    index: int
    node_dir: str
    libvirt_uri: str
    console_log_dir: str
    agent: ProcessRef | None = None
    libvirtd: ProcessRef | None = None
    virtlogd: ProcessRef | None = None
    migration_uri: str = ""


@dataclass
class Sandbox:
    """What `up` started, as recorded in STATE_FILE."""

    state_dir: str
    driver: str
    zk_host: str
    zk_port: int
    zk_process: ProcessRef | None = None
    nodes: list[SandboxNode] = field(default_factory=list)
    demo_vms_defined: bool = False  # only the first `up` defines them
    address_block: int = 0  # qemu: node i listens on 127.0.0.(10 + 10 * block + i)
    ceph: dict[str, Any] | None = None  # CephCluster.to_dict() of the tiny Ceph, if any
    # an ensemble's other servers (the first is zk_process/zk_port): [pid, start, port]
    zk_peers: list[list[int]] = field(default_factory=list)

    @property
    def zk(self) -> str:
        """The connect string of the sandbox's ZooKeeper (every server of an ensemble)."""
        return ",".join(f"{self.zk_host}:{port}"
                        for port in [self.zk_port, *(p[2] for p in self.zk_peers)])

    def zk_servers(self) -> list[ZooKeeperServer]:
        """Every ZooKeeper server the sandbox started (one, or an ensemble)."""
        base = Path(self.state_dir) / "zookeeper"
        if not self.zk_peers:
            return [ZooKeeperServer(self.zk_process, self.zk_host, self.zk_port, base)] \
                if self.zk_process else []
        refs = [(self.zk_process, self.zk_port),
                *((ProcessRef(p[0], p[1]), p[2]) for p in self.zk_peers)]
        return [ZooKeeperServer(ref, self.zk_host, port, base / f"zk{i + 1}")
                for i, (ref, port) in enumerate(refs) if ref is not None]

    def credentials_file(self, role: str) -> Path:
        """The 0600 file holding the ZooKeeper credentials of `role` (auth.ROLES)."""
        return Path(self.state_dir) / "auth" / role

    def operator(self) -> Credentials:
        """The operator role's credentials, for clients of this sandbox."""
        return read_credentials_file(self.credentials_file("operator"))

    def save(self) -> None:
        """Write STATE_FILE atomically."""
        path = Path(self.state_dir) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    def status(self) -> dict[str, Any]:
        """The `demo status` document."""
        return {
            "zk": self.zk,
            "zk_running": bool(self.zk_servers()) and all(
                is_running(s.process) for s in self.zk_servers()),
            "zk_servers": 1 + len(self.zk_peers),
            "state_dir": self.state_dir,
            "driver": self.driver,
            "ceph_conf": str(Path(self.ceph["state_dir"]) / "ceph.conf") if self.ceph else None,
            "credentials": {role: str(self.credentials_file(role)) for role in ROLES},
            "ceph_running": self.ceph is not None and all(
                is_running(p) for p in CephCluster.from_dict(self.ceph).processes),
            "nodes": [
                {
                    "name": n.name,
                    "libvirt_uri": n.libvirt_uri,
                    "console_log_dir": n.console_log_dir,
                    "pid": n.agent.pid if n.agent else None,
                    "agent_running": n.agent is not None and is_running(n.agent),
                    "log": str(Path(n.node_dir) / "agent.log"),
                }
                for n in self.nodes
            ],
        }


def _ref(raw: Any) -> ProcessRef | None:
    return ProcessRef(**raw) if isinstance(raw, dict) else None


def load(state_dir: Path) -> Sandbox | None:
    """The sandbox recorded in `state_dir`, or None."""
    try:
        raw = json.loads((state_dir / STATE_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    nodes = [
        SandboxNode(**{**n, "agent": _ref(n.get("agent")), "libvirtd": _ref(n.get("libvirtd")),
                       "virtlogd": _ref(n.get("virtlogd"))})
        for n in raw.get("nodes", [])
    ]
    return Sandbox(state_dir=raw["state_dir"], driver=raw["driver"], zk_host=raw["zk_host"],
                   zk_port=raw["zk_port"], zk_process=_ref(raw.get("zk_process")), nodes=nodes,
                   demo_vms_defined=bool(raw.get("demo_vms_defined")),
                   address_block=int(raw.get("address_block", 0)),
                   ceph=raw.get("ceph") if isinstance(raw.get("ceph"), dict) else None,
                   zk_peers=[[int(x) for x in p] for p in raw.get("zk_peers", [])])


def up(state_dir: Path, nodes: int | None = None, driver: str | None = None,
       demo_vms: bool = True, keepalive_interval: float = 5.0,
       progress: Any = None, ceph: bool = True, zk_servers: int | None = None) -> Sandbox:
    """Start (or complete) the sandbox; idempotent. Returns once agents run.

    `nodes` defaults to 3 for a new sandbox and to its current size for an existing one.
    With `ceph`, a tiny real Ceph runs beside it (see sandbox/ceph.py). `zk_servers` 3 or
    5 runs a ZooKeeper ensemble instead of one server (a new sandbox only).
    """
    if zk_servers is not None and zk_servers not in (1, 3, 5):
        raise InvalidRequest("--zk-servers must be 1, 3 or 5")
    say = progress or (lambda msg: None)
    if nodes is not None and not 1 <= nodes <= 9:
        raise InvalidRequest("--nodes must be between 1 and 9")
    if ceph and (reason := ceph_unavailable_reason()):
        raise InvalidRequest(f"{reason} (or use --no-ceph)")
    state_dir = state_dir.resolve()
    existing = load(state_dir)
    if existing is not None:
        if driver is not None and driver != existing.driver:
            raise InvalidRequest(
                f"a {existing.driver} sandbox already runs in {state_dir}: "
                "run `pvc-tui demo down` first"
            )
        sandbox = existing
        if zk_servers is not None and zk_servers != 1 + len(existing.zk_peers):
            raise InvalidRequest(f"this sandbox runs {1 + len(existing.zk_peers)} ZooKeeper "
                                 "server(s): run `pvc-tui demo down` first to change that")
    else:
        driver = driver or default_driver()
        if driver not in ("qemu", "test"):
            raise InvalidRequest(f"unknown driver {driver!r}: choose qemu or test")
        if driver == "qemu":
            from pvc_tui.sandbox.qemu import qemu_unavailable_reason

            if reason := qemu_unavailable_reason():
                raise InvalidRequest(f"the qemu driver cannot run here: {reason}")
        state_dir.mkdir(parents=True, exist_ok=True)
        sandbox = Sandbox(state_dir=str(state_dir), driver=driver, zk_host="127.0.0.1",
                          zk_port=0,
                          address_block=_free_address_block() if driver == "qemu" else 0)
    _ensure_zookeeper(sandbox, say, zk_servers or 1)
    sandbox.save()
    _ensure_acls(sandbox)
    if ceph:
        _ensure_ceph(sandbox, say)
        sandbox.save()
    _ensure_nodes(sandbox, nodes or len(sandbox.nodes) or 3, keepalive_interval, say)
    sandbox.save()
    operator = read_credentials_file(sandbox.credentials_file("operator"))
    with ClusterClient.connect(sandbox.zk, timeout=10.0, credentials=operator) as client:
        for node in sandbox.nodes:
            _wait_registered(client, node)
        if demo_vms and not sandbox.demo_vms_defined:
            _define_demo_vms(client, sandbox, say)
            sandbox.demo_vms_defined = True
            sandbox.save()
        for vm in client.list_vms(state=VMState.START.value):  # a settled cluster
            client.wait_vm_state(vm, VMState.START, timeout=120.0)
    return sandbox


def _ensure_zookeeper(sandbox: Sandbox, say: Any, servers: int) -> None:
    if sandbox.zk_peers or (servers > 1 and sandbox.zk_process is None):
        _ensure_ensemble(sandbox, say, servers)
        return
    server = None
    if sandbox.zk_process is not None:
        server = ZooKeeperServer(sandbox.zk_process, sandbox.zk_host, sandbox.zk_port,
                                 Path(sandbox.state_dir) / "zookeeper")
        if zookeeper_running(server):
            return
        terminate([sandbox.zk_process])
    say("starting ZooKeeper")
    server = start_zookeeper(Path(sandbox.state_dir) / "zookeeper",
                             port=sandbox.zk_port or None)
    sandbox.zk_port, sandbox.zk_process = server.port, server.process


def _ensure_ensemble(sandbox: Sandbox, say: Any, servers: int) -> None:
    """A new ensemble of `servers`, or the recorded one with any stopped server restarted."""
    if sandbox.zk_process is None:
        say(f"starting a ZooKeeper ensemble of {servers} servers")
        ensemble = start_ensemble(Path(sandbox.state_dir) / "zookeeper", servers)
        first, *others = ensemble.servers
        sandbox.zk_port, sandbox.zk_process = first.port, first.process
        sandbox.zk_peers = [[s.process.pid, s.process.start_time, s.port] for s in others]
        return
    current = sandbox.zk_servers()
    for i, server in enumerate(current):
        if not zookeeper_running(server):
            terminate([server.process])
            say(f"restarting ZooKeeper server {i + 1}")
            again = restart_server(server)
            if i == 0:
                sandbox.zk_process = again.process
            else:
                sandbox.zk_peers[i - 1] = [again.process.pid, again.process.start_time,
                                           again.port]


def _ensure_acls(sandbox: Sandbox) -> None:
    """Credentials for the three roles (0600 files), and ACLs on in a new cluster."""
    for role in ROLES:
        path = sandbox.credentials_file(role)
        if not path.exists():
            write_credentials_file(path, Credentials(role, secrets.token_urlsafe(18)))
    roles = {role: read_credentials_file(sandbox.credentials_file(role)) for role in ROLES}
    zk = connect(sandbox.zk, 10.0, roles["agent"])
    try:
        if zk.exists(ACL_IDS_PATH) is None and zk.exists(layout.ROOT) is None:
            enable_acls(zk, roles)
        ensure_schema(zk)  # also after an `up` that stopped between the two
    finally:
        zk.stop()
        zk.close()


def _ensure_ceph(sandbox: Sandbox, say: Any) -> None:
    if sandbox.ceph is not None:
        running = CephCluster.from_dict(sandbox.ceph)
        if all(is_running(p) for p in running.processes):
            return
        stop_ceph(running)  # half there: memstore keeps nothing worth saving
    say("starting Ceph (1 mon, 1 mgr, 1 memstore OSD)")
    sandbox.ceph = start_ceph(Path(sandbox.state_dir) / "ceph").to_dict()


def _ensure_nodes(sandbox: Sandbox, count: int, keepalive: float, say: Any) -> None:
    by_name = {n.name: n for n in sandbox.nodes}
    for index in range(1, max(count, len(sandbox.nodes)) + 1):
        name = f"hv{index}"
        node = by_name.get(name)
        node_dir = Path(sandbox.state_dir) / "nodes" / name
        if node is None:
            node_dir.mkdir(parents=True, exist_ok=True)
            # the libvirt node index picks its loopback address and migration ports
            net_index = 10 * sandbox.address_block + index
            node = SandboxNode(name=name, index=net_index, node_dir=str(node_dir),
                               libvirt_uri="", console_log_dir=str(node_dir / "console"))
            sandbox.nodes.append(node)
        Path(node.console_log_dir).mkdir(parents=True, exist_ok=True)
        if sandbox.driver == "qemu":
            _ensure_libvirtd(node, say)
        elif not node.libvirt_uri:
            xml = node_dir / "hypervisor.xml"
            xml.write_text(TEST_NODE_XML.format(cpus=8, memory_kib=16 * 1024 * 1024))
            node.libvirt_uri = f"test://{xml}"
        if node.agent is None or not is_running(node.agent):
            say(f"starting agent {name}")
            argv = [sys.executable, "-m", "node_agent", "--name", name, "--zk", sandbox.zk,
                    "--libvirt-uri", node.libvirt_uri,
                    "--console-log-dir", node.console_log_dir,
                    "--keepalive-interval", str(keepalive), "--shutdown-timeout", "20",
                    "--zk-auth-file", str(sandbox.credentials_file("agent"))]
            if sandbox.ceph:  # the agents stand for storage primary on the tiny Ceph
                argv += ["--ceph-conf", str(CephCluster.from_dict(sandbox.ceph).conf)]
            if node.migration_uri:  # qemu nodes: live migration between libvirtds
                from pvc_tui.sandbox.nsinit import node_ip

                argv += ["--migration-uri", node.migration_uri,
                         "--migration-address", f"tcp://{node_ip(node.index)}"]
            node.agent, _ = spawn(argv, node_dir / "agent.log")


def _free_address_block() -> int:
    """A block of ten loopback addresses whose libvirtd port no other sandbox holds."""
    from pvc_tui.sandbox.nsinit import node_ip

    for block in range(19):
        with socket.socket() as probe:
            # as libvirtd binds: old connections in TIME_WAIT do not make a block busy
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((node_ip(10 * block + 1), LIBVIRTD_TCP_PORT))
            except OSError:
                continue
        return block
    raise InvalidRequest("every sandbox address block is taken: stop a sandbox first")


def _ensure_libvirtd(node: SandboxNode, say: Any) -> None:
    from pvc_tui.sandbox.qemu import LibvirtdNode, start_libvirtd_node, stop_libvirtd_node

    if node.libvirtd is not None and is_running(node.libvirtd):
        return
    if node.libvirtd is not None and node.virtlogd is not None:
        stop_libvirtd_node(_libvirtd_of(node, LibvirtdNode))
    say(f"starting libvirtd for {node.name}")
    started = start_libvirtd_node(Path(node.node_dir), node.name, node.index)
    node.libvirt_uri = started.uri
    node.migration_uri = started.migration_uri
    node.console_log_dir = str(started.console_log_dir)
    node.libvirtd = ProcessRef.of(started.libvirtd_pid)
    node.virtlogd = ProcessRef.of(started.virtlogd_pid)


def _libvirtd_of(node: SandboxNode, cls: Any) -> Any:
    return cls(name=node.name, index=node.index, node_dir=Path(node.node_dir),
               uri=node.libvirt_uri, migration_uri=node.migration_uri,
               console_log_dir=Path(node.console_log_dir),
               libvirtd_pid=node.libvirtd.pid if node.libvirtd else 0,
               virtlogd_pid=node.virtlogd.pid if node.virtlogd else 0)


def _wait_registered(client: ClusterClient, node: SandboxNode, timeout: float = 30.0) -> None:
    """Until this very agent (its PID in the liveness znode) reports daemon state run."""
    from pvc_tui.cluster import layout
    from pvc_tui.cluster.connection import wait_on_znode

    pid = node.agent.pid if node.agent else 0
    wait_on_znode(client.zk, layout.node_alive_path(node.name),
                  lambda data, stat: True if layout.parse_alive(data)[1] == pid else None,
                  timeout,
                  lambda: f"agent {node.name} did not register (see its agent.log)")

    def running(data: bytes | None, stat: Any) -> bool | None:
        if data is None:
            return None
        return True if layout.decode(data, layout.NODE_FIELDS)["daemon_state"] == "run" else None

    wait_on_znode(client.zk, layout.node_path(node.name), running, timeout,
                  lambda: f"agent {node.name} did not reach daemon state run")


def demo_vm_xml(sandbox: Sandbox, name: str, node: SandboxNode) -> str:
    """Domain XML for one demo VM on `node`."""
    if sandbox.driver == "qemu":
        import uuid

        from pvc_tui.sandbox.qemu import ensure_guest_image, guest_domain_xml

        image = ensure_guest_image(_cache_dir())
        return guest_domain_xml(name, str(uuid.uuid4()), image,
                                Path(node.console_log_dir) / f"{name}.log")
    return (f"<domain type='test'><name>{name}</name><memory unit='MiB'>512</memory>"
            "<vcpu>1</vcpu><os><type>hvm</type></os></domain>")


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pvc-tui"


def _define_demo_vms(client: ClusterClient, sandbox: Sandbox, say: Any) -> None:
    count = 2 * len(sandbox.nodes) if sandbox.driver == "test" else len(sandbox.nodes) + 1
    names = DEMO_VM_NAMES[:count]
    if sandbox.driver == "qemu":
        say("preparing the guest image (cached after the first time)")
    defined = []
    for i, name in enumerate(names):
        node = sandbox.nodes[i % len(sandbox.nodes)]
        try:
            client.define_vm(demo_vm_xml(sandbox, name, node), node.name, start=True)
            defined.append(name)
        except AlreadyExists:
            continue
    if defined:
        say(f"starting demo VMs: {', '.join(defined)}")


def down(state_dir: Path) -> bool:
    """Stop everything the sandbox in `state_dir` started and remove it; False if none."""
    sandbox = load(state_dir.resolve())
    if sandbox is None:
        return False
    terminate([n.agent for n in sandbox.nodes if n.agent is not None])
    if sandbox.driver == "qemu":
        from pvc_tui.sandbox.qemu import LibvirtdNode, stop_libvirtd_node

        for node in sandbox.nodes:
            if node.libvirtd is not None:
                stop_libvirtd_node(_libvirtd_of(node, LibvirtdNode))
    if sandbox.ceph is not None:
        stop_ceph(CephCluster.from_dict(sandbox.ceph))
    terminate([s.process for s in sandbox.zk_servers()])
    shutil.rmtree(sandbox.state_dir, ignore_errors=True)
    return True
