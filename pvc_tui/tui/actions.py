"""The dashboard's mutating actions: confirm, run in a worker, report the outcome.

Each action asks first (Cancel focused), runs the library call in a thread worker so
the screen never freezes, and reports what happened (the reason on failure). In
`--readonly` none of them exists; while ZooKeeper is unreachable they are disabled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from pvc_tui.cluster.errors import PvcError
from pvc_tui.cluster.models import VM, Node
from pvc_tui.cluster.placement import DEFAULT_SELECTOR, rank
from pvc_tui.cluster.text import printable
from pvc_tui.tui.dialogs import ConfirmScreen, TargetChoice, TargetPicker, TypeNameScreen
from pvc_tui.tui.messages import ActionFinished
from pvc_tui.tui.progress import DomainProgressScreen

if TYPE_CHECKING:
    from pvc_tui.cluster import ClusterClient
    from pvc_tui.tui.app import Dashboard

Call = Callable[["ClusterClient"], str]


@dataclass(frozen=True)
class ActionSpec:
    """A mutating action: its key, its name in the palette, and what it applies to."""

    name: str
    key: str
    title: str
    target: str  # "vm" or "node"


VM_ACTIONS = (
    ActionSpec("migrate", "m", "Migrate", "vm"),
    ActionSpec("force_migrate", "M", "Force-migrate", "vm"),
    ActionSpec("unmigrate", "u", "Unmigrate", "vm"),
    ActionSpec("move", "o", "Move", "vm"),
    ActionSpec("start", "s", "Start", "vm"),
    ActionSpec("shutdown", "d", "Shut down", "vm"),
    ActionSpec("stop", "x", "Stop (power off)", "vm"),
    ActionSpec("restart", "r", "Restart", "vm"),
)
NODE_ACTIONS = (
    ActionSpec("flush", "f", "Flush node", "node"),
    ActionSpec("ready", "y", "Ready node", "node"),
    ActionSpec("recover", "R", "Recover dead node", "node"),
)
MUTATING = frozenset(a.name for a in VM_ACTIONS + NODE_ACTIONS)


def vm_names(vms: list[VM]) -> str:
    """`web1` or `3 VMs (web1, web2, db1)`, printable."""
    names = [printable(v.name, 40) for v in vms]
    if len(names) == 1:
        return names[0]
    return f"{len(names)} VMs ({', '.join(names[:5])}{', …' if len(names) > 5 else ''})"


def target_choices(vm: VM, nodes: list[Node], selector: str = DEFAULT_SELECTOR
                   ) -> list[TargetChoice]:
    """The picker's lines: valid targets best first, then every other node and why not."""
    choice = rank(nodes, vm, selector)
    lines = [TargetChoice(n.name, f"{n.mem_total_mib - n.mem_allocated_mib} MiB free, "
                                  f"load {n.load:.2f}, {n.vm_count} VMs",
                          best=(i == 0))
             for i, n in enumerate(choice.ranked)]
    lines += [TargetChoice(name, "", rejected=why) for name, why in sorted(choice.rejected.items())]
    return lines


def _recover_call(node: str) -> Call:
    def call(client: ClusterClient) -> str:
        from pvc_tui.cluster.recovery import recover_node

        moved = recover_node(client, node)
        return f"node {node}: " + (", ".join(f"{vm} {where}" for vm, where in moved)
                                   or "no VMs to recover")

    return call


def _moved(vm: VM) -> str:
    m = vm.last_migration
    how = f" ({m.used}, {m.seconds:.1f} s)" if m and m.used else ""
    return f"{vm.name} is on {vm.node}{how}"


