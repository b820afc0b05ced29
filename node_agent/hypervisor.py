"""The agent's view of its local libvirt: domains, their state and figures, events."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import libvirt

from pvc_tui.cluster.domain_xml import console_log, managed_by
from pvc_tui.cluster.layout import PowerState

log = logging.getLogger(__name__)

_POWER_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: PowerState.UNKNOWN,
    libvirt.VIR_DOMAIN_RUNNING: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: PowerState.SHUTTING_DOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: PowerState.SHUTOFF,
    libvirt.VIR_DOMAIN_CRASHED: PowerState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: PowerState.PAUSED,
}

_event_loop_lock = threading.Lock()
_event_loop_started = False


def _start_event_loop() -> None:
    """Run libvirt's default event loop in a daemon thread (once per process)."""
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()
        # libvirt prints every error to stderr by default; the agent handles them as
        # exceptions and logs them itself.
        libvirt.registerErrorHandler(lambda ctx, err: None, None)

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _event_loop_started = True


def power_state_of(dom: libvirt.virDomain) -> PowerState:
    """The domain's power state now."""
    return _POWER_STATES.get(dom.state()[0], PowerState.UNKNOWN)


@dataclass(frozen=True)
class DomainInfo:
    """One libvirt domain as seen now."""

    uuid: str
    name: str
    power_state: PowerState
    memory_mib: int
    vcpus: int
    cpu_time_ns: int
    cluster: str | None  # the cluster id in pvc's marker; None: not pvc's
    instance: int  # libvirt's domain ID: new for every start (-1 when off)

    def managed_by(self, cluster: str) -> bool:
        """Whether this domain was defined by an agent of `cluster`."""
        return self.cluster == cluster


class Hypervisor:
    """A libvirt connection with lifecycle events; reconnects when the daemon restarts."""

    def __init__(self, uri: str, on_event: Callable[[], None]) -> None:
        self.uri = uri
        self._on_event = on_event
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.Lock()
        _start_event_loop()

    def connection(self) -> libvirt.virConnect:
        """The open connection, (re)opened if needed; raises libvirt.libvirtError."""
        with self._lock:
            if self._conn is not None and self._conn.isAlive():
                return self._conn
            conn = libvirt.open(self.uri)
            conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle, None
            )
            # drivers without close callbacks (test://) never close by themselves
            with contextlib.suppress(libvirt.libvirtError):
                conn.registerCloseCallback(self._closed, None)
            self._conn = conn
            log.info("libvirt connected: %s", self.uri)
            return conn

    def _lifecycle(self, *args: object) -> None:
        self._on_event()

    def _closed(self, *args: object) -> None:
        log.warning("libvirt connection closed; will reopen")
        self._on_event()

    def close(self) -> None:
        """Close the connection (guests are not touched)."""
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    self._conn.close()
                self._conn = None

    def supports_live_migration(self) -> bool:
        """False for libvirt's test driver, which has no migration at all."""
        return str(self.connection().getType()).lower() != "test"

    def host_info(self) -> tuple[int, int, int]:
        """(cpu count, memory total MiB, memory free MiB or 0 when the driver cannot tell)."""
        conn = self.connection()
        info = conn.getInfo()
        try:
            free = int(conn.getFreeMemory()) // (1024 * 1024)
        except libvirt.libvirtError:
            free = 0
        return int(info[2]), int(info[1]), free

    def domains(self) -> dict[str, DomainInfo]:
        """Every domain defined on this hypervisor, by UUID."""
        result = {}
        for dom in self.connection().listAllDomains(0):
            try:
                result[dom.UUIDString()] = self._describe(dom)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
        return result

    def _describe(self, dom: libvirt.virDomain) -> DomainInfo:
        state, max_kib, _, vcpus, cpu_ns = dom.info()
        return DomainInfo(
            uuid=dom.UUIDString(),
            name=dom.name(),
            power_state=_POWER_STATES.get(state, PowerState.UNKNOWN),
            memory_mib=int(max_kib) // 1024,
            vcpus=int(vcpus),
            cpu_time_ns=int(cpu_ns),
            cluster=managed_by(dom.XMLDesc(0)),
            instance=int(dom.ID()),
        )

    def lookup(self, uuid: str) -> libvirt.virDomain | None:
        """The domain with `uuid`, or None."""
        try:
            return self.connection().lookupByUUIDString(uuid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise

    def console_log(self, uuid: str) -> tuple[str | None, bool]:
        """(log file, append) of the domain's serial console, from its live XML."""
        dom = self.lookup(uuid)
        return console_log(dom.XMLDesc(0)) if dom is not None else (None, False)

    def define(self, xml: str) -> libvirt.virDomain:
        """Define (persistently) a domain from XML."""
        return self.connection().defineXML(xml)

    def remove(self, uuid: str) -> None:
        """Power off (if running) and undefine a domain; absent is fine."""
        dom = self.lookup(uuid)
        if dom is None:
            return
        if dom.isActive():
            dom.destroy()
        flags = libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        try:
            dom.undefineFlags(flags)
        except libvirt.libvirtError:
            dom.undefine()
