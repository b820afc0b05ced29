"""Typed, read-only models of cluster records (frozen dataclasses)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from pvc_tui.cluster.layout import DaemonState, PowerState


def _typed_fields(defaults: Any, raw: dict[str, Any]) -> dict[str, Any]:
    """The dataclass fields of `defaults` taken from `raw` where their type fits
    (an int is accepted for a float); anything else keeps its default."""
    values: dict[str, Any] = {}
    for item in fields(defaults):
        default = getattr(defaults, item.name)
        value = raw.get(item.name, default)
        if isinstance(default, float) and isinstance(value, int):
            value = float(value)
        values[item.name] = value if type(value) is type(default) else default
    return values


@dataclass(frozen=True)
class VMRuntime:
    """What the owning agent last observed of a VM on its hypervisor."""

    power_state: str = PowerState.UNKNOWN.value
    node: str = ""
    memory_mib: int = 0
    vcpus: int = 0
    cpu_time_ns: int = 0
    updated_at: float = 0.0
    reporter: str = ""  # "host pid" of the agent that wrote it

    @classmethod
    def from_record(cls, raw: Any) -> VMRuntime:
        """Build from the `runtime` sub-document, ignoring unknown or ill-typed keys."""
        return cls(**_typed_fields(cls(), raw)) if isinstance(raw, dict) else cls()


@dataclass(frozen=True)
class Migration:
    """A move of a VM between nodes (in progress, or the last one finished)."""

    id: str = ""
    source: str = ""
    target: str = ""
    method: str = ""
    phase: str = ""
    used: str = ""
    requested_at: float = 0.0
    seconds: float = 0.0  # set when finished

    @classmethod
    def from_record(cls, raw: Any) -> Migration | None:
        """Build from a `migration` sub-document; None for {} or garbage."""
        if not isinstance(raw, dict) or not raw.get("id"):
            return None
        return cls(**_typed_fields(cls(), raw))


@dataclass(frozen=True)
class VM:
    """A virtual machine: desired state (operators) plus runtime (its agent)."""

    uuid: str
    name: str
    state: str
    node: str
    previous_node: str = ""
    failed_reason: str = ""
    memory_mib: int = 0
    vcpus: int = 0
    runtime: VMRuntime = field(default_factory=VMRuntime)
    migration_method: str = ""
    migration: Migration | None = None  # in progress
    last_migration: Migration | None = None
    resume_on_ready: str = ""
    version: int = -1  # znode version of the record, for compare-and-set

    @property
    def power_state(self) -> str:
        """The observed power state, or `unknown` if the agent on `node` has not reported."""
        if self.runtime.node and self.runtime.node != self.node:
            return PowerState.UNKNOWN.value
        return self.runtime.power_state

    @classmethod
    def from_record(cls, record: dict[str, Any], version: int) -> VM:
        """Build from a decoded layout record."""
        return cls(
            uuid=record["uuid"],
            name=record["name"],
            state=record["state"],
            node=record["node"],
            previous_node=record["previous_node"],
            failed_reason=record["failed_reason"],
            memory_mib=record["memory_mib"],
            vcpus=record["vcpus"],
            runtime=VMRuntime.from_record(record["runtime"]),
            migration_method=record["migration_method"],
            migration=Migration.from_record(record["migration"]),
            last_migration=Migration.from_record(record["last_migration"]),
            resume_on_ready=record["resume_on_ready"],
            version=version,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON output."""
        return {
            "name": self.name,
            "uuid": self.uuid,
            "state": self.state,
            "power_state": self.power_state,
            "node": self.node,
            "previous_node": self.previous_node,
            "failed_reason": self.failed_reason,
            "memory_mib": self.memory_mib,
            "vcpus": self.vcpus,
            "cpu_time_ns": self.runtime.cpu_time_ns,
            "runtime_updated_at": self.runtime.updated_at,
            "migration_method": self.migration_method,
            "migration": asdict(self.migration) if self.migration else None,
            "last_migration": asdict(self.last_migration) if self.last_migration else None,
            "resume_on_ready": self.resume_on_ready,
        }


@dataclass(frozen=True)
class Node:
    """A hypervisor node as its agent last reported it."""

    name: str
    daemon_state: str
    domain_state: str
    alive: bool
    agent_version: str = ""
    libvirt_uri: str = ""
    console_log_dir: str = ""
    cpu_count: int = 0
    load: float = 0.0
    mem_total_mib: int = 0
    mem_used_mib: int = 0
    mem_free_mib: int = 0
    mem_allocated_mib: int = 0
    vcpus_allocated: int = 0
    vm_count: int = 0
    running_vms: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    keepalive_at: float = 0.0
    migration_uri: str = ""
    migration_address: str = ""
    domain_progress: dict[str, Any] = field(default_factory=dict)
    fence: dict[str, Any] = field(default_factory=dict)  # see recovery.py
    version: int = -1

    @classmethod
    def from_record(cls, record: dict[str, Any], version: int, alive: bool) -> Node:
        """Build from a decoded layout record and the liveness znode's presence.

        A node whose record says init or run but whose liveness znode is gone is
        reported as `dead`: its agent's ZooKeeper session has ended.
        """
        daemon_state = record["daemon_state"]
        if not alive and daemon_state in (DaemonState.INIT, DaemonState.RUN):
            daemon_state = DaemonState.DEAD.value
        return cls(
            name=record["name"],
            daemon_state=daemon_state,
            domain_state=record["domain_state"],
            alive=alive,
            agent_version=record["agent_version"],
            libvirt_uri=record["libvirt_uri"],
            console_log_dir=record["console_log_dir"],
            cpu_count=record["cpu_count"],
            load=record["load"],
            mem_total_mib=record["mem_total_mib"],
            mem_used_mib=record["mem_used_mib"],
            mem_free_mib=record["mem_free_mib"],
            mem_allocated_mib=record["mem_allocated_mib"],
            vcpus_allocated=record["vcpus_allocated"],
            vm_count=record["vm_count"],
            running_vms=tuple(str(v) for v in record["running_vms"]),
            domains=tuple(str(v) for v in record["domains"]),
            keepalive_at=record["keepalive_at"],
            migration_uri=record["migration_uri"],
            migration_address=record["migration_address"],
            domain_progress=record["domain_progress"],
            fence=record["fence"],
            version=version,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON output."""
        return {
            "name": self.name,
            "daemon_state": self.daemon_state,
            "domain_state": self.domain_state,
            "alive": self.alive,
            "agent_version": self.agent_version,
            "libvirt_uri": self.libvirt_uri,
            "console_log_dir": self.console_log_dir,
            "cpu_count": self.cpu_count,
            "load": self.load,
            "mem_total_mib": self.mem_total_mib,
            "mem_used_mib": self.mem_used_mib,
            "mem_free_mib": self.mem_free_mib,
            "mem_allocated_mib": self.mem_allocated_mib,
            "vcpus_allocated": self.vcpus_allocated,
            "vm_count": self.vm_count,
            "running_vms": list(self.running_vms),
            "keepalive_at": self.keepalive_at,
            "domain_progress": self.domain_progress,
            "fence": self.fence,
        }
