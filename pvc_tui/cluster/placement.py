"""Choosing a node for a VM: which nodes are valid targets, and which is best.

Shared by the client (migrate) and the agent (flush). A node is a valid target only if
its agent runs, it is `ready`, it is not the VM's current node and it has the memory;
there is no fallback to unhealthy nodes. Every rejected node comes with its reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pvc_tui.cluster.errors import InvalidRequest
from pvc_tui.cluster.layout import DaemonState, DomainState
from pvc_tui.cluster.models import VM, Node

SELECTORS = ("mem", "load", "vcpus", "vms")
DEFAULT_SELECTOR = "mem"


@dataclass
class Planned:
    """Load already promised to a node by this planner but not yet in its record."""

    memory_mib: int = 0
    vcpus: int = 0
    vms: int = 0

    def add(self, vm: VM, count: int = 1) -> None:
        """Promise `vm` to this node (count -1: take the promise back)."""
        self.memory_mib += count * vm.memory_mib
        self.vcpus += count * vm.vcpus
        self.vms += count


@dataclass(frozen=True)
class Choice:
    """The outcome of ranking: valid nodes best first, and why each other node is not."""

    ranked: tuple[Node, ...]
    rejected: dict[str, str]

    @property
    def best(self) -> Node | None:
        """The selected target, if any node qualifies."""
        return self.ranked[0] if self.ranked else None

    def why_none(self) -> str:
        """One line naming each node and why it is not a valid target."""
        return "; ".join(f"{name}: {why}" for name, why in sorted(self.rejected.items()))


def check_selector(selector: str | None) -> str:
    """The selector, defaulted and validated."""
    selector = selector or DEFAULT_SELECTOR
    if selector not in SELECTORS:
        raise InvalidRequest(f"unknown selector {selector!r}: choose from {', '.join(SELECTORS)}")
    return selector


def free_memory_mib(node: Node, planned: Planned | None = None) -> int:
    """Memory not yet allocated to running VMs (nor promised by the planner)."""
    return node.mem_total_mib - node.mem_allocated_mib - (planned.memory_mib if planned else 0)


def rank(nodes: Iterable[Node], vm: VM, selector: str | None = None,
         planned: dict[str, Planned] | None = None,
         allow_domain_states: tuple[str, ...] = (DomainState.READY,)) -> Choice:
    """Valid targets for `vm`, best first by `selector` (ties by name), and rejections."""
    selector = check_selector(selector)
    planned = planned or {}
    valid: list[Node] = []
    rejected: dict[str, str] = {}
    for node in nodes:
        plan = planned.get(node.name, Planned())
        if node.name == vm.node:
            rejected[node.name] = "the VM's current node"
        elif node.daemon_state != DaemonState.RUN:
            rejected[node.name] = f"agent is {node.daemon_state}"
        elif node.domain_state not in allow_domain_states:
            rejected[node.name] = f"node is {node.domain_state}"
        elif node.mem_total_mib and free_memory_mib(node, plan) < vm.memory_mib:
            rejected[node.name] = (f"{free_memory_mib(node, plan)} MiB free, "
                                   f"needs {vm.memory_mib} MiB")
        else:
            valid.append(node)

    def key(node: Node) -> tuple[float, str]:
        plan = planned.get(node.name, Planned())
        if selector == "mem":
            return (-free_memory_mib(node, plan), node.name)
        if selector == "load":
            return (node.load, node.name)
        if selector == "vcpus":
            return (node.vcpus_allocated + plan.vcpus, node.name)
        return (node.vm_count + plan.vms, node.name)

    return Choice(tuple(sorted(valid, key=key)), rejected)
