"""Dead nodes: declared after keepalive x fence_intervals, fenced, their VMs recovered.

Real agents on libvirt's test driver: SIGKILL takes the agent and its (in-process)
hypervisor with it, as a node that loses power would.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from pvc_tui.cluster import ClusterClient, layout
from pvc_tui.cluster.connection import cluster_id, wait_on_znode
from pvc_tui.cluster.domain_xml import mark_managed
from pvc_tui.cluster.layout import VMState
from tests.conftest import AgentFactory, AgentProcess, vm_xml
from tests.test_cli import pvc


def fence_state(client: ClusterClient, node: str, states: tuple[str, ...],
                timeout: float = 40) -> dict[str, Any]:
    """Wait until `node`'s fence record is in one of `states`; the record."""
    def check(data: bytes | None, stat: Any) -> dict[str, Any] | None:
        fence = layout.decode(data, layout.NODE_FIELDS)["fence"] if data else {}
        return fence if fence.get("state") in states else None

    return wait_on_znode(client.zk, layout.node_path(node), check, timeout,
                         lambda: f"{node} never reached fence state {states}")


def running_on(client: ClusterClient, name: str, node: str, timeout: float = 30) -> None:
    def check(data: bytes | None, stat: Any) -> bool | None:
        record = layout.decode(data, layout.VM_FIELDS) if data else None
        if record and record["node"] == node and \
                record["runtime"].get("power_state") == "running" and \
                record["runtime"].get("node") == node:
            return True
        return None

    wait_on_znode(client.zk, layout.vm_path(client.get_vm(name).uuid), check, timeout,
                  lambda: f"{name} never ran on {node}")


def kill(agent: AgentProcess) -> None:
    os.kill(agent.ref.pid, signal.SIGKILL)
    agent.proc.wait(timeout=10)


def two_nodes(client: ClusterClient, start_agent: AgentFactory, *extra: str
              ) -> dict[str, AgentProcess]:
    agents = {n: start_agent(n, "--fence-intervals", "2", *extra) for n in ("hv1", "hv2")}
    client.define_vm(vm_xml("web1"), "hv1", start=True)
    running_on(client, "web1", "hv1")
    return agents


def test_fence_then_recover_and_the_node_never_runs_it_again(
        client: ClusterClient, start_agent: AgentFactory, tmp_path: Path) -> None:
    marker = tmp_path / "fenced"
    argv = [sys.executable, "-c",
            "import os, pathlib, sys; pathlib.Path(sys.argv[1]).write_text("
            "sys.argv[2] + '|' + os.environ.get('PVC_ZK_AUTH', ''))",
            str(marker), "{node}"]
    fence = ["--recovery", "fence", *(f"--fence-command={arg}" for arg in argv)]
    agents = two_nodes(client, start_agent, *fence)
    kill(agents["hv1"])
    record = fence_state(client, "hv1", ("recovered", "failed"))
    assert record["state"] == "recovered", record
    assert os.environ.get("PVC_ZK_AUTH")  # the agents had credentials in the environment
    assert record["by"] == "hv2" and marker.read_text() == "hv1|"  # the command did not
    running_on(client, "web1", "hv2")
    vm = client.get_vm("web1")
    assert (vm.node, vm.previous_node, vm.state) == ("hv2", "hv1", VMState.START)
    assert client.get_node("hv1").daemon_state == "dead"

    # The node comes back, and (as if its fencing had not really powered it off) its
    # hypervisor still runs web1: the agent ends that copy; web1 runs only on hv2.
    stray = mark_managed(client.get_vm_xml("web1"), cluster_id(client.zk))
    back = start_agent("hv1", "--fence-intervals", "2", *fence, running=(stray,))
    assert back.ref.pid != agents["hv1"].ref.pid
    deadline = time.monotonic() + 20
    while client.get_node("hv1").running_vms != ():
        assert time.monotonic() < deadline, client.get_node("hv1")
        time.sleep(0.1)
    assert "web1 belongs to hv2 but runs here: powering off" in back.log_text()
    assert client.get_node("hv1").daemon_state == "run"
    assert client.get_vm("web1").node == "hv2"
    assert client.get_node("hv2").running_vms == ("web1",)


def test_failed_fence_moves_nothing(client: ClusterClient, start_agent: AgentFactory) -> None:
    agents = two_nodes(client, start_agent, "--recovery", "fence", "--fence-command",
                       "false")
    kill(agents["hv1"])
    record = fence_state(client, "hv1", ("failed", "recovered"))
    assert record["state"] == "failed" and "fence command exited 1" in record["reason"]
    assert client.get_vm("web1").node == "hv1"  # nothing moved: hv1 may still run it


