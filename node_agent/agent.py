"""The node agent: registers its node, reconciles its VMs, reports their state.

One loop, woken by ZooKeeper watches, libvirt lifecycle events and timers. Each pass
reads the desired state as it is now and makes the hypervisor match it (a level-
triggered controller): a restarted agent changes nothing that was right. While
ZooKeeper is unreachable the agent does nothing to its guests.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import libvirt
from kazoo.client import KazooState
from kazoo.exceptions import (
    ConnectionLoss,
    NodeExistsError,
    NoNodeError,
    SessionExpiredError,
)
from kazoo.recipe.watchers import ChildrenWatch, DataWatch
from kazoo.retry import KazooRetry

from node_agent.config import AgentConfig
from node_agent.console import ConsoleManager, ConsolePaths
from node_agent.domain_runner import DomainStateRunner
from node_agent.fencing import DeadNodeWatch, agent_session_timeout
from node_agent.hypervisor import DomainInfo, Hypervisor
from node_agent.reconciler import Desired, Reconciler
from node_agent.records import AgentRecords
from node_agent.storage import StoragePrimary
from pvc_tui import __version__
from pvc_tui.cluster import layout
from pvc_tui.cluster.auth import (
    Credentials,
    PvcKazooClient,
    load_credentials,
    read_credentials_file,
)
from pvc_tui.cluster.client import ClusterClient
from pvc_tui.cluster.connection import cluster_id, ensure_schema
from pvc_tui.cluster.layout import DaemonState, PowerState
from pvc_tui.cluster.recovery import HOLDING, FenceState, recover_node, set_fence

log = logging.getLogger(__name__)
# Fields of a VM record that change what the agent must do (runtime does not).
_DESIRED_KEYS = ("name", "state", "node", "migration")


def agent_credentials(config: AgentConfig) -> Credentials | None:
    """The agent role's credentials: `zk_auth_file`, else $PVC_ZK_AUTH, else none."""
    if config.zk_auth_file:
        return read_credentials_file(Path(config.zk_auth_file))
    return load_credentials()


class NodeTaken(Exception):
    """Another live agent process already serves this node."""


