"""Migrate, unmigrate and move with real agents on the test driver."""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Callable

import pytest

from pvc_tui.cluster import (
    ClusterClient,
    InvalidRequest,
    NotFound,
    OperationFailed,
    layout,
    moves,
)
from pvc_tui.cluster.connection import wait_on_znode
from pvc_tui.cluster.errors import PvcError, Refused
from pvc_tui.cluster.models import VM
from tests.conftest import ROLE_CREDENTIALS, AgentFactory, AgentProcess, desired_state, vm_xml

Cluster = Callable[..., list[AgentProcess]]


@pytest.fixture
def cluster(start_agent: AgentFactory) -> Cluster:
    def start(count: int = 3, *extra: str) -> list[AgentProcess]:
        return [start_agent(f"hv{i}", *extra) for i in range(1, count + 1)]

    return start


def running_on(client: ClusterClient, name: str) -> list[str]:
    """The nodes whose agents report the VM running there (from libvirt)."""
    return [n.name for n in client.list_nodes() if name in n.running_vms]


def wait_defined_only_on(client: ClusterClient, name: str, node: str) -> None:
    """Until the source has undefined its powered-off copy (done just after a move)."""
    uuid = client.get_vm(name).uuid
    for other in client.list_nodes():
        if other.name != node:
            wait_on_znode(client.zk, layout.node_path(other.name),
                          lambda d, s: True if uuid not in layout.decode(
                              d, layout.NODE_FIELDS)["domains"] else None,
                          20, lambda: f"{name} stayed defined on {other.name}")  # noqa: B023
    assert uuid in client.get_node(node).domains


def test_seed_rules_of_previous_node(client: ClusterClient, cluster: Cluster) -> None:
    cluster()
    client.define_vm(vm_xml("web1"), "hv1", start=True)
    client.start_vm("web1", wait=True, timeout=20)

    vm = client.migrate_vm("web1", target="hv2", wait=True, timeout=20)
    assert (vm.node, vm.previous_node, vm.power_state) == ("hv2", "hv1", "running")
    assert running_on(client, "web1") == ["hv2"]
    wait_defined_only_on(client, "web1", "hv2")

    before = desired_state(client.zk)
    with pytest.raises(Refused, match=r"already migrated .* unmigrate it, or use --force"):
        client.migrate_vm("web1", target="hv3")
    assert desired_state(client.zk) == before

    vm = client.migrate_vm("web1", target="hv3", force=True, wait=True, timeout=20)
    assert (vm.node, vm.previous_node) == ("hv3", "hv1")  # force keeps the original

    vm = client.unmigrate_vm("web1", wait=True, timeout=20)
    assert (vm.node, vm.previous_node, vm.power_state) == ("hv1", "", "running")
    with pytest.raises(Refused, match="no previous node"):
        client.unmigrate_vm("web1")

    client.migrate_vm("web1", target="hv2", wait=True, timeout=20)
    vm = client.move_vm("web1", "hv3", wait=True, timeout=20)
    assert (vm.node, vm.previous_node) == ("hv3", "")  # permanent

    client.migrate_vm("web1", target="hv1", wait=True, timeout=20)
    vm = client.move_vm("web1", "hv1", wait=True, timeout=20)  # where it already runs
    assert (vm.node, vm.previous_node, vm.migration) == ("hv1", "", None)
    assert vm.last_migration is not None and vm.last_migration.target == "hv1"


def test_stopped_vm_only_changes_node(client: ClusterClient, cluster: Cluster) -> None:
    cluster(2)
    client.define_vm(vm_xml("cold1"), "hv1")
    client.stop_vm("cold1", wait=True, timeout=20)
    vm = client.migrate_vm("cold1", target="hv2", wait=True, timeout=20)
    assert (vm.node, vm.state) == ("hv2", "stop")
    assert client.stop_vm("cold1", wait=True, timeout=20).power_state == "shutoff"
    assert not client.get_node("hv2").running_vms
    wait_defined_only_on(client, "cold1", "hv2")


