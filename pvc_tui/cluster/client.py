"""The cluster library's client: read nodes and VMs, and change them atomically.

Every write is validated first, then applied as one compare-and-set on the znode
version (or one ZooKeeper transaction); a concurrent change makes it re-read and
re-validate, so two operators racing get one winner and a clear error for the other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError

from pvc_tui.cluster import console, layout, moves
from pvc_tui.cluster.auth import Credentials
from pvc_tui.cluster.connection import (
    DEFAULT_CONNECT_TIMEOUT,
    connect,
    ensure_schema,
    wait_on_znode,
)
from pvc_tui.cluster.domain_xml import check_name, parse_domain_xml
from pvc_tui.cluster.errors import (
    AlreadyExists,
    ConflictError,
    InvalidRequest,
    NotFound,
    OperationFailed,
)
from pvc_tui.cluster.layout import PowerState, RecordError, VMState
from pvc_tui.cluster.models import VM, Node
from pvc_tui.cluster.storage_api import StorageAPI

MAX_CAS_ATTEMPTS = 20
DEFAULT_WAIT_TIMEOUT = 120.0


class ClusterClient:
    """A connection to one cluster. Thread-safe (kazoo clients are)."""

    def __init__(self, zk: KazooClient, hosts: str = "") -> None:
        self.zk = zk
        self.hosts = hosts
        self.storage = StorageAPI(self)

    @classmethod
    def connect(cls, hosts: str, timeout: float = DEFAULT_CONNECT_TIMEOUT,
                credentials: Credentials | None = None) -> ClusterClient:
        """Connect to the ZooKeeper ensemble at `hosts`, failing within `timeout`,
        as `credentials` (auth.py; None: no authentication)."""
        zk = connect(hosts, timeout, credentials)
        try:
            ensure_schema(zk)
        except Exception:
            zk.stop()
            zk.close()
            raise
        return cls(zk, hosts)

    def close(self) -> None:
        """End the ZooKeeper session."""
        self.zk.stop()
        self.zk.close()

    def __enter__(self) -> ClusterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- reads -------------------------------------------------------------------

    def list_nodes(self) -> list[Node]:
        """All nodes, sorted by name (records that fail to parse are skipped)."""
        nodes = []
        for name in sorted(self.zk.get_children(layout.NODES)):
            try:
                nodes.append(self.get_node(name))
            except (NotFound, RecordError):
                continue
        return nodes

    def get_node(self, name: str) -> Node:
        """One node by name."""
        if not layout.NAME_PATTERN.match(name):
            raise NotFound(f"no node named {name!r}")
        try:
            data, stat = self.zk.get(layout.node_path(name))
        except NoNodeError:
            raise NotFound(f"no node named {name!r}") from None
        alive = self.zk.exists(layout.node_alive_path(name)) is not None
        try:
            record = layout.decode(data, layout.NODE_FIELDS)
        except RecordError as exc:
            raise RecordError(f"the record of node {name} is invalid: {exc}") from None
        return Node.from_record(record, stat.version, alive)

    def list_vms(self, node: str | None = None, state: str | None = None) -> list[VM]:
        """All VMs, optionally only those on `node` or in desired `state`, sorted by name."""
        if node is not None:
            self.get_node(node)
        if state is not None and state not in {s.value for s in VMState}:
            raise InvalidRequest(
                f"unknown state {state!r}: choose from {', '.join(s.value for s in VMState)}"
            )
        vms = []
        for uuid in self.zk.get_children(layout.VMS):
            try:
                vm = self._get_vm_by_uuid(uuid)
            except (NotFound, RecordError):
                continue
            if (node is None or vm.node == node) and (state is None or vm.state == state):
                vms.append(vm)
        return sorted(vms, key=lambda v: v.name)

    def get_vm(self, name_or_uuid: str) -> VM:
        """One VM by name or UUID."""
        return self._get_vm_by_uuid(self._resolve_uuid(name_or_uuid))

    def get_vm_xml(self, name_or_uuid: str) -> str:
        """The VM's libvirt domain XML."""
        uuid = self._resolve_uuid(name_or_uuid)
        try:
            data, _ = self.zk.get(layout.vm_xml_path(uuid))
        except NoNodeError:
            raise NotFound(f"no VM {name_or_uuid!r}") from None
        return bytes(data).decode("utf-8", errors="replace")

    def _resolve_uuid(self, name_or_uuid: str) -> str:
        if layout.UUID_PATTERN.match(name_or_uuid):
            if self.zk.exists(layout.vm_path(name_or_uuid)):
                return name_or_uuid
        elif layout.NAME_PATTERN.match(name_or_uuid):
            try:
                data, _ = self.zk.get(layout.vm_name_path(name_or_uuid))
                return bytes(data).decode()
            except NoNodeError:
                pass
        raise NotFound(f"no VM named {name_or_uuid!r}")

    def _get_vm_by_uuid(self, uuid: str) -> VM:
        try:
            data, stat = self.zk.get(layout.vm_path(uuid))
        except NoNodeError:
            raise NotFound(f"no VM with UUID {uuid}") from None
        try:
            record = layout.decode(data, layout.VM_FIELDS)
        except RecordError as exc:
            raise RecordError(f"the record of VM {uuid} is invalid: {exc}") from None
        return VM.from_record(record, stat.version)

    # ---- define / undefine ---------------------------------------------------------

    def define_vm(self, xml_text: str, node: str, start: bool = False) -> VM:
        """Add a VM from libvirt domain XML to `node` (desired state stop, or start)."""
        spec = parse_domain_xml(xml_text)
        if layout.UUID_PATTERN.match(spec.name):
            raise InvalidRequest(f"VM name {spec.name!r} looks like a UUID: choose another")
        check_name(node, "node name")
        self.get_node(node)
        for other in self.list_nodes():
            if spec.uuid in other.domains:  # e.g. undefined a moment ago, still removing
                raise AlreadyExists(f"a VM with UUID {spec.uuid} is still defined on "
                                    f"{other.name}; wait until it is removed")
        record = layout.new_vm_record(
            name=spec.name,
            uuid=spec.uuid,
            node=node,
            state=(VMState.START if start else VMState.STOP).value,
            memory_mib=spec.memory_mib,
            vcpus=spec.vcpus,
        )
        tx = self.zk.transaction()
        tx.create(layout.vm_name_path(spec.name), spec.uuid.encode())
        tx.create(layout.vm_path(spec.uuid), layout.encode(record))
        tx.create(layout.vm_xml_path(spec.uuid), spec.xml.encode())
        results = tx.commit()
        failure = next((r for r in results if isinstance(r, Exception)), None)
        if failure is not None:
            if isinstance(results[0], NodeExistsError):
                raise AlreadyExists(f"a VM named {spec.name!r} is already defined")
            if isinstance(results[1], NodeExistsError):
                raise AlreadyExists(f"a VM with UUID {spec.uuid} is already defined")
            raise InvalidRequest(f"define failed: {type(failure).__name__}")
        return self.get_vm(spec.uuid)

    def undefine_vm(self, name_or_uuid: str, wait: bool = False,
                    timeout: float = DEFAULT_WAIT_TIMEOUT, force: bool = False) -> VM:
        """Remove a VM from the cluster; its node's agent powers it off and undefines it.

        A VM meant to be running (start, restart) is refused unless `force`.
        """
        for _ in range(MAX_CAS_ATTEMPTS):
            vm = self.get_vm(name_or_uuid)
            if vm.state in (VMState.START, VMState.RESTART) and not force:
                raise InvalidRequest(
                    f"VM {vm.name} is meant to be running: stop it first, or pass --yes to "
                    "power it off and remove it"
                )
            tx = self.zk.transaction()
            tx.delete(layout.vm_xml_path(vm.uuid))
            tx.delete(layout.vm_path(vm.uuid), version=vm.version)
            tx.delete(layout.vm_name_path(vm.name))
            results = tx.commit()
            if not any(isinstance(r, Exception) for r in results):
                break
            if not any(isinstance(r, BadVersionError) for r in results):
                raise NotFound(f"no VM {name_or_uuid!r}")
        else:
            raise ConflictError(f"VM {name_or_uuid!r} kept changing; try again")
        console.delete_buffer(self, vm.uuid)
        if wait:
            self._wait_node(vm.node, lambda n: True if vm.uuid not in n.domains else None,
                            timeout, f"VM {vm.name} still defined on {vm.node}")
        return vm

    # ---- placement ---------------------------------------------------------------

    def migrate_vm(self, name: str, target: str | None = None, selector: str | None = None,
                   force: bool = False, wait: bool = False,
                   timeout: float = DEFAULT_WAIT_TIMEOUT) -> VM:
        """Move a VM temporarily, remembering where it came from (`previous_node`).

        Refused for an already-migrated VM unless `force`, which keeps the original
        previous node.
        """
        vm = moves.request_move(self, name, "migrate", target, selector, force)
        return moves.wait_move(self, vm, timeout) if wait else vm

    def unmigrate_vm(self, name: str, wait: bool = False,
                     timeout: float = DEFAULT_WAIT_TIMEOUT) -> VM:
        """Send a migrated VM back to its previous node (then cleared)."""
        vm = moves.request_move(self, name, "unmigrate")
        return moves.wait_move(self, vm, timeout) if wait else vm

    def move_vm(self, name: str, target: str, wait: bool = False,
                timeout: float = DEFAULT_WAIT_TIMEOUT) -> VM:
        """Place a VM on `target` permanently (clears `previous_node`)."""
        vm = moves.request_move(self, name, "move", target)
        return moves.wait_move(self, vm, timeout) if wait else vm

    def flush_node(self, name: str, wait: bool = False, timeout: float = 600.0,
                   on_item: Callable[[dict[str, Any]], None] | None = None,
                   concurrency: int | None = None) -> dict[str, Any]:
        """Ask the node's agent to move every VM off it; with wait, follow to `flushed`."""
        request_id = moves.request_domain_state(self, name, "flush", concurrency)
        if not wait:
            return {"id": request_id}
        return moves.wait_domain_state(self, name, "flush", request_id, timeout, on_item)

    def ready_node(self, name: str, wait: bool = False, timeout: float = 600.0,
                   on_item: Callable[[dict[str, Any]], None] | None = None,
                   concurrency: int | None = None) -> dict[str, Any]:
        """Ask the node's agent to take its VMs back; with wait, follow to `ready`."""
        request_id = moves.request_domain_state(self, name, "ready", concurrency)
        if not wait:
            return {"id": request_id}
        return moves.wait_domain_state(self, name, "ready", request_id, timeout, on_item)

    # ---- desired state -------------------------------------------------------------

    def start_vm(self, name: str, wait: bool = False,
                 timeout: float = DEFAULT_WAIT_TIMEOUT) -> VM:
        """Desired state `start`; with wait, until it runs or fails."""
        return self._set_state(name, VMState.START, wait, timeout)

    def stop_vm(self, name: str, wait: bool = False,
                timeout: float = DEFAULT_WAIT_TIMEOUT) -> VM:
        """Desired state `stop` (power off at once); with wait, until it is off."""
        return self._set_state(name, VMState.STOP, wait, timeout)

    def shutdown_vm(self, name: str, wait: bool = False,
                    timeout: float = DEFAULT_WAIT_TIMEOUT) -> VM:
        """Desired state `shutdown` (graceful, then power off); with wait, until off."""
        return self._set_state(name, VMState.SHUTDOWN, wait, timeout)

    def restart_vm(self, name: str, wait: bool = False,
                   timeout: float = DEFAULT_WAIT_TIMEOUT) -> VM:
        """Graceful shutdown then start; with wait, until it runs again."""
        return self._set_state(name, VMState.RESTART, wait, timeout)

    def _set_state(self, name: str, state: VMState, wait: bool, timeout: float) -> VM:
        def mutate(record: dict[str, Any]) -> None:
            if state is VMState.RESTART and record["state"] not in (
                VMState.START, VMState.RESTART
            ):
                raise InvalidRequest(
                    f"VM {record['name']} is not meant to be running "
                    f"(state {record['state']}): use start"
                )
            record["state"] = state.value
            record["failed_reason"] = ""

        vm = self.update_vm(name, mutate)
        if not wait:
            return vm
        return self.wait_vm_state(vm, state, timeout)

    def update_node(self, name: str, mutate: Callable[[dict[str, Any]], None]) -> Node:
        """Read-modify-write a node record with compare-and-set, retrying on races
        (the agent's keepalives)."""
        path = layout.node_path(name)
        for _ in range(MAX_CAS_ATTEMPTS):
            try:
                data, stat = self.zk.get(path)
            except NoNodeError:
                raise NotFound(f"no node named {name!r}") from None
            record = layout.decode(data, layout.NODE_FIELDS)
            before = layout.encode(record)
            mutate(record)
            encoded = layout.encode(record)
            if encoded == before:
                return self.get_node(name)
            try:
                self.zk.set(path, encoded, version=stat.version)
                return self.get_node(name)
            except BadVersionError:
                continue
        raise ConflictError(f"node {name} kept changing; try again")

    def update_vm(self, name_or_uuid: str, mutate: Callable[[dict[str, Any]], None],
                  unchanged: Callable[[], list[tuple[str, int]]] | None = None) -> VM:
        """Read-validate-write a VM record with compare-and-set, retrying on races.

        `mutate` edits the record in place and may raise InvalidRequest to refuse;
        it is called again with fresh data whenever another writer got in first.
        `unchanged`, called after `mutate`, names other znodes (path, version) that
        `mutate` relied on: the write happens only if none of them changed either.
        """
        for _ in range(MAX_CAS_ATTEMPTS):
            uuid = self._resolve_uuid(name_or_uuid)
            try:
                data, stat = self.zk.get(layout.vm_path(uuid))
            except NoNodeError:
                continue
            try:
                record = layout.decode(data, layout.VM_FIELDS)
            except RecordError as exc:
                raise RecordError(f"the record of VM {uuid} is invalid: {exc}") from None
            mutate(record)
            tx = self.zk.transaction()
            for path, version in unchanged() if unchanged else []:
                tx.check(path, version)
            tx.set_data(layout.vm_path(uuid), layout.encode(record), version=stat.version)
            results = tx.commit()
            if any(isinstance(r, Exception) for r in results):
                continue  # someone got in first: read everything again
            return VM.from_record(record, stat.version + 1)
        raise ConflictError(f"VM {name_or_uuid!r} kept changing; try again")

    def wait_vm_state(self, vm: VM, goal: VMState, timeout: float) -> VM:
        """Block (on a watch) until `vm` reaches `goal`; raise if it fails or is changed."""

        def check(data: bytes | None, stat: Any) -> VM | None:
            if data is None:
                raise OperationFailed(f"VM {vm.name} was undefined while waiting")
            now = VM.from_record(layout.decode(data, layout.VM_FIELDS), stat.version)
            if now.state == VMState.FAIL:
                raise OperationFailed(f"VM {vm.name} failed: {now.failed_reason}")
            if goal is VMState.RESTART:
                if (now.state == VMState.START and now.power_state == PowerState.RUNNING
                        and self.reported_live(now)):
                    return now
                if now.state != VMState.RESTART and now.state != VMState.START:
                    raise OperationFailed(f"VM {vm.name} was set to {now.state} meanwhile")
                return None
            if now.state != goal:
                raise OperationFailed(f"VM {vm.name} was set to {now.state} meanwhile")
            want = PowerState.RUNNING if goal is VMState.START else PowerState.SHUTOFF
            return now if now.power_state == want and self.reported_live(now) else None

        return wait_on_znode(self.zk, layout.vm_path(vm.uuid), check, timeout,
                             lambda: self._stuck_reason(vm, goal))

    def _wait_node(self, name: str, check: Callable[[Node], bool | None], timeout: float,
                   what: str) -> None:
        def on_data(data: bytes | None, stat: Any) -> bool | None:
            if data is None:
                return True
            alive = self.zk.exists(layout.node_alive_path(name)) is not None
            return check(Node.from_record(layout.decode(data, layout.NODE_FIELDS),
                                          stat.version, alive))

        wait_on_znode(self.zk, layout.node_path(name), on_data, timeout,
                      lambda: f"{what}{self._node_health_suffix(name)}")

    def reported_live(self, vm: VM) -> bool:
        """Whether `vm`'s runtime comes from the agent holding its node now (not from a
        dead or replaced agent's last word)."""
        try:
            data, _ = self.zk.get(layout.node_alive_path(vm.node))
        except NoNodeError:
            return False
        return bool(vm.runtime.reporter) and bytes(data).decode() == vm.runtime.reporter

    def _stuck_reason(self, vm: VM, goal: VMState) -> str:
        return f"VM {vm.name} has not reached {goal.value}{self._node_health_suffix(vm.node)}"

    def _node_health_suffix(self, name: str) -> str:
        """Best effort, bounded: this runs when something already took too long."""
        try:
            data, _ = self.zk.get_async(layout.node_path(name)).get(timeout=2.0)
            alive = self.zk.exists_async(layout.node_alive_path(name)).get(timeout=2.0)
            node = Node.from_record(layout.decode(data, layout.NODE_FIELDS), -1,
                                    alive is not None)
        except NoNodeError:
            return f": node {name} is not registered"
        except Exception:  # ZooKeeper unreachable, or a bad record: say nothing more
            return ""
        if node.daemon_state != "run":
            return f": node {name}'s agent is {node.daemon_state}"
        return ""
