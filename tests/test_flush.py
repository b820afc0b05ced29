"""Node flush and ready with real agents on the test driver: no locks, preemptible,
resumable after a crash."""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from typing import Any

from pvc_tui.cluster import ClusterClient, OperationFailed, moves
from tests.conftest import AgentFactory, vm_xml
from tests.test_cli import pvc


def define_running(client: ClusterClient, node: str, count: int, prefix: str = "vm") -> None:
    for i in range(count):
        client.define_vm(vm_xml(f"{prefix}{i:02d}", memory_mib=256), node, start=True)
    for i in range(count):
        client.start_vm(f"{prefix}{i:02d}", wait=True, timeout=30)


def assert_each_runs_once(client: ClusterClient) -> None:
    """Every VM meant to run runs on exactly its assigned node, and nowhere else."""
    runs = Counter(name for n in client.list_nodes() for name in n.running_vms)
    for vm in client.list_vms():
        expected = 1 if vm.state == "start" else 0
        assert runs[vm.name] == expected, (vm.name, runs[vm.name])
        if expected:
            assert vm.name in client.get_node(vm.node).running_vms


def test_flush_spreads_keeps_previous_node_and_ready_brings_back(
        client: ClusterClient, start_agent: AgentFactory) -> None:
    for name in ("hv1", "hv2", "hv3"):
        start_agent(name)
    define_running(client, "hv1", 9)
    define_running(client, "hv2", 1, prefix="away")  # lives on hv2, visiting hv1:
    client.migrate_vm("away00", target="hv1", wait=True, timeout=20)
    assert client.get_vm("away00").previous_node == "hv2"
    client.migrate_vm("vm01", target="hv3", wait=True, timeout=20)
    client.move_vm("vm01", "hv1", wait=True, timeout=20)
    client.define_vm(vm_xml("cold"), "hv1")

    seen: list[dict[str, Any]] = []
    progress = client.flush_node("hv1", wait=True, timeout=120, on_item=seen.append)
    assert client.get_node("hv1").domain_state == "flushed"
    assert sorted(i["vm"] for i in progress["items"]) == sorted(
        [f"vm{i:02d}" for i in range(9)] + ["away00", "cold"])
    assert seen == progress["items"]
    assert all(i["result"].startswith("ok") for i in seen)
    assert not client.list_vms(node="hv1")
    placed = Counter(v.node for v in client.list_vms())
    assert abs(placed["hv2"] - placed["hv3"]) <= 1  # planned, not all to one "emptiest"
    away = client.get_vm("away00")  # force semantics: the flush keeps its original home
    assert away.previous_node == ("" if away.node == "hv2" else "hv2")
    assert client.get_vm("vm00").previous_node == "hv1"
    assert client.get_vm("cold").state == "stop"  # moved, not started
    assert_each_runs_once(client)

    progress = client.ready_node("hv1", wait=True, timeout=120)
    assert client.get_node("hv1").domain_state == "ready"
    back = {v.name for v in client.list_vms(node="hv1")}
    assert back == {f"vm{i:02d}" for i in range(9)} | {"cold"}
    assert all(v.previous_node in ("", "hv2") for v in client.list_vms())
    assert_each_runs_once(client)


def test_vm_without_target_is_shut_down_and_restarted_on_ready(
        client: ClusterClient, start_agent: AgentFactory) -> None:
    start_agent("hv1")
    start_agent("hv2")
    define_running(client, "hv1", 2)
    client.define_vm(vm_xml("off"), "hv1")
    client.flush_node("hv2", wait=True, timeout=30)  # no valid target left for hv1's VMs

    run = pvc("node", "flush", "hv1", "--wait", "--timeout", "60", zk=client.hosts)
    assert run.returncode == 1, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "node hv1: flush"
    assert sum("shut down: no valid target" in line for line in lines) == 2
    assert any("off -> -: stays (stop)" in line for line in lines)
    assert lines[-1].startswith("node hv1 is flushed (3 VMs,") and "2 did not" in lines[-1]
    assert client.get_vm("off").node == "hv1"  # stopped, and nowhere to go: it stays
    for name in ("vm00", "vm01"):
        vm = client.get_vm(name)
        assert (vm.state, vm.power_state, vm.resume_on_ready) == ("shutdown", "shutoff", "hv1")

    run = pvc("node", "ready", "hv1", "--wait", zk=client.hosts)
    assert run.returncode == 0, run.stderr
    assert "vm00 -> hv1: started" in run.stdout
    for name in ("vm00", "vm01"):
        vm = client.get_vm(name)
        assert (vm.state, vm.power_state, vm.resume_on_ready) == ("start", "running", "")
    assert client.get_vm("off").state == "stop"


def test_ready_supersedes_a_running_flush(client: ClusterClient,
                                          start_agent: AgentFactory) -> None:
    start_agent("hv1", "--flush-concurrency", "1")
    start_agent("hv2")
    define_running(client, "hv1", 20)
    three_moved = threading.Event()
    items: list[dict[str, Any]] = []
    outcome: list[BaseException | dict[str, Any]] = []

    def on_item(item: dict[str, Any]) -> None:
        items.append(item)
        if len(items) >= 3:
            three_moved.set()

    def flush() -> None:
        try:
            outcome.append(client.flush_node("hv1", wait=True, timeout=60, on_item=on_item))
        except BaseException as exc:
            outcome.append(exc)

    flusher = threading.Thread(target=flush)
    flusher.start()
    assert three_moved.wait(30)
    client.ready_node("hv1", wait=True, timeout=60)
    flusher.join(30)
    assert isinstance(outcome[0], OperationFailed)
    assert "superseded by a newer ready" in str(outcome[0])
    assert len(items) < 20  # stopped at a VM boundary, not run to the end
    assert client.get_node("hv1").domain_state == "ready"
    assert {v.node for v in client.list_vms()} == {"hv1"}  # the moved ones came back
    assert all(not v.previous_node for v in client.list_vms())
    assert_each_runs_once(client)


def test_flush_resumes_after_the_agent_is_killed(client: ClusterClient,
                                                 start_agent: AgentFactory) -> None:
    hv1 = start_agent("hv1", "--flush-concurrency", "1")
    start_agent("hv2")
    start_agent("hv3")
    define_running(client, "hv1", 15)
    some_moved = threading.Event()
    items: list[dict[str, Any]] = []

    def on_item(item: dict[str, Any]) -> None:
        items.append(item)
        if len(items) >= 4:
            some_moved.set()

    request = client.flush_node("hv1")
    waiter = threading.Thread(target=lambda: _swallow(
        moves.wait_domain_state, client, "hv1", "flush", request["id"], 60, on_item))
    waiter.start()
    assert some_moved.wait(30)
    os.kill(hv1.ref.pid, signal.SIGKILL)
    hv1.proc.wait(timeout=5)
    start_agent("hv1", "--flush-concurrency", "1")  # a new agent finds the request
    waiter.join(60)
    progress = moves.wait_domain_state(client, "hv1", "flush", request["id"], 60)
    assert client.get_node("hv1").domain_state == "flushed"
    assert not client.list_vms(node="hv1")
    assert {i["vm"] for i in progress["items"]} == {f"vm{i:02d}" for i in range(15)}
    assert_each_runs_once(client)
    # and the node is not stuck: a new request changes it
    client.ready_node("hv1", wait=True, timeout=60)
    assert len(client.list_vms(node="hv1")) == 15


def _swallow(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except Exception:  # the test reads the outcome itself afterwards
        return
