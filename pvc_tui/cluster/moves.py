"""Migrate, unmigrate, move, and node flush / ready: the client's side.

A move is one compare-and-set on the VM record: the new `node`, the new
`previous_node` and a `migration` document (phase `requested`). The source agent
carries it out and the target agent finishes it (see node_agent/reconciler.py);
waiting follows the record through a watch. Flush and ready are requests written
into the node record; the node's own agent runs them.
"""

from __future__ import annotations

import time
import uuid as uuidlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pvc_tui.cluster import layout
from pvc_tui.cluster.connection import wait_on_znode
from pvc_tui.cluster.errors import (
    InvalidRequest,
    NotFound,
    OperationFailed,
    Refused,
)
from pvc_tui.cluster.layout import DaemonState, DomainState, PowerState, VMState
from pvc_tui.cluster.models import VM, Node
from pvc_tui.cluster.placement import Planned, check_selector, rank

if TYPE_CHECKING:
    from pvc_tui.cluster.client import ClusterClient

MoveKind = Literal["migrate", "unmigrate", "move"]
# Who asks: an operator, or a node's own flush / ready (which may use flushing nodes).
Requester = Literal["operator", "flush", "ready"]


def request_move(client: ClusterClient, name: str, kind: MoveKind, target: str | None = None,
                 selector: str | None = None, force: bool = False,
                 requester: Requester = "operator",
                 planned: dict[str, Planned] | None = None) -> VM:
    """Validate and record a move of VM `name`; returns the VM as written."""
    if selector is not None:
        check_selector(selector)

    relied_on: list[tuple[str, int]] = []

    def mutate(record: dict[str, Any]) -> None:
        vm = VM.from_record(record, -1)
        nodes = {n.name: n for n in client.list_nodes()}
        new_node, new_previous = _plan(vm, nodes, kind, target, selector, force, requester,
                                       planned)
        # the decision rests on the source's and the target's records as read just now
        # (e.g. neither flushing): the write happens only if both are still as read
        relied_on[:] = [(layout.node_path(n), nodes[n].version)
                        for n in {vm.node, new_node} if n in nodes]
        record["previous_node"] = new_previous
        if new_node == vm.node:  # `move` onto its own node: the placement becomes permanent
            return
        record["node"] = new_node
        record["migration"] = {
            "id": uuidlib.uuid4().hex, "source": vm.node, "target": new_node,
            "method": vm.migration_method, "phase": layout.MigrationPhase.REQUESTED.value,
            "used": "", "requested_at": time.time(),
            "previous_node": vm.previous_node,  # restored if the move is withdrawn
        }

    return client.update_vm(name, mutate, unchanged=lambda: relied_on)


def _plan(vm: VM, nodes: dict[str, Node], kind: MoveKind, target: str | None,
          selector: str | None, force: bool, requester: Requester,
          planned: dict[str, Planned] | None) -> tuple[str, str]:
    """(new node, new previous_node) for the move, or raise why it is refused."""
    if target is not None and target not in nodes:
        raise NotFound(f"no node named {target!r}")
    if vm.migration is not None:
        raise Refused(f"VM {vm.name} is being migrated ({vm.migration.source} -> "
                      f"{vm.migration.target}); wait for it to finish")
    source = nodes.get(vm.node)
    if source is None or source.daemon_state != DaemonState.RUN:
        state = source.daemon_state if source else "missing"
        raise Refused(f"node {vm.node}'s agent is {state}: VM {vm.name} cannot be moved "
                      "safely now")
    if requester == "operator" and source.domain_state == DomainState.FLUSH:
        raise Refused(f"node {vm.node} is flushing: its flush moves VM {vm.name}")
    allow: tuple[str, ...] = (DomainState.READY.value,)
    if kind == "unmigrate":
        if not vm.previous_node:
            raise Refused(f"VM {vm.name} has no previous node to return to")
        target = vm.previous_node
        if requester == "ready":
            allow = (DomainState.READY.value, DomainState.UNFLUSH.value)
    elif kind == "migrate" and vm.previous_node and not force:
        raise Refused(f"VM {vm.name} is already migrated (from {vm.previous_node}): "
                      "unmigrate it, or use --force")
    if kind == "move" and target == vm.node:
        return vm.node, ""
    if target == vm.node:
        raise InvalidRequest(f"VM {vm.name} is already on {target}")
    choice = rank(nodes.values(), vm, selector, planned, allow)
    if target is not None:
        if target in choice.rejected:
            raise Refused(f"{target} is not a valid target for VM {vm.name}: "
                          f"{choice.rejected[target]}")
        chosen = target
    elif choice.best is None:
        raise Refused(f"no valid target for VM {vm.name}: {choice.why_none()}")
    else:
        chosen = choice.best.name
    if kind == "migrate":
        # Force semantics: an already-migrated VM keeps its original previous node.
        previous = vm.previous_node if (force and vm.previous_node) else vm.node
        return chosen, "" if previous == chosen else previous
    return chosen, ""


