"""Node flush and ready, run by the node's own agent. No locks.

The request is the node record's `domain_state` (flush / unflush) with a request id in
`domain_progress`. The runner re-reads the record at every VM boundary: a newer request
(another id) stops the running one there and starts itself. After a crash the agent
finds the unfinished request and runs it again; every step is idempotent (VMs already
moved are no longer on the node; a move in progress is waited for, not repeated).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from kazoo.recipe.watchers import DataWatch

from node_agent.records import AgentRecords
from pvc_tui.cluster import layout, moves
from pvc_tui.cluster.errors import PvcError
from pvc_tui.cluster.layout import DomainState, VMState
from pvc_tui.cluster.models import VM
from pvc_tui.cluster.placement import Planned

log = logging.getLogger(__name__)
MOVE_TIMEOUT = 900.0


class Superseded(Exception):
    """A newer flush/ready request replaced the running one."""


class DomainStateRunner:
    """Watches this node's record and runs flush / ready requests, one at a time."""

    def __init__(self, records: AgentRecords, concurrency: int, selector: str) -> None:
        self._records = records
        self._client = records.client
        self._name = records.name
        self._concurrency = concurrency
        self._selector = selector
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._planned: dict[str, Planned] = {}
        self._plan_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="domain-state", daemon=True)

    def start(self) -> None:
        """Begin watching the node record."""
        DataWatch(self._records.zk, layout.node_path(self._name), self._on_node)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current VM boundary."""
        self._stop.set()
        self._wake.set()

    def _on_node(self, data: bytes | None, stat: Any, event: Any = None) -> bool:
        self._wake.set()
        return not self._stop.is_set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                request = self._pending_request()
                if request is not None:
                    self._execute(*request)
            except Superseded:
                self._wake.set()  # look at the newer request at once
            except PvcError as exc:
                log.warning("flush/ready: %s", exc)
            except Exception:  # a ZooKeeper outage: try again on the next change
                log.exception("flush/ready interrupted")

    def _pending_request(self) -> tuple[str, str, int] | None:
        data, _ = self._records.zk.get(layout.node_path(self._name))
        record = layout.decode(data, layout.NODE_FIELDS)
        progress = record["domain_progress"]
        state = record["domain_state"]
        if progress.get("finished") or not progress.get("id"):
            return None
        asked = progress.get("concurrency")
        valid = isinstance(asked, int) and 1 <= asked <= moves.MAX_CONCURRENCY
        concurrency = asked if valid else self._concurrency
        if state == DomainState.FLUSH and progress.get("action") == "flush":
            return "flush", progress["id"], concurrency
        if state == DomainState.UNFLUSH and progress.get("action") == "ready":
            return "ready", progress["id"], concurrency
        return None

    def _check_current(self, request_id: str) -> None:
        """At a VM boundary: raise Superseded if another request took over."""
        if self._stop.is_set():
            raise Superseded
        data, _ = self._records.zk.get(layout.node_path(self._name))
        if layout.decode(data, layout.NODE_FIELDS)["domain_progress"].get("id") != request_id:
            raise Superseded

    def _execute(self, action: str, request_id: str, concurrency: int) -> None:
        log.info("%s of node %s begins (request %s, %d at a time)", action, self._name,
                 request_id[:8], concurrency)
        began = time.monotonic()
        if action == "flush":
            self._run_batch(request_id, concurrency,
                            lambda: self._client.list_vms(node=self._name), self._flush_one)
            goal = DomainState.FLUSHED
        else:
            self._run_batch(request_id, concurrency, lambda: [
                v for v in self._client.list_vms()
                if v.previous_node == self._name
                or (v.node == self._name and v.resume_on_ready == self._name)],
                self._ready_one)
            goal = DomainState.READY

        def finish(record: dict[str, Any]) -> bool:
            if record["domain_progress"].get("id") != request_id:
                return False
            record["domain_state"] = goal.value
            record["domain_progress"] = {**record["domain_progress"], "finished": True,
                                         "seconds": round(time.monotonic() - began, 3)}
            return True

        if self._records.update_node(finish):
            log.info("%s of node %s finished: %s", action, self._name, goal.value)

    def _run_batch(self, request_id: str, concurrency: int, todo: Any, handle: Any) -> None:
        """Handle each VM `todo()` lists, `concurrency` at a time, checking for a newer
        request before starting each one; in-flight VMs finish before this returns."""
        handled: set[str] = set()
        running: dict[Future[dict[str, Any]], str] = {}
        waiting: list[VM] = []
        with ThreadPoolExecutor(concurrency, thread_name_prefix="flush") as pool:
            try:
                while True:
                    if not waiting:  # list again only when the queue runs dry
                        waiting = [v for v in todo() if v.uuid not in handled]
                    if not waiting and not running:
                        return
                    while waiting and len(running) < concurrency:
                        vm = waiting.pop(0)
                        self._check_current(request_id)
                        handled.add(vm.uuid)
                        running[pool.submit(handle, vm)] = vm.name
                    done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                    for future in done:
                        running.pop(future)
                        self._report(request_id, future.result())
            finally:
                for future in wait(list(running)).done:
                    self._report(request_id, future.result())

    def _flush_one(self, vm: VM) -> dict[str, Any]:
        if vm.migration is not None:  # a move already under way (e.g. before a crash)
            arriving = vm.migration.target == self._name
            item = self._follow(vm, "migrate")
            if not arriving or not item["result"].startswith("ok"):
                return item
            vm = self._client.get_vm(vm.uuid)  # it came here meanwhile: it must go too
        with self._plan_lock:
            try:
                moved = moves.request_move(self._client, vm.uuid, "migrate",
                                           selector=self._selector, force=True,
                                           requester="flush", planned=self._planned)
            except PvcError as exc:
                if not str(exc).startswith("no valid target"):
                    return {"vm": vm.name, "target": "", "result": f"failed: {exc}"}
                return self._park(vm, str(exc))
            target = moved.node
            plan = self._planned.setdefault(target, Planned())
            plan.add(vm)
        try:
            return self._follow(moved, "migrate")
        finally:
            with self._plan_lock:
                plan.add(vm, -1)

    def _park(self, vm: VM, why: str) -> dict[str, Any]:
        """No valid target: shut the VM down and remember to start it on ready."""
        if vm.state not in (VMState.START, VMState.RESTART):
            return {"vm": vm.name, "target": "", "result": f"stays ({vm.state}): {why}"}

        def mutate(record: dict[str, Any]) -> None:
            record["state"] = VMState.SHUTDOWN.value
            record["resume_on_ready"] = self._name

        self._client.update_vm(vm.uuid, mutate)
        try:
            self._client.wait_vm_state(vm, VMState.SHUTDOWN, MOVE_TIMEOUT)
        except PvcError as exc:
            return {"vm": vm.name, "target": "", "result": f"failed: {exc}"}
        return {"vm": vm.name, "target": "", "result": f"shut down: {why}"}

    def _ready_one(self, vm: VM) -> dict[str, Any]:
        if vm.node == self._name and vm.resume_on_ready == self._name:
            def mutate(record: dict[str, Any]) -> None:
                record["state"] = VMState.START.value
                record["resume_on_ready"] = ""
                record["failed_reason"] = ""

            try:
                self._client.update_vm(vm.uuid, mutate)
                self._client.wait_vm_state(vm, VMState.START, MOVE_TIMEOUT)
            except PvcError as exc:
                return {"vm": vm.name, "target": self._name, "result": f"failed: {exc}"}
            return {"vm": vm.name, "target": self._name, "result": "started"}
        if vm.migration is not None:
            return self._follow(vm, "unmigrate")
        try:
            moved = moves.request_move(self._client, vm.uuid, "unmigrate", requester="ready")
        except PvcError as exc:
            return {"vm": vm.name, "target": self._name, "result": f"failed: {exc}"}
        return self._follow(moved, "unmigrate")

    def _follow(self, vm: VM, what: str) -> dict[str, Any]:
        target = vm.migration.target if vm.migration else vm.node
        try:
            done = moves.wait_move(self._client, vm, MOVE_TIMEOUT)
        except PvcError as exc:
            return {"vm": vm.name, "target": target, "result": f"failed: {exc}"}
        used = done.last_migration.used if done.last_migration else ""
        return {"vm": vm.name, "target": target, "result": f"ok ({used or what})"}

    def _report(self, request_id: str, item: dict[str, Any]) -> None:
        log.info("VM %s -> %s: %s", item["vm"], item["target"] or "-", item["result"])

        def mutate(record: dict[str, Any]) -> bool:
            progress = record["domain_progress"]
            if progress.get("id") != request_id:
                return False
            progress["items"] = [*progress.get("items", []), item]
            return True

        self._records.update_node(mutate)