def test_target_rules_and_reasons(client: ClusterClient, cluster: Cluster) -> None:
    agents = cluster(3)
    client.define_vm(vm_xml("web1", memory_mib=512), "hv1", start=True)
    client.start_vm("web1", wait=True, timeout=20)
    client.flush_node("hv2", wait=True, timeout=20)
    os.kill(agents[2].ref.pid, signal.SIGTERM)
    agents[2].proc.wait(timeout=10)
    before = desired_state(client.zk)
    cases: list[tuple[dict[str, object], type[PvcError], str]] = [
        ({"target": "hv9"}, NotFound, "no node named 'hv9'"),
        ({"target": "hv1"}, InvalidRequest, "already on hv1"),
        ({"target": "hv2"}, Refused, "hv2 is not a valid target .*: node is flushed"),
        ({"target": "hv3"}, Refused, "hv3 is not a valid target .*: agent is stop"),
        ({}, Refused, "no valid target for VM web1: hv1: the VM's current node; hv2: node "
                      "is flushed; hv3: agent is stop"),
        ({"selector": "cheapest"}, InvalidRequest, "unknown selector"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            client.migrate_vm("web1", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        client.migrate_vm("nope", target="hv2")
    assert desired_state(client.zk) == before


def test_selectors_pick_deterministically(client: ClusterClient, cluster: Cluster) -> None:
    cluster(3)
    client.define_vm(vm_xml("mover", memory_mib=256, vcpus=1), "hv1", start=True)
    for i in range(2):  # hv2 carries two VMs with 4 vCPUs and 2 GiB each
        client.define_vm(vm_xml(f"busy{i}", memory_mib=2048, vcpus=4), "hv2", start=True)
        client.start_vm(f"busy{i}", wait=True, timeout=20)
    client.start_vm("mover", wait=True, timeout=20)

    def target_of(selector: str) -> str:
        vm = client.migrate_vm("mover", selector=selector, wait=True, timeout=20)
        node = vm.node
        client.unmigrate_vm("mover", wait=True, timeout=20)
        return node

    assert target_of("mem") == "hv3"
    assert target_of("vcpus") == "hv3"
    assert target_of("vms") == "hv3"
    assert target_of("load") in ("hv2", "hv3")  # each agent samples the host's load itself


def test_racing_migrations_have_one_winner(client: ClusterClient, cluster: Cluster,
                                           zk_hosts: str) -> None:
    cluster(3)
    client.define_vm(vm_xml("web1"), "hv1", start=True)
    client.start_vm("web1", wait=True, timeout=20)
    racers = [ClusterClient.connect(zk_hosts, credentials=ROLE_CREDENTIALS["agent"])
              for _ in range(8)]
    barrier = threading.Barrier(len(racers))
    outcomes: list[VM | Exception] = []

    def race(c: ClusterClient, target: str) -> None:
        barrier.wait()
        try:
            outcomes.append(c.migrate_vm("web1", target=target))
        except PvcError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=race, args=(c, "hv2" if i % 2 else "hv3"))
               for i, c in enumerate(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [o for o in outcomes if isinstance(o, VM)]
    losers = [o for o in outcomes if isinstance(o, Exception)]
    assert len(winners) == 1 and len(losers) == 7
    assert all(isinstance(e, Refused) and ("being migrated" in str(e)
                                           or "already migrated" in str(e)) for e in losers)
    final = moves.wait_move(client, winners[0], 20)
    assert final.node == winners[0].node and final.power_state == "running"
    assert running_on(client, "web1") == [final.node]
    wait_defined_only_on(client, "web1", final.node)
    for c in racers:
        c.close()


def test_a_vm_mid_migration_refuses_another(client: ClusterClient, cluster: Cluster) -> None:
    agents = cluster(3)
    client.define_vm(vm_xml("web1"), "hv1", start=True)
    client.start_vm("web1", wait=True, timeout=20)
    os.kill(agents[0].ref.pid, signal.SIGSTOP)  # the source agent freezes: the move waits
    try:
        moving = client.migrate_vm("web1", target="hv2")
        assert moving.migration is not None and moving.migration.phase == "requested"
        with pytest.raises(Refused, match=r"being migrated \(hv1 -> hv2\)"):
            client.migrate_vm("web1", target="hv3", force=True)
    finally:
        os.kill(agents[0].ref.pid, signal.SIGCONT)
    assert moves.wait_move(client, moving, 20).node == "hv2"


def test_flushing_nodes_refuse_operator_moves(client: ClusterClient, cluster: Cluster) -> None:
    agents = cluster(3)
    client.define_vm(vm_xml("a"), "hv1", start=True)
    client.define_vm(vm_xml("b"), "hv2", start=True)
    client.start_vm("a", wait=True, timeout=20)
    os.kill(agents[1].ref.pid, signal.SIGSTOP)  # hv2's flush is requested, not yet run
    try:
        request = client.flush_node("hv2")
        with pytest.raises(Refused, match=r"hv2 is not a valid target .*node is flush"):
            client.migrate_vm("a", target="hv2")
        with pytest.raises(Refused, match="node hv2 is flushing"):
            client.migrate_vm("b", target="hv3")
    finally:
        os.kill(agents[1].ref.pid, signal.SIGCONT)
    progress = moves.wait_domain_state(client, "hv2", "flush", request["id"], 20)
    assert [i["vm"] for i in progress["items"]] == ["b"]
    assert client.get_vm("b").node in ("hv1", "hv3")


def test_cli_moves_and_their_exit_codes(client: ClusterClient, cluster: Cluster) -> None:
    from tests.test_cli import assert_one_line_error, pvc

    cluster(3)
    client.define_vm(vm_xml("web1"), "hv1", start=True)
    client.start_vm("web1", wait=True, timeout=20)
    zk = client.hosts
    run = pvc("vm", "migrate", "web1", "--selector", "vms", "--wait", zk=zk)
    assert run.returncode == 0, run.stderr
    assert re.match(r"VM web1: migrate hv1 -> hv[23] done \(shutdown, \d+\.\d+ s\); "
                    r"previous node hv1$", run.stdout.strip())
    before = desired_state(client.zk)
    for args, code, text in (
        (("vm", "migrate", "web1"), 1, "already migrated (from hv1): unmigrate it, or use "
                                       "--force"),
        (("vm", "migrate", "web1", "--target", "hv9", "--force"), 2, "no node named 'hv9'"),
        (("vm", "migrate", "nope", "--target", "hv2"), 2, "no VM named 'nope'"),
        (("vm", "migrate", "web1", "--selector", "best"), 2, "invalid choice: 'best'"),
        (("vm", "migrate", "web1", "--target", "hv2", "--selector", "mem"), 2,
         "not allowed with argument"),
        (("vm", "move", "web1"), 2, "the following arguments are required: --target"),
        (("node", "flush", "hv1", "--concurrency", "0"), 2, "concurrency must be between"),
    ):
        assert_one_line_error(pvc(*args, zk=zk), code, text)
    assert desired_state(client.zk) == before
    run = pvc("vm", "unmigrate", "web1", "--wait", zk=zk)
    assert run.returncode == 0 and "previous node -" in run.stdout
    assert_one_line_error(pvc("vm", "unmigrate", "web1", zk=zk), 1, "no previous node")
    run = pvc("vm", "move", "web1", "--target", "hv1", zk=zk)
    assert run.returncode == 0 and "belongs to hv1 permanently" in run.stdout


def test_a_move_to_a_target_that_died_is_withdrawn(client: ClusterClient,
                                                   cluster: Cluster) -> None:
    """Never power a guest off for a node that cannot take it: the move is withdrawn,
    the VM keeps running where it is, and its previous node is as before."""
    agents = cluster(3)
    client.define_vm(vm_xml("web1"), "hv1", start=True)
    client.start_vm("web1", wait=True, timeout=20)
    client.migrate_vm("web1", target="hv3", wait=True, timeout=20)  # previous node hv1
    os.kill(agents[2].ref.pid, signal.SIGSTOP)  # the source waits while...
    try:
        moving = client.migrate_vm("web1", target="hv2", force=True)
        os.kill(agents[1].ref.pid, signal.SIGTERM)  # ...the target's agent goes away
        agents[1].proc.wait(timeout=10)
    finally:
        os.kill(agents[2].ref.pid, signal.SIGCONT)
    with pytest.raises(OperationFailed, match="stayed on hv3: target hv2's agent is stop"):
        moves.wait_move(client, moving, 20)
    vm = client.start_vm("web1", wait=True, timeout=20)
    assert (vm.node, vm.previous_node, vm.power_state) == ("hv3", "hv1", "running")
    assert running_on(client, "web1") == ["hv3"]