def wait_move(client: ClusterClient, vm: VM, timeout: float) -> VM:
    """Until the move recorded in `vm` has finished and the VM is in its desired state."""
    if vm.migration is None:
        return vm
    move_id, source, target = vm.migration.id, vm.migration.source, vm.migration.target

    def check(data: bytes | None, stat: Any) -> VM | None:
        if data is None:
            raise OperationFailed(f"VM {vm.name} was undefined while moving")
        now = VM.from_record(layout.decode(data, layout.VM_FIELDS), stat.version)
        if now.state == VMState.FAIL:
            raise OperationFailed(f"VM {vm.name} failed: {now.failed_reason}")
        if now.migration is not None and now.migration.id == move_id:
            return None
        if now.node != target:
            raise OperationFailed(f"VM {vm.name} stayed on {now.node}: "
                                  f"{now.failed_reason or 'the move was withdrawn'}")
        if now.state in (VMState.START, VMState.RESTART):
            running = now.power_state == PowerState.RUNNING
            return now if running and client.reported_live(now) else None
        return now

    return wait_on_znode(
        client.zk, layout.vm_path(vm.uuid), check, timeout,
        lambda: f"VM {vm.name} has not finished moving {source} -> {target}")


# ---- flush / ready ------------------------------------------------------------------

DomainAction = Literal["flush", "ready"]
_REQUEST_STATE = {"flush": DomainState.FLUSH, "ready": DomainState.UNFLUSH}
_GOAL_STATE = {"flush": DomainState.FLUSHED, "ready": DomainState.READY}


MAX_CONCURRENCY = 64
# A flush / ready item's result starts with one of these when that VM reached its goal
# (moved, started again, or rightly left where it was); anything else is a failure.
GOAL_RESULTS = ("ok", "started", "stays")


def item_reached_goal(item: dict[str, Any]) -> bool:
    """Whether one VM of a flush or ready ended as it should."""
    return str(item.get("result", "")).startswith(GOAL_RESULTS)


def request_domain_state(client: ClusterClient, name: str, action: DomainAction,
                         concurrency: int | None = None) -> str:
    """Ask node `name`'s agent to flush it or make it ready; returns the request id.

    `concurrency` bounds the VMs moved at once (default: the agent's setting). A
    request while another runs supersedes it at the next VM boundary (no locks).
    """
    if concurrency is not None and not 1 <= concurrency <= MAX_CONCURRENCY:
        raise InvalidRequest(f"concurrency must be between 1 and {MAX_CONCURRENCY}")
    request_id = uuidlib.uuid4().hex
    node = client.get_node(name)
    if node.daemon_state not in (DaemonState.RUN, DaemonState.INIT):  # init: starting
        raise Refused(f"node {name}'s agent is {node.daemon_state}: nothing would carry "
                      f"out the {action}")

    def mutate(record: dict[str, Any]) -> None:
        record["domain_state"] = _REQUEST_STATE[action].value
        record["domain_progress"] = {"id": request_id, "action": action, "items": [],
                                     "finished": False, "requested_at": time.time(),
                                     "concurrency": concurrency or 0}

    client.update_node(name, mutate)
    return request_id


def wait_domain_state(client: ClusterClient, name: str, action: DomainAction,
                      request_id: str, timeout: float,
                      on_item: Callable[[dict[str, Any]], None] | None = None
                      ) -> dict[str, Any]:
    """Follow a flush/ready request to its end; report each VM's outcome to `on_item`."""
    seen = 0

    def check(data: bytes | None, stat: Any) -> dict[str, Any] | None:
        nonlocal seen
        if data is None:
            raise OperationFailed(f"node {name} was removed")
        record = layout.decode(data, layout.NODE_FIELDS)
        progress = record["domain_progress"]
        if progress.get("id") != request_id:
            raise OperationFailed(
                f"the {action} of {name} was superseded by a newer "
                f"{progress.get('action', 'request')}")
        items = progress.get("items", [])
        for item in items[seen:]:
            if on_item is not None:
                on_item(item)
        seen = len(items)
        if progress.get("finished") and record["domain_state"] == _GOAL_STATE[action]:
            return dict(progress)
        return None

    return wait_on_znode(client.zk, layout.node_path(name), check, timeout,
                         lambda: f"the {action} of node {name} has not finished")