def test_policy_none_waits_for_the_operator(client: ClusterClient, start_agent: AgentFactory,
                                            zk_hosts: str) -> None:
    agents = two_nodes(client, start_agent)
    kill(agents["hv1"])
    fence_state(client, "hv1", ("declared",))
    assert client.get_vm("web1").node == "hv1"
    refused = pvc("node", "recover", "hv1", zk=zk_hosts)
    assert refused.returncode == 2 and "add --yes" in refused.stderr
    alive = pvc("node", "recover", "hv2", "--yes", zk=zk_hosts)
    assert alive.returncode == 1 and "is alive" in alive.stderr
    done = pvc("node", "recover", "hv1", "--yes", zk=zk_hosts)
    assert done.returncode == 0, done.stderr
    assert "web1: to hv2" in done.stdout
    running_on(client, "web1", "hv2")
    assert client.get_vm("web1").previous_node == "hv1"
    assert fence_state(client, "hv1", ("recovered",))["vms"] == ["web1: to hv2"]


def test_a_node_back_before_anyone_acted_runs_its_vms(
        client: ClusterClient, start_agent: AgentFactory) -> None:
    agents = two_nodes(client, start_agent)
    kill(agents["hv1"])
    fence_state(client, "hv1", ("declared",))
    start_agent("hv1", "--fence-intervals", "2")
    assert fence_state(client, "hv1", ("returned",))["state"] == "returned"
    running_on(client, "web1", "hv1")


async def test_dashboard_recovers_a_dead_node_by_keys(
        client: ClusterClient, start_agent: AgentFactory, zk_hosts: str) -> None:
    from pvc_tui.tui.app import Dashboard
    from pvc_tui.tui.dialogs import TypeNameScreen
    from tests.dashboard_helpers import row_text, until

    agents = two_nodes(client, start_agent)
    kill(agents["hv1"])
    fence_state(client, "hv1", ("declared",))
    app = Dashboard(zk_hosts)
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, lambda: len(app.node_table.items) == 2, what="nodes")
        await pilot.press("1")
        app.node_table.move_to("hv1")
        assert row_text(app, "nodes", "hv1")[1] == "dead"
        await pilot.press("R")
        await until(pilot, lambda: isinstance(app.screen, TypeNameScreen), what="confirm")
        await pilot.press("tab", *"hv1", "enter")
        vm = client.get_vm("web1")
        await until(pilot, lambda: row_text(app, "vms", vm.uuid)[3] == "hv2", timeout=30,
                    what="web1 shown on hv2")
    running_on(client, "web1", "hv2")
    assert app.crashes == []


def test_moves_under_way_when_a_node_dies(client: ClusterClient,
                                          start_agent: AgentFactory) -> None:
    """hv1 freezes, then dies, with one VM moving off it (web1) and one moving onto it
    (db1, from hv2): after the fence both run on hv2, once; none is left waiting for a
    node that is gone."""
    agents = two_nodes(client, start_agent, "--recovery", "fence", "--fence-command",
                       "/bin/true")
    client.define_vm(vm_xml("db1"), "hv2", start=True)
    running_on(client, "db1", "hv2")
    os.kill(agents["hv1"].ref.pid, signal.SIGSTOP)  # mid-operation: it acts on nothing
    client.migrate_vm("web1", target="hv2")
    client.migrate_vm("db1", target="hv1")
    assert client.get_vm("web1").migration is not None
    kill(agents["hv1"])
    record = fence_state(client, "hv1", ("recovered", "failed"))
    assert record["state"] == "recovered", record
    running_on(client, "web1", "hv2")
    running_on(client, "db1", "hv2")
    web1, db1 = client.get_vm("web1"), client.get_vm("db1")
    assert web1.migration is None and db1.migration is None
    assert web1.previous_node == "hv1"
    assert db1.previous_node == ""  # as if its move had been withdrawn: nothing to undo
    assert sorted(client.get_node("hv2").running_vms) == ["db1", "web1"]


def test_a_fenced_node_back_before_its_recovery_finishes_it(
        client: ClusterClient, start_agent: AgentFactory) -> None:
    """The fencer died between `fenced` and moving the VMs: the node, powered back on,
    does not run them; it moves them on itself."""
    from pvc_tui.cluster.recovery import set_fence

    agents = two_nodes(client, start_agent)
    kill(agents["hv1"])
    fence_state(client, "hv1", ("declared",))
    assert set_fence(client, "hv1", only_from=("declared",), state="fenced", by="gone")
    start_agent("hv1", "--fence-intervals", "2")
    assert fence_state(client, "hv1", ("recovered",))["vms"] == ["web1: to hv2"]
    running_on(client, "web1", "hv2")
    assert client.get_node("hv1").running_vms == ()