class DashboardActions:
    """The dashboard's mutating actions (one instance per app)."""

    def __init__(self, app: Dashboard) -> None:
        self.app = app

    def vm_action(self, name: str) -> None:
        """Run VM action `name` on the marked VMs, or the one under the cursor."""
        if not self.app.allows(name):
            return
        vms = self.app.vm_table.selection()
        if not vms:
            self.app.notify("no VM selected", severity="warning")
            return
        if name in ("migrate", "force_migrate", "move") and len(vms) == 1:
            self._pick_target(vms[0], name)
            return
        if name == "move":
            self.app.notify("move needs one VM: unmark the others", severity="warning")
            return
        calls: list[tuple[str, Call]] = []
        for vm in vms:
            calls.append((vm.name, self._vm_call(vm, name)))
        verb = {"migrate": "Migrate (each to the selector's choice)",
                "force_migrate": "Force-migrate (each to the selector's choice)",
                "unmigrate": "Unmigrate", "start": "Start", "shutdown": "Shut down",
                "stop": "Power off", "restart": "Restart"}[name]
        detail = ("Power off is immediate: the guest gets no chance to shut down."
                  if name == "stop" else "")
        self._confirm(f"{verb} {vm_names(vms)}?", detail, verb.split(" (")[0], calls)

    def _vm_call(self, vm: VM, name: str, target: str | None = None) -> Call:
        timeout = 600.0
        if name in ("migrate", "force_migrate"):
            force = name == "force_migrate"
            return lambda c: _moved(c.migrate_vm(vm.uuid, target=target, force=force,
                                                 wait=True, timeout=timeout))
        if name == "unmigrate":
            return lambda c: _moved(c.unmigrate_vm(vm.uuid, wait=True, timeout=timeout))
        if name == "move":
            assert target is not None
            return lambda c: _moved(c.move_vm(vm.uuid, target, wait=True, timeout=timeout))
        method = {"start": "start_vm", "shutdown": "shutdown_vm", "stop": "stop_vm",
                  "restart": "restart_vm"}[name]

        def call(c: ClusterClient) -> str:
            done = getattr(c, method)(vm.uuid, wait=True, timeout=timeout)
            return f"{done.name} is {done.state} ({done.power_state})"

        return call

    def _pick_target(self, vm: VM, name: str) -> None:
        nodes = list(self.app.node_table.items.values())
        verb = {"migrate": "Migrate", "force_migrate": "Force-migrate", "move": "Move"}[name]
        choices = target_choices(vm, nodes)
        if name == "move":  # moving onto its own node makes the placement permanent
            choices = [c for c in choices if c.node != vm.node]
            choices.append(TargetChoice(vm.node, "its current node: make the placement "
                                                 "permanent (clears the previous node)"))

        def picked(target: str | None) -> None:
            if target:
                self._confirm(f"{verb} {printable(vm.name, 40)} from {vm.node} to {target}?",
                              "", verb, [(vm.name, self._vm_call(vm, name, target))])

        self.app.push_screen(TargetPicker(f"{verb} {printable(vm.name, 40)} (now on {vm.node}) to:",
                                      choices), picked)

    def node_action(self, name: str) -> None:
        """Flush (typed confirmation, then the progress view) or ready the node."""
        if not self.app.allows(name):
            return
        node = self.app.node_table.current
        if node is None:
            self.app.notify("no node selected", severity="warning")
            return
        count = sum(1 for v in self.app.vm_table.items.values() if v.node == node.name)
        if name == "recover":
            if node.alive:
                self.app.notify(f"node {printable(node.name)} is alive: flush it instead",
                                severity="warning", markup=False)
                return
            detail = (f"Its {count} VMs start on other nodes (their previous node: "
                      f"{node.name}). Make sure the node is really off first, or they "
                      "run twice.")
            self.app.push_screen(
                TypeNameScreen(f"Recover dead node {node.name}?", detail, node.name,
                               "Recover"),
                lambda ok: self.run_calls([(node.name, _recover_call(node.name))]) if ok
                else None)
            return
        if name == "flush":
            detail = (f"Every VM on {node.name} ({count}) moves to another node; VMs "
                      "with no valid target are shut down and restarted on ready.")
            self.app.push_screen(TypeNameScreen(f"Flush node {node.name}?", detail, node.name,
                                            "Flush"),
                             lambda ok: self._start_domain(node.name, "flush") if ok else None)
            return
        self.app.push_screen(
            ConfirmScreen(f"Make node {node.name} ready?",
                          "Its VMs that were moved away come back.", "Ready"),
            lambda ok: self._start_domain(node.name, "ready") if ok else None)

    def _start_domain(self, node: str, action: str) -> None:
        if self.app.client is not None:
            self.app.push_screen(DomainProgressScreen(self.app.client, node, action))

    def _confirm(self, title: str, detail: str, label: str,
                 calls: list[tuple[str, Call]]) -> None:
        def answered(ok: bool | None) -> None:
            if ok:
                self.app.notify(f"{title.rstrip('?')}: requested", markup=False)
                self.run_calls(calls)

        self.app.push_screen(ConfirmScreen(title, detail, label), answered)

    def run_calls(self, calls: list[tuple[str, Call]]) -> None:
        """Run the calls one after another in a thread worker; report the outcome."""
        self.app.run_worker(partial(self._calls_worker, calls), thread=True,
                            exit_on_error=False, group="actions")

    def _calls_worker(self, calls: list[tuple[str, Call]]) -> None:
        client = self.app.client
        failures: list[str] = []
        done: list[str] = []
        for label, call in calls:
            if client is None:
                failures.append(f"{label}: not connected")
                continue
            try:
                done.append(call(client))
            except PvcError as exc:
                failures.append(f"{label}: {exc}")
        if len(calls) == 1:
            text = done[0] if done else failures[0]
        else:
            text = f"{len(done)} of {len(calls)} done" + (
                "; " + "; ".join(failures) if failures else "")
        self.app.post_message(ActionFinished(text, not failures))