def _pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host and has not exited (zombies have)."""
    if pid <= 0:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] != "Z"


class NodeAgent:
    """Runs one hypervisor node. Call `run()` from the main thread."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.name = config.name
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._need_register = threading.Event()
        self._records: dict[str, tuple[dict[str, Any], int]] = {}
        self._watched: set[str] = set()
        self._lock = threading.Lock()
        self._daemon_state = DaemonState.INIT
        self._next_keepalive = 0.0
        self._reported: tuple[Any, ...] = ()
        self._retry_at = 0.0
        self._exit_code = 0
        self._cluster_id = ""
        self._reporter = ""
        self.hypervisor = Hypervisor(config.libvirt_uri, self.wake)
        self._pool = ThreadPoolExecutor(config.reconcile_workers, thread_name_prefix="vm")
        self._in_flight: dict[str, Future[None]] = {}
        self._deferred: set[str] = set()  # VMs a pass skipped because a task was running
        credentials = agent_credentials(config)
        self.zk = PvcKazooClient(
            hosts=config.zk,
            timeout=agent_session_timeout(config.keepalive_interval),
            connection_retry=KazooRetry(max_tries=-1, max_delay=2.0),
            command_retry=KazooRetry(max_tries=3, max_delay=1.0),
            auth_data=[credentials.auth] if credentials else None,
        )
        self.records = AgentRecords(self.zk, self.name)
        self.reconciler = Reconciler(self.hypervisor, self.records, self.name,
                                     config.console_log_dir, config.shutdown_timeout,
                                     before_handover=self._refresh_summary)
        self._summary_lock = threading.Lock()
        self._last_mine: list[Desired] = []
        self.domain_runner = DomainStateRunner(self.records, config.flush_concurrency,
                                               config.target_selector)
        self.storage = (StoragePrimary(config.zk, self.name, config.ceph_conf,
                                       config.keepalive_interval, credentials)
                        if config.ceph_conf else None)
        self.dead_nodes = DeadNodeWatch(self.zk, self.name, config.keepalive_interval,
                                        config.fence_intervals, config.recovery,
                                        config.fence_command,
                                        agent_session_timeout(config.keepalive_interval))
        self.console = ConsoleManager(self.zk, self.name, config.console_log_lines,
                                      config.console_log_interval,
                                      config.console_publish_interval, resync=self.wake)
        self._console_paths = ConsolePaths(self.name, Path(config.console_log_dir),
                                           self.hypervisor.console_log)

    def wake(self) -> None:
        """Ask for a reconcile pass soon (safe from any thread)."""
        self._wake.set()

    def request_stop(self) -> None:
        """End the loop; guests keep running (safe from a signal handler)."""
        self._stop.set()
        self._wake.set()

    # ---- main loop ----------------------------------------------------------------

    def run(self) -> int:
        """Serve until `request_stop()`; returns the process exit code."""
        self.zk.add_listener(self._on_zk_state)
        self.zk.start_async()
        watching = False
        waited_since = time.monotonic()
        while not self._stop.is_set():
            self._wake.wait(self._sleep_time())
            self._wake.clear()
            if self._stop.is_set():
                break
            if not self.zk.connected:
                if time.monotonic() - waited_since > self.config.zk_connect_timeout:
                    log.warning("waiting for ZooKeeper at %s", self.config.zk)
                    waited_since = time.monotonic()
                continue
            if time.monotonic() < self._retry_at:
                continue  # backing off after a failed pass
            try:
                if self._need_register.is_set():
                    self._need_register.clear()
                    self._register()
                    if not watching:
                        ChildrenWatch(self.zk, layout.VMS, self._on_vm_children)
                        self.domain_runner.start()
                        self.console.start()
                        if self.storage is not None:
                            self.storage.start()
                        self.dead_nodes.start()
                        watching = True
                self._pass()
                self._retry_at = 0.0
            except NodeTaken as exc:
                log.error("%s", exc)
                self._stop.set()
                self._exit_code = 1
            except (ConnectionLoss, SessionExpiredError) as exc:
                log.warning("ZooKeeper connection lost during a pass (%s); will retry",
                            type(exc).__name__)
            except libvirt.libvirtError as exc:
                self._back_off(f"libvirt error: {exc.get_error_message()}")
            except Exception as exc:  # never die of one bad pass: report and retry
                log.exception("reconcile pass failed")
                self._back_off(f"{type(exc).__name__}: {exc}")
        self._shutdown()
        return self._exit_code

    def _back_off(self, why: str) -> None:
        log.error("%s; retrying in %g s", why, self.config.keepalive_interval)
        self._retry_at = time.monotonic() + self.config.keepalive_interval
        self._need_register.set()  # re-read everything on the next try

    def _sleep_time(self) -> float:
        now = time.monotonic()
        if not self.zk.connected:
            return self.config.keepalive_interval  # the session listener wakes us
        if self._retry_at > now:
            return self._retry_at - now
        until = self._next_keepalive - now
        deadline = self.reconciler.next_deadline()
        if deadline is not None:
            until = min(until, deadline - now)
        return max(0.05, min(until, self.config.keepalive_interval))

    def _on_zk_state(self, state: str) -> None:
        log.info("ZooKeeper session: %s", state)
        if state in (KazooState.SUSPENDED, KazooState.LOST):
            with self._lock:  # the first pass after this reads every record afresh
                self._records.clear()
        if state == KazooState.CONNECTED:
            self._need_register.set()
            self._wake.set()

    def _shutdown(self) -> None:
        log.info("stopping: node %s goes to daemon state stop; guests keep running", self.name)
        self.domain_runner.stop()
        self.dead_nodes.stop()
        if self.storage is not None:
            self.storage.stop()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.console.stop()
        if self.zk.connected and self._reporter:  # only what this agent registered
            try:
                self._daemon_state = DaemonState.STOP
                self.records.write_node({"daemon_state": DaemonState.STOP.value})
                alive = layout.node_alive_path(self.name)
                _, stat = self.zk.get(alive)
                if stat.ephemeralOwner == self.zk.client_id[0]:
                    self.zk.delete(alive, version=stat.version)
            except Exception as exc:  # leaving anyway; the session's end removes `alive`
                log.warning("could not record stop: %s", exc)
        self.zk.stop()
        self.zk.close()
        self.hypervisor.close()

    # ---- registration -------------------------------------------------------------

    def _register(self) -> None:
        ensure_schema(self.zk)
        self.reconciler.cluster_id = self._cluster_id = cluster_id(self.zk)
        with contextlib.suppress(NodeExistsError):  # the parent of `alive`
            self.zk.create(layout.node_path(self.name),
                           layout.encode(layout.new_node_record(name=self.name)))
        alive = layout.node_alive_path(self.name)
        me = layout.alive_data(socket.gethostname(), os.getpid())
        try:
            self.zk.create(alive, me, ephemeral=True)
        except NodeExistsError:
            data, stat = self.zk.get(alive)
            if stat.ephemeralOwner != self.zk.client_id[0]:
                host, pid = layout.parse_alive(data)
                if host != socket.gethostname() or _pid_alive(pid):
                    raise NodeTaken(f"node {self.name} is already served by pid {pid} on "
                                    f"{host or 'another host'}; not starting a second agent"
                                    ) from None
                log.warning("a dead agent's session (pid %d) still holds node %s; taking over",
                            pid, self.name)
                self.zk.delete(alive)
                self.zk.create(alive, me, ephemeral=True)
        self._reporter = me.decode()
        self.records.write_node({"daemon_state": self._daemon_state.value})
        fence_state = self._fence_state()
        if fence_state == FenceState.DECLARED:  # back before anyone acted on it
            set_fence(ClusterClient(self.zk), self.name, only_from=(FenceState.DECLARED,),
                      state="returned")
        elif fence_state == FenceState.FENCED:  # its fencer died before recovering it
            for vm, where in recover_node(ClusterClient(self.zk), self.name, fenced=True):
                log.warning("recovered %s from this node, fenced: %s", vm, where)
        self._next_keepalive = 0.0
        log.info("registered node %s (session 0x%x)", self.name, self.zk.client_id[0])

    def _fence_state(self) -> str:
        """This node's fence state (recovery.FenceState), "" if it was never declared dead."""
        try:
            data, _ = self.zk.get(layout.node_path(self.name))
            return str((layout.decode(data, layout.NODE_FIELDS)["fence"] or {}).get("state", ""))
        except (NoNodeError, layout.RecordError):
            return ""

    # ---- watches (kazoo's thread: no blocking work here) ----------------------------

    def _on_vm_children(self, children: list[str]) -> bool:
        for uuid in set(children) - self._watched:
            self._watched.add(uuid)
            DataWatch(self.zk, layout.vm_path(uuid), self._vm_watcher(uuid))
        self._wake.set()
        return not self._stop.is_set()

    def _vm_watcher(self, uuid: str) -> Any:
        def on_data(data: bytes | None, stat: Any, event: Any = None) -> bool:
            with self._lock:
                old = self._records.get(uuid)
                if data is None:
                    self._records.pop(uuid, None)
                    self._watched.discard(uuid)
                else:
                    try:
                        self._records[uuid] = (layout.decode(data, layout.VM_FIELDS),
                                               stat.version)
                    except layout.RecordError as exc:
                        log.warning("VM record %s is invalid: %s", uuid, exc)
                        self._records.pop(uuid, None)
                new = self._records.get(uuid)
            if _desired(old) != _desired(new):
                self._wake.set()
            return data is not None and not self._stop.is_set()

        return on_data

    # ---- one reconcile pass -------------------------------------------------------

    def _pass(self) -> None:
        in_cluster = set(self.zk.get_children(layout.VMS))
        with self._lock:
            cached = {u: self._records[u] for u in in_cluster if u in self._records}
        for uuid in in_cluster - set(cached):  # not (or no longer) cached: read it now
            try:
                data, stat = self.zk.get(layout.vm_path(uuid))
                entry = (layout.decode(data, layout.VM_FIELDS), stat.version)
            except (NoNodeError, layout.RecordError):
                continue
            cached[uuid] = entry
            with self._lock:  # keep it unless a watch already stored a newer version
                if self._records.get(uuid, ({}, -1))[1] < stat.version:
                    self._records[uuid] = entry
        domains = self.hypervisor.domains()
        mine: list[Desired] = []
        # declared dead and fenced: our VMs are about to run elsewhere; start none
        holding = self._fence_state() in HOLDING
        for uuid, (rec, version) in cached.items():
            want = Desired(uuid, rec["name"], rec["state"], rec, version)
            if rec["node"] == self.name:
                mine.append(want)
                dom = domains.get(uuid)
                if holding:
                    continue
                if self.reconciler.needs_work(want, dom.power_state if dom else None):
                    self._submit(uuid, self.reconciler.reconcile, want)
            elif uuid in domains or (rec["migration"] or {}).get("source") == self.name:
                self._submit(uuid, self.reconciler.depart, want)
        for uuid, dom in domains.items():
            if uuid not in in_cluster and dom.managed_by(self._cluster_id):
                self._submit(uuid, self.reconciler.remove_unassigned, uuid, dom.name)
        self.reconciler.forget_deadlines_except(set(cached))
        keepalive_due = time.monotonic() >= self._next_keepalive
        if self._daemon_state == DaemonState.INIT:
            self._daemon_state = DaemonState.RUN
            keepalive_due = True
        # Which VMs are busy is decided before libvirt is read: a task ending after this
        # point wakes the loop again (deferred); one that ended before is in the snapshot.
        with self._lock:
            busy = {w.uuid for w in mine if w.uuid in self._in_flight}
            self._deferred |= busy
        domains = self.hypervisor.domains()
        # The node summary first: whoever sees a VM's new runtime sees its node current.
        self._last_mine = mine
        self._keepalive(mine, domains, keepalive_due)
        for want in mine:
            if want.uuid not in busy:
                self._publish_runtime(want, domains.get(want.uuid), keepalive_due)
        self._sync_consoles(cached, domains)

    def _sync_consoles(self, records: dict[str, tuple[dict[str, Any], int]],
                       domains: dict[str, DomainInfo]) -> None:
        """Tail the console of every VM whose guest runs here: those assigned here, and
        those leaving that have not left yet (a live migration's last lines)."""
        running = []
        for uuid, (record, _) in records.items():
            dom = domains.get(uuid)
            if dom is None or dom.power_state not in (PowerState.RUNNING, PowerState.PAUSED):
                continue
            leaving = (record.get("migration") or {}).get("source") == self.name
            if record["node"] == self.name or leaving:
                running.append((uuid, record["name"], record, dom.instance))
        self.console.sync(self._console_paths.specs(running))

    def _submit(self, uuid: str, task: Callable[..., None], *args: Any) -> None:
        """Run `task` for one VM, unless one is still running for it: then look again
        when that one ends."""
        with self._lock:
            if uuid in self._in_flight:
                self._deferred.add(uuid)
                return
            future = self._pool.submit(task, *args)
            self._in_flight[uuid] = future
        future.add_done_callback(lambda f: self._task_done(uuid, f))

    def _task_done(self, uuid: str, future: Future[None]) -> None:
        failed = future.exception()
        if failed is not None:  # retried by the next periodic pass, not at once
            log.warning("VM %s: task failed: %s", uuid, failed)
        with self._lock:
            self._in_flight.pop(uuid, None)
            deferred = uuid in self._deferred
            self._deferred.discard(uuid)
        if deferred:
            self._wake.set()

    def _publish_runtime(self, want: Desired, dom: DomainInfo | None, with_cpu: bool) -> None:
        runtime: dict[str, Any] = {
            "power_state": (dom.power_state if dom else PowerState.UNDEFINED).value,
            "node": self.name,
            "memory_mib": dom.memory_mib if dom else 0,
            "vcpus": dom.vcpus if dom else 0,
            "cpu_time_ns": dom.cpu_time_ns if dom else 0,
            "reporter": self._reporter,
        }
        old = want.record.get("runtime") or {}
        keys = ("power_state", "node", "memory_mib", "vcpus", "reporter") + (
            ("cpu_time_ns",) if with_cpu else ())
        if all(old.get(k) == runtime[k] for k in keys):
            return
        runtime["updated_at"] = time.time()

        def mutate(record: dict[str, Any]) -> bool:
            if record["node"] != self.name:
                return False
            record["runtime"] = runtime
            return True

        self.records.update_vm(want.uuid, mutate)

    def _refresh_summary(self) -> None:
        """Write the node summary now if what runs here changed (from a VM task)."""
        self._keepalive(self._last_mine, self.hypervisor.domains(), due=False)

    def _keepalive(self, mine: list[Desired], domains: dict[str, DomainInfo],
                   due: bool) -> None:
        with self._summary_lock:
            self._write_summary(mine, domains, due)

    def _write_summary(self, mine: list[Desired], domains: dict[str, DomainInfo],
                       due: bool) -> None:
        # What runs here is what loads the node, whoever it is assigned to.
        running = sorted((d for d in domains.values() if d.managed_by(self._cluster_id)
                          and d.power_state in (PowerState.RUNNING, PowerState.PAUSED)),
                         key=lambda d: d.name)
        managed = sorted(u for u, d in domains.items() if d.managed_by(self._cluster_id))
        reported = (tuple(d.name for d in running), tuple(managed), len(mine),
                    self._daemon_state)
        if not due and reported == self._reported:
            return
        cpus, mem_total, mem_free = self.hypervisor.host_info()
        mem_alloc = sum(d.memory_mib for d in running)
        if mem_free <= 0:  # the driver cannot tell (test://): derive from allocations
            mem_free = max(mem_total - mem_alloc, 0)
        self.records.write_node({
            "daemon_state": self._daemon_state.value,
            "migration_uri": self.config.migration_uri,
            "migration_address": self.config.migration_address,
            "agent_version": __version__,
            "libvirt_uri": self.config.libvirt_uri,
            "console_log_dir": self.config.console_log_dir,
            "cpu_count": cpus,
            "load": round(os.getloadavg()[0], 2),
            "mem_total_mib": mem_total,
            "mem_free_mib": mem_free,
            "mem_used_mib": max(mem_total - mem_free, 0),
            "mem_allocated_mib": mem_alloc,
            "vcpus_allocated": sum(d.vcpus for d in running),
            "vm_count": len(mine),
            "running_vms": list(reported[0]),
            "domains": managed,
            "keepalive_at": time.time(),
        })
        self._reported = reported
        self._next_keepalive = time.monotonic() + self.config.keepalive_interval


def _desired(entry: tuple[dict[str, Any], int] | None) -> tuple[Any, ...] | None:
    if entry is None:
        return None
    return tuple(entry[0].get(k) for k in _DESIRED_KEYS)

