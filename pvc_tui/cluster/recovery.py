"""Dead nodes: declaring them, and starting their VMs elsewhere once they are fenced.

A node is dead when its agent's session has ended and it has not come back for
`keepalive_interval x fence_intervals`. A live agent declares it by a compare-and-set
of the node record (`daemon_state` dead, `fence.state` declared): one declarer wins.
Then, by the cluster's recovery policy:

- `none`: nothing moves; the operator sees the dead node and runs `node recover`
  (after making sure it is really off);
- `fence`: the declarer runs the fence command (e.g. an IPMI power cycle); only after it
  succeeds are the node's VMs assigned elsewhere, with `previous_node` the dead node.

While a node's fence state is `fencing` or `fenced`, its agent, if it comes back, starts
none of its VMs: they are about to run elsewhere. Once `recovered`, they are no longer
its VMs, so it never runs them a second time.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pvc_tui.cluster import layout
from pvc_tui.cluster.errors import NotFound, Refused
from pvc_tui.cluster.placement import Planned, rank

if TYPE_CHECKING:
    from pvc_tui.cluster.client import ClusterClient


class FenceState(StrEnum):
    """Where a dead node is in being fenced and recovered (`fence.state`)."""

    DECLARED = "declared"  # dead; nothing done yet (policy none: waits for the operator)
    FENCING = "fencing"  # the fence command is running
    FENCED = "fenced"  # the fence command succeeded: its VMs may run elsewhere
    FAILED = "failed"  # the fence command failed: nothing moved
    RECOVERED = "recovered"  # its VMs were assigned elsewhere


HOLDING = frozenset({FenceState.FENCING, FenceState.FENCED})
POLICIES = ("none", "fence")


def declare_dead(client: ClusterClient, node: str, by: str, policy: str) -> bool:
    """Mark `node` dead (one declarer wins); False if it is alive or already declared."""
    declared = False

    def mutate(record: dict[str, Any]) -> None:
        nonlocal declared
        fence = record["fence"] or {}
        declared = record["daemon_state"] in ("init", "run") \
            and fence.get("state") not in (FenceState.DECLARED, *HOLDING) \
            and client.zk.exists(layout.node_alive_path(node)) is None
        if not declared:
            return
        record["daemon_state"] = layout.DaemonState.DEAD.value
        record["fence"] = {"state": FenceState.DECLARED.value, "by": by, "policy": policy,
                           "at": time.time(), "reason": "", "vms": []}
        declared = True

    client.update_node(node, mutate)
    return declared


def set_fence(client: ClusterClient, node: str, only_from: tuple[str, ...] | None = None,
              **fields: Any) -> bool:
    """Update the node's fence record; with `only_from`, only while its state is one of
    those (compare-and-set). Whether it was updated."""
    updated = False

    def mutate(record: dict[str, Any]) -> None:
        nonlocal updated
        fence = record["fence"] or {}
        updated = only_from is None or fence.get("state") in only_from
        if updated:
            record["fence"] = {**fence, **fields, "at": time.time()}

    client.update_node(node, mutate)
    return updated


def recover_node(client: ClusterClient, node: str,
                 fenced: bool = False) -> list[tuple[str, str]]:
    """Assign every VM of dead `node` to a live node (previous node: `node`).

    Returns (VM, new node or why none) per VM. Refused while the node's agent is alive,
    unless `fenced` (its fence command succeeded: whatever it ran is gone, and its agent,
    if back, holds its VMs until they are moved)."""
    current = client.get_node(node)
    state = (current.fence or {}).get("state")
    if not fenced and client.zk.exists(layout.node_alive_path(node)) is not None:
        raise Refused(f"node {node} is alive: flush it instead of recovering it")
    if state == FenceState.FENCING:
        raise Refused(f"node {node} is being fenced right now: wait for the outcome")
    outcome: list[tuple[str, str]] = []
    nodes = [n for n in client.list_nodes() if n.name != node]
    live = {n.name for n in nodes if n.daemon_state == layout.DaemonState.RUN}
    planned: dict[str, Planned] = {}  # what this recovery already put on each node
    for vm in client.list_vms():
        move = vm.migration
        previous: str | None = node  # what `previous_node` becomes; None: the move's
        if vm.node == node and move is not None and move.source in live:
            # moving onto the dead node: the source still has it (running, or stopped
            # and released); it keeps it, as if the move had been withdrawn
            target, how, previous = move.source, "back to", None
        elif vm.node != node and move is not None and move.source == node:
            # moving off the dead node: the target waits for a source that is gone
            target, how = vm.node, "on to"
        elif vm.node == node:
            placed = rank(nodes, vm, planned=planned)
            target, how = (placed.ranked[0].name if placed.ranked else ""), "to"
        else:
            continue
        if target:
            planned.setdefault(target, Planned()).add(vm)
        move_id = move.id if move is not None else ""

        def mutate(record: dict[str, Any], target: str = target, owner: str = vm.node,
                   previous: str | None = previous, move_id: str = move_id) -> None:
            migration = record["migration"] or {}
            if record["node"] != owner or migration.get("id", "") != move_id:
                return  # moved, or recovered by someone else, meanwhile
            if not target:
                record["state"] = layout.VMState.FAIL.value
                record["failed_reason"] = f"node {node} died and no node can take it"
                return
            record.update(node=target, migration={},
                          previous_node=migration.get("previous_node", "")
                          if previous is None else previous,
                          runtime={**layout.VM_RUNTIME_FIELDS})

        try:
            client.update_vm(vm.uuid, mutate)
        except NotFound:
            continue  # undefined meanwhile
        outcome.append((vm.name, f"{how} {target}" if target else
                        "no valid target: set to fail"))
    if outcome or state != FenceState.RECOVERED:  # a second recoverer keeps the record
        set_fence(client, node, state=FenceState.RECOVERED.value,
                  vms=[f"{vm}: {where}" for vm, where in outcome])
    return outcome
