"""Level-triggered reconciliation of one VM: make libvirt match the desired state.

Each call looks at the desired record and the domain as they are now, and takes at
most one step towards the goal; calling it again with nothing changed does nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import libvirt

from node_agent.hypervisor import Hypervisor, power_state_of
from pvc_tui.cluster.domain_xml import mark_managed
from pvc_tui.cluster.layout import PowerState, VMState

log = logging.getLogger(__name__)
MAX_REASON_CHARS = 500

ACTIVE = (PowerState.RUNNING, PowerState.PAUSED, PowerState.SHUTTING_DOWN)


@dataclass(frozen=True)
class Desired:
    """A VM record assigned to this node, as last read from ZooKeeper."""

    uuid: str
    name: str
    state: str
    record: dict[str, Any]
    version: int


class Reconciler:
    """Applies desired VM states to the local hypervisor.

    `fetch_xml(uuid)` returns the VM's domain XML from ZooKeeper; `set_state(uuid,
    expected_state, new_state, reason)` compare-and-sets the desired state (used for
    `restart` -> `start` and for `fail`).
    """

    def __init__(
        self,
        hypervisor: Hypervisor,
        fetch_xml: Callable[[str], str],
        set_state: Callable[[str, str, str, str], None],
        shutdown_timeout: float,
    ) -> None:
        self._hv = hypervisor
        self._fetch_xml = fetch_xml
        self._set_state = set_state
        self._shutdown_timeout = shutdown_timeout
        self._shutdown_deadlines: dict[str, float] = {}
        self._lock = threading.Lock()

    def next_deadline(self) -> float | None:
        """The earliest moment a graceful shutdown must be checked again."""
        with self._lock:
            return min(self._shutdown_deadlines.values(), default=None)

    def reconcile(self, want: Desired) -> None:
        """One step towards `want` for its domain; failures set the VM to `fail`."""
        try:
            self._step(want)
        except libvirt.libvirtError as exc:
            reason = (exc.get_error_message() or str(exc))[:MAX_REASON_CHARS]
            log.warning("VM %s: %s failed: %s", want.name, want.state, reason)
            self._forget_shutdown(want.uuid)
            self._set_state(want.uuid, want.state, VMState.FAIL.value, reason)

    def remove_unassigned(self, uuid: str, name: str) -> None:
        """Power off and undefine a pvc-managed domain no longer in the cluster."""
        log.info("VM %s (%s) is no longer defined in the cluster: removing it", name, uuid)
        self._forget_shutdown(uuid)
        self._hv.remove(uuid)

    def _step(self, want: Desired) -> None:
        dom = self._hv.lookup(want.uuid)
        if want.state == VMState.FAIL:
            return
        if dom is None:
            log.info("VM %s: defining on this node", want.name)
            dom = self._hv.define(mark_managed(self._fetch_xml(want.uuid)))
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
                self._set_state(want.uuid, VMState.RESTART.value, VMState.START.value, "")

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

