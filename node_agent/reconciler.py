"""Level-triggered reconciliation of one VM: make libvirt match the desired state.

Each call looks at the desired record and the domain as they are now, and takes at
most one step towards the goal; calling it again with nothing changed does nothing.

Moves between nodes: the source agent (`depart`) live-migrates the domain or powers it
off, then marks the move `done` or `released`; only then does the target agent
(`reconcile`) define and start it, and clear the move. So a VM never runs on two
nodes, and an agent that crashes half-way finds the move where it left it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import libvirt
from kazoo.exceptions import ConnectionLoss, NoNodeError, SessionExpiredError

from node_agent.hypervisor import Hypervisor, power_state_of
from pvc_tui.cluster.domain_xml import mark_managed, with_console_log
from pvc_tui.cluster.errors import PvcError
from pvc_tui.cluster.layout import MigrationPhase, PowerState, VMState
from pvc_tui.cluster.models import Migration, Node

log = logging.getLogger(__name__)
MAX_REASON_CHARS = 500
ACTIVE = (PowerState.RUNNING, PowerState.PAUSED, PowerState.SHUTTING_DOWN)
IN_FLIGHT = (MigrationPhase.REQUESTED, MigrationPhase.MIGRATING)
Mutate = Callable[[dict[str, Any]], bool]


class ClusterIO(Protocol):
    """What the reconciler needs from ZooKeeper (implemented by the agent)."""

    def fetch_xml(self, uuid: str) -> str: ...
    def update_vm(self, uuid: str, mutate: Mutate) -> bool: ...
    def get_node(self, name: str) -> Node: ...


@dataclass(frozen=True)
class Desired:
    """A VM record as last read from ZooKeeper."""

    uuid: str
    name: str
    state: str
    record: dict[str, Any]
    version: int

    @property
    def migration(self) -> Migration | None:
        """The move in progress, if any."""
        return Migration.from_record(self.record.get("migration"))


class Reconciler:
    """Applies desired VM states and moves to the local hypervisor."""

    def __init__(self, hypervisor: Hypervisor, cluster: ClusterIO, node_name: str,
                 console_log_dir: str, shutdown_timeout: float,
                 before_handover: Callable[[], None] = lambda: None) -> None:
        self._hv = hypervisor
        # called once a VM has left this node's libvirt and before the move says so: the
        # node's own record must never still claim a VM its target already runs
        self._before_handover = before_handover
        self._cluster = cluster
        self._name = node_name
        self._console_log_dir = console_log_dir
        self._shutdown_timeout = shutdown_timeout
        self._shutdown_deadlines: dict[str, float] = {}
        self._lock = threading.Lock()
        self.cluster_id = ""  # set by the agent once it knows the cluster

    def needs_work(self, want: Desired, power: PowerState | None) -> bool:
        """Whether `reconcile` would do anything now for this VM assigned here (cheap;
        it also drops the shutdown deadline of a VM that is off).

        A graceful shutdown under way needs nothing until its deadline (the loop wakes
        for it) or until libvirt reports the guest off.
        """
        move = want.migration
        if move is not None and move.target == self._name:
            return move.phase not in IN_FLIGHT
        if want.state == VMState.FAIL:
            return False
        if power is None:
            return True  # not defined here yet
        if want.state == VMState.START:
            return power != PowerState.RUNNING
        if power not in ACTIVE:
            self._forget_shutdown(want.uuid)  # whatever shutdown was pending is over
            return want.state == VMState.RESTART  # off: start it again
        if want.state == VMState.STOP:
            return True
        with self._lock:
            deadline = self._shutdown_deadlines.get(want.uuid)
        return deadline is None or time.monotonic() >= deadline

    def forget_deadlines_except(self, uuids: set[str]) -> None:
        """Drop shutdown deadlines of VMs that are gone from the cluster."""
        with self._lock:
            for uuid in set(self._shutdown_deadlines) - uuids:
                del self._shutdown_deadlines[uuid]

    def next_deadline(self) -> float | None:
        """The earliest moment a graceful shutdown must be checked again."""
        with self._lock:
            return min(self._shutdown_deadlines.values(), default=None)

    # ---- VMs assigned to this node -------------------------------------------------

    def reconcile(self, want: Desired) -> None:
        """One step towards `want` for its domain; failures set the VM to `fail`."""
        move = want.migration
        if move is not None and move.target == self._name and move.phase in IN_FLIGHT:
            return  # the source still owns the domain
        try:
            self._step(want)
        except NoNodeError:
            return  # undefined meanwhile: the next pass removes the domain
        except (ConnectionLoss, SessionExpiredError):
            raise  # not the VM's fault: the next pass tries again
        except Exception as exc:  # libvirt's refusal, or XML libvirt cannot take
            if isinstance(exc, libvirt.libvirtError):
                reason = exc.get_error_message() or str(exc)
            else:
                reason = f"{type(exc).__name__}: {exc}"
            log.warning("VM %s: %s failed: %s", want.name, want.state, reason)
            self._forget_shutdown(want.uuid)
            self._fail(want, reason[:MAX_REASON_CHARS])
            return
        if move is not None and move.target == self._name:
            self._finish_move(want, move)

    def _step(self, want: Desired) -> None:
        if want.state == VMState.FAIL:
            return
        dom = self._hv.lookup(want.uuid)
        if dom is None:
            log.info("VM %s: defining on this node", want.name)
            xml = with_console_log(self._cluster.fetch_xml(want.uuid), self._console_log_dir)
            dom = self._hv.define(mark_managed(xml, self.cluster_id))
        power = power_state_of(dom)
        if want.state == VMState.START:
            self._forget_shutdown(want.uuid)
            if power == PowerState.PAUSED:
                log.info("VM %s: resuming", want.name)
                dom.resume()
            elif power not in ACTIVE:
                log.info("VM %s: starting", want.name)
                dom.create()
        elif want.state == VMState.STOP:
            self._forget_shutdown(want.uuid)
            if power in ACTIVE:
                log.info("VM %s: powering off", want.name)
                dom.destroy()
        elif want.state == VMState.SHUTDOWN:
            if power in ACTIVE:
                self._shut_down(want, dom)
            else:
                self._forget_shutdown(want.uuid)
        elif want.state == VMState.RESTART:
            if power in ACTIVE:
                self._shut_down(want, dom)
            else:
                self._forget_shutdown(want.uuid)
                log.info("VM %s: starting again (restart)", want.name)
                dom.create()
                self.set_state(want.uuid, VMState.RESTART.value, VMState.START.value, "")

    def _finish_move(self, want: Desired, move: Migration) -> None:
        def mutate(record: dict[str, Any]) -> bool:
            if (record.get("migration") or {}).get("id") != move.id:
                return False
            record["last_migration"] = {**record["migration"],
                                        "seconds": round(time.time() - move.requested_at, 3)}
            record["migration"] = {}
            return True

        if self._cluster.update_vm(want.uuid, mutate):
            log.info("VM %s: arrived from %s (%s)", want.name, move.source, move.used)

    def _fail(self, want: Desired, reason: str) -> None:
        def mutate(record: dict[str, Any]) -> bool:
            if record["node"] != self._name or record["state"] != want.state:
                return False  # an operator changed it meanwhile: theirs wins
            record["state"] = VMState.FAIL.value
            record["failed_reason"] = reason
            if (record.get("migration") or {}).get("target") == self._name:
                record["last_migration"], record["migration"] = record["migration"], {}
            return True

        self._cluster.update_vm(want.uuid, mutate)

    def set_state(self, uuid: str, expected: str, new: str, reason: str) -> None:
        """Compare-and-set the desired state, only if it is still `expected` here."""
        def mutate(record: dict[str, Any]) -> bool:
            if record["node"] != self._name or record["state"] != expected:
                return False
            record["state"], record["failed_reason"] = new, reason
            return True

        self._cluster.update_vm(uuid, mutate)

    # ---- VMs leaving (or gone from) this node ---------------------------------------

    def depart(self, want: Desired) -> None:
        """Hand a VM assigned elsewhere over to its target, or clear a leftover domain."""
        try:
            self._depart(want)
        except libvirt.libvirtError as exc:
            log.warning("VM %s: leaving this node failed (retrying): %s", want.name,
                        exc.get_error_message())
        except NoNodeError:
            return  # undefined meanwhile

    def _depart(self, want: Desired) -> None:
        move = want.migration
        dom = self._hv.lookup(want.uuid)
        if move is None or move.source != self._name or move.phase not in IN_FLIGHT:
            if dom is not None:
                self._remove_leftover(want, dom)
            return
        wants_running = want.state in (VMState.START, VMState.RESTART)
        if dom is None and move.phase == MigrationPhase.MIGRATING:
            # gone from here mid-migration: it landed on the target (UNDEFINE_SOURCE)
            self._before_handover()
            self._mark_move(want, move, MigrationPhase.DONE, "live")
            return
        if dom is None or not dom.isActive():
            self._forget_shutdown(want.uuid)
            self._before_handover()
            self._mark_move(want, move, MigrationPhase.RELEASED,
                            "shutdown" if wants_running else "cold")
            return
        try:
            target = self._cluster.get_node(move.target)
        except PvcError:  # no such node any more
            target = Node(name=move.target, daemon_state="missing", domain_state="",
                          alive=False)
        if target.daemon_state != "run" and move.used != "shutdown":
            # never power a guest off for a node that cannot take it: keep it here
            self._withdraw_move(want, move, f"target {move.target}'s agent is "
                                            f"{target.daemon_state}")
            return
        live_possible = (move.method != "shutdown" and move.used != "shutdown"
                         and bool(target.migration_uri) and self._hv.supports_live_migration())
        if wants_running and live_possible:
            if self._migrate_live(want, move, dom, target):
                return
            if move.method == "live":
                return  # forced live and it failed: the move was withdrawn
            self._mark_move(want, move, MigrationPhase.MIGRATING, "shutdown")  # no retry
        if want.state == VMState.STOP:
            dom.destroy()
        else:
            self._shut_down(want, dom)
        if not dom.isActive():
            self._forget_shutdown(want.uuid)
            self._before_handover()
            self._mark_move(want, move, MigrationPhase.RELEASED, "shutdown")

    def _migrate_live(self, want: Desired, move: Migration, dom: libvirt.virDomain,
                      target: Node) -> bool:
        if not self._mark_move(want, move, MigrationPhase.MIGRATING, ""):
            return True  # the move changed meanwhile; the next pass sees the new one
        xml = with_console_log(
            dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_MIGRATABLE),
            target.console_log_dir)
        params = {libvirt.VIR_MIGRATE_PARAM_DEST_XML: xml,
                  libvirt.VIR_MIGRATE_PARAM_PERSIST_XML: xml}
        if target.migration_address:
            params[libvirt.VIR_MIGRATE_PARAM_URI] = target.migration_address
        flags = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER
                 | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)
        log.info("VM %s: live-migrating to %s", want.name, move.target)
        began = time.monotonic()
        try:
            dom.migrateToURI3(target.migration_uri, params, flags)
        except libvirt.libvirtError as exc:
            reason = (exc.get_error_message() or str(exc))[:MAX_REASON_CHARS]
            if move.method == "live":
                log.warning("VM %s: live migration failed: %s", want.name, reason)
                self._withdraw_move(want, move, f"live migration failed: {reason}")
            else:
                log.warning("VM %s: live migration failed (%s); shutting down instead",
                            want.name, reason)
            return False
        log.info("VM %s: live migration to %s took %.2f s", want.name, move.target,
                 time.monotonic() - began)
        self._before_handover()
        self._mark_move(want, move, MigrationPhase.DONE, "live")
        return True

    def _mark_move(self, want: Desired, move: Migration, phase: MigrationPhase,
                   used: str) -> bool:
        def mutate(record: dict[str, Any]) -> bool:
            current = record.get("migration") or {}
            if current.get("id") != move.id:
                return False
            current["phase"] = phase.value
            if used:
                current["used"] = used
            return True

        return self._cluster.update_vm(want.uuid, mutate)

    def _withdraw_move(self, want: Desired, move: Migration, reason: str) -> None:
        """The VM still runs here: assign it back to this node and say why."""
        def mutate(record: dict[str, Any]) -> bool:
            if (record.get("migration") or {}).get("id") != move.id:
                return False
            record["node"] = self._name
            record["previous_node"] = record["migration"].get("previous_node", "")
            record["failed_reason"] = reason
            record["last_migration"], record["migration"] = record["migration"], {}
            return True

        self._cluster.update_vm(want.uuid, mutate)

    def _remove_leftover(self, want: Desired, dom: libvirt.virDomain) -> None:
        self._forget_shutdown(want.uuid)
        if not dom.isActive():
            log.info("VM %s now belongs to %s: undefining the copy here", want.name,
                     want.record["node"])
            self._hv.remove(want.uuid)
            return
        # Assigned elsewhere with no move from here under way: this copy is stale, and
        # a VM must never run on two nodes.
        log.warning("VM %s belongs to %s but runs here: powering off this copy",
                    want.name, want.record["node"])
        self._hv.remove(want.uuid)

    # ---- VMs no longer in the cluster -----------------------------------------------

    def remove_unassigned(self, uuid: str, name: str) -> None:
        """Power off and undefine a pvc-managed domain no longer in the cluster."""
        log.info("VM %s (%s) is no longer defined in the cluster: removing it", name, uuid)
        self._forget_shutdown(uuid)
        self._hv.remove(uuid)

    # ---- graceful shutdown with a deadline -----------------------------------------

    def _shut_down(self, want: Desired, dom: libvirt.virDomain) -> None:
        now = time.monotonic()
        with self._lock:
            deadline = self._shutdown_deadlines.get(want.uuid)
            if deadline is None:
                self._shutdown_deadlines[want.uuid] = now + self._shutdown_timeout
        if deadline is None:
            log.info("VM %s: graceful shutdown (power off after %g s)", want.name,
                     self._shutdown_timeout)
            dom.shutdown()
        elif now >= deadline:
            log.warning("VM %s: did not shut down in %g s; powering off", want.name,
                        self._shutdown_timeout)
            self._forget_shutdown(want.uuid)
            dom.destroy()

    def _forget_shutdown(self, uuid: str) -> None:
        with self._lock:
            self._shutdown_deadlines.pop(uuid, None)
