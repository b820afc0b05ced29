"""Real node agents (processes on libvirt's test driver) against a real ZooKeeper."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from pvc_tui.cluster import ClusterClient, OperationFailed, layout
from pvc_tui.cluster.connection import wait_on_znode
from pvc_tui.sandbox.processes import wait_exit
from tests.conftest import AgentFactory, vm_xml, wait_agent_running


def test_agent_registers_node_with_resources(client: ClusterClient,
                                             start_agent: AgentFactory) -> None:
    start_agent("hv1")
    node = client.get_node("hv1")
    assert (node.daemon_state, node.domain_state, node.alive) == ("run", "ready", True)
    assert node.cpu_count == 8 and node.mem_total_mib == 16 * 1024
    assert node.libvirt_uri.startswith("test://") and node.agent_version


def test_lifecycle_start_stop_shutdown_restart(client: ClusterClient,
                                               start_agent: AgentFactory) -> None:
    start_agent("hv1")
    client.define_vm(vm_xml("web1", memory_mib=512, vcpus=2), "hv1", start=True)
    vm = client.start_vm("web1", wait=True, timeout=20)
    assert (vm.power_state, vm.runtime.node, vm.runtime.vcpus) == ("running", "hv1", 2)
    node = client.get_node("hv1")
    assert node.running_vms == ("web1",) and node.mem_allocated_mib == 512
    assert client.stop_vm("web1", wait=True, timeout=20).power_state == "shutoff"
    client.start_vm("web1", wait=True, timeout=20)
    assert client.shutdown_vm("web1", wait=True, timeout=20).power_state == "shutoff"
    client.start_vm("web1", wait=True, timeout=20)
    vm = client.restart_vm("web1", wait=True, timeout=20)
    assert (vm.state, vm.power_state) == ("start", "running")


def test_libvirt_failure_sets_fail_with_its_reason(client: ClusterClient,
                                                   start_agent: AgentFactory) -> None:
    start_agent("hv1")
    bad = "<domain type='test'><name>broken</name><memory>1024</memory></domain>"
    client.define_vm(bad, "hv1", start=True)
    with pytest.raises(OperationFailed, match="os <type> must be specified"):
        client.start_vm("broken", wait=True, timeout=20)
    vm = client.get_vm("broken")
    assert vm.state == "fail" and "os <type>" in vm.failed_reason
    # the agent carries on with other VMs
    client.define_vm(vm_xml("ok1"), "hv1", start=True)
    assert client.start_vm("ok1", wait=True, timeout=20).power_state == "running"


def test_undefine_removes_the_domain(client: ClusterClient, start_agent: AgentFactory) -> None:
    start_agent("hv1")
    vm = client.define_vm(vm_xml("web1"), "hv1", start=True)
    client.start_vm("web1", wait=True, timeout=20)
    assert vm.uuid in client.get_node("hv1").domains
    client.undefine_vm("web1", wait=True, timeout=20, force=True)
    assert vm.uuid not in client.get_node("hv1").domains
    assert client.get_node("hv1").running_vms == ()


def test_vms_on_other_nodes_are_left_alone(client: ClusterClient,
                                           start_agent: AgentFactory) -> None:
    start_agent("hv1")
    start_agent("hv2")
    client.define_vm(vm_xml("a"), "hv1", start=True)
    client.define_vm(vm_xml("b"), "hv2", start=True)
    client.start_vm("a", wait=True, timeout=20)
    client.start_vm("b", wait=True, timeout=20)
    a, b = client.get_vm("a"), client.get_vm("b")
    assert client.get_node("hv1").domains == (a.uuid,)  # libvirt's view, not the records'
    assert client.get_node("hv2").domains == (b.uuid,)
    assert client.get_node("hv1").running_vms == ("a",)
    assert client.get_node("hv2").running_vms == ("b",)


def test_sigkilled_agent_dies_then_restores_desired_state(
        client: ClusterClient, start_agent: AgentFactory) -> None:
    agent = start_agent("hv1")
    client.define_vm(vm_xml("up1"), "hv1", start=True)
    client.define_vm(vm_xml("down1"), "hv1")
    client.start_vm("up1", wait=True, timeout=20)
    os.kill(agent.ref.pid, signal.SIGKILL)
    agent.proc.wait(timeout=5)
    killed_at = time.time()
    # its session ends: the liveness znode goes and the node reads as dead
    wait_on_znode(client.zk, layout.node_alive_path("hv1"),
                  lambda d, s: True if s is None else None, 15, lambda: "alive znode stayed")
    assert client.get_node("hv1").daemon_state == "dead"
    # a new agent (with a fresh test hypervisor) makes libvirt match the records again
    start_agent("hv1")
    assert client.get_vm("up1").state == "start"
    vm = client.start_vm("up1", wait=True, timeout=20)
    assert vm.runtime.updated_at > killed_at  # reported by the new agent
    assert client.get_vm("down1").state == "stop"
    assert client.stop_vm("down1", wait=True, timeout=20).power_state == "shutoff"
    assert client.get_node("hv1").running_vms == ("up1",)


def test_sigterm_marks_node_stopped(client: ClusterClient, start_agent: AgentFactory) -> None:
    agent = start_agent("hv1")
    os.kill(agent.ref.pid, signal.SIGTERM)
    assert agent.proc.wait(timeout=10) == 0
    assert wait_exit(agent.ref, 1)
    node = client.get_node("hv1")
    assert (node.daemon_state, node.alive) == ("stop", False)
    start_agent("hv1")  # and it comes back cleanly
    assert client.get_node("hv1").daemon_state == "run"


def test_agent_waits_for_zookeeper_then_registers(start_agent: AgentFactory,
                                                  tmp_path: Path) -> None:
    from pvc_tui.sandbox.zookeeper import free_port, start_zookeeper, stop_zookeeper

    port = free_port()
    agent = start_agent("hv1", "--zk", f"127.0.0.1:{port}", wait=False)
    assert agent.proc.poll() is None
    time.sleep(2)  # nothing to wait on: ZooKeeper is not there yet
    assert agent.proc.poll() is None  # still running, still trying
    server = start_zookeeper(tmp_path / "late-zk", port=port, fast_unsafe=True)
    try:
        with ClusterClient.connect(server.address) as late:
            wait_agent_running(late, agent)
            assert late.get_node("hv1").alive
    finally:
        stop_zookeeper(server)


def test_second_agent_for_the_same_node_is_refused(client: ClusterClient,
                                                   start_agent: AgentFactory) -> None:
    first = start_agent("hv1")
    second = start_agent("hv1", wait=False)
    assert second.proc.wait(timeout=20) == 1
    assert "already served by pid" in second.log_text()
    assert first.proc.poll() is None
    assert layout.parse_alive(client.zk.get(layout.node_alive_path("hv1"))[0])[1] == first.ref.pid


def test_define_undefine_churn_never_kills_the_agent(client: ClusterClient,
                                                     start_agent: AgentFactory) -> None:
    agent = start_agent("hv1")
    for i in range(10):
        client.define_vm(vm_xml(f"churn{i}"), "hv1", start=True)
        client.undefine_vm(f"churn{i}", force=True)
    client.define_vm(vm_xml("after"), "hv1", start=True)
    assert client.start_vm("after", wait=True, timeout=20).power_state == "running"
    assert agent.proc.poll() is None
    assert "Traceback" not in agent.log_text()


def test_bad_agent_config_is_one_line_exit_2(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    cfg = tmp_path / "agent.toml"
    cfg.write_text('name = "hv1"\nkeepalive_interval = "soon"\n')
    for argv, message in (([], "node name is required"),
                          (["--config", str(cfg)], "keepalive_interval must be a float"),
                          (["--name", "a/b"], "invalid node name")):
        run = subprocess.run([sys.executable, "-m", "node_agent", *argv], capture_output=True,
                             text=True, timeout=30)
        assert run.returncode == 2
        assert run.stderr.count("\n") == 1 and message in run.stderr
