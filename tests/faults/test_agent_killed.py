"""An agent SIGKILLed in the middle of a migration (source or target) or a flush, then
restarted while its guests still run (as QEMU guests outlive their agent): every VM runs
exactly once, every state can still be changed, and no console tail is doubled."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from typing import Any

from kazoo.exceptions import KazooException

from pvc_tui.cluster import ClusterClient, console, layout, moves
from pvc_tui.cluster.connection import cluster_id, wait_on_znode
from pvc_tui.cluster.domain_xml import mark_managed
from pvc_tui.cluster.layout import VMState
from tests.conftest import AgentFactory, AgentProcess, vm_xml, wait_agent_running
from tests.test_console import FAST, log_of, write


def kill_and_restart(start_agent: AgentFactory, client: ClusterClient,
                     agent: AgentProcess) -> AgentProcess:
    """SIGKILL the agent and start it again. Its guests outlive it, as QEMU processes
    do: the restarted agent's hypervisor still runs what the node reported running."""
    surviving = client.get_node(agent.name).running_vms
    os.kill(agent.ref.pid, signal.SIGKILL)
    agent.proc.wait(timeout=10)
    cluster = cluster_id(client.zk)
    running = tuple(mark_managed(client.get_vm_xml(name), cluster) for name in surviving)
    again = start_agent(agent.name, *agent.argv[agent.argv.index("--shutdown-timeout") + 2:],
                        wait=False, running=running)
    wait_agent_running(client, again, timeout=40)
    return again


def settled_once(client: ClusterClient, names: list[str], timeout: float = 40) -> Counter[str]:
    """Until every VM named is running, reported by its own node, and listed as running
    by exactly one node; the count per VM."""
    deadline = time.monotonic() + timeout
    while True:
        counts: Counter[str] = Counter()
        try:
            for node in client.list_nodes():
                counts.update(v for v in node.running_vms if v in names)
            vms = [client.get_vm(n) for n in names]
        except KazooException:  # a ZooKeeper leader change under way: look again
            assert time.monotonic() < deadline, "ZooKeeper did not come back"
            time.sleep(0.2)
            continue
        if all(v.power_state == "running" and v.runtime.node == v.node and v.migration is None
               for v in vms) and all(counts[n] == 1 for n in names):
            return counts
        assert time.monotonic() < deadline, (counts, [(v.name, v.node, v.power_state,
                                                        v.migration) for v in vms])
        time.sleep(0.2)


def test_source_killed_mid_migration(client: ClusterClient, start_agent: AgentFactory) -> None:
    agents = {n: start_agent(n, *FAST) for n in ("hv1", "hv2")}
    client.define_vm(vm_xml("web1"), "hv1", start=True)
    client.start_vm("web1", wait=True, timeout=20)
    client.migrate_vm("web1", target="hv2")  # not waited for: killed right away
    agents["hv1"] = kill_and_restart(start_agent, client, agents["hv1"])
    settled_once(client, ["web1"])
    # every state can still be changed
    client.stop_vm("web1", wait=True, timeout=30)
    client.start_vm("web1", wait=True, timeout=30)
    vm = client.get_vm("web1")
    target = "hv1" if vm.node == "hv2" else "hv2"
    client.migrate_vm("web1", target=target, wait=True, timeout=30, force=True)
    settled_once(client, ["web1"])
    # one tail per guest: each new line shows once
    log = log_of(agents[client.get_vm("web1").node], "web1")
    for i in range(5):
        write(log, b"after %d\n" % i)
    deadline = time.monotonic() + 15
    while True:
        texts = [line.text for line in (console.tail(client, "web1") or ([], ""))[0]]
        if "after 4" in texts:
            break
        assert time.monotonic() < deadline, texts[-5:]
        time.sleep(0.1)
    assert [t for t in texts if t.startswith("after")] == [f"after {i}" for i in range(5)]


def test_target_killed_mid_migration(client: ClusterClient,
                                     start_agent: AgentFactory) -> None:
    """The target freezes, the source powers the guest off and releases it, then the
    target is killed and restarted: it starts the guest, once."""
    agents = {n: start_agent(n, *FAST) for n in ("hv1", "hv2")}
    client.define_vm(vm_xml("web1"), "hv1", start=True)
    client.start_vm("web1", wait=True, timeout=20)
    os.kill(agents["hv2"].ref.pid, signal.SIGSTOP)
    client.migrate_vm("web1", target="hv2")
    uuid = client.get_vm("web1").uuid

    def released(data: bytes | None, stat: Any) -> bool | None:
        move = layout.decode(data, layout.VM_FIELDS)["migration"] if data else {}
        return True if move.get("phase") in ("released", "done") else None

    wait_on_znode(client.zk, layout.vm_path(uuid), released, 30,
                  lambda: "the source never let web1 go")
    agents["hv2"] = kill_and_restart(start_agent, client, agents["hv2"])
    counts = settled_once(client, ["web1"])
    assert client.get_vm("web1").node == "hv2" and counts["web1"] == 1
    client.stop_vm("web1", wait=True, timeout=30)
    client.start_vm("web1", wait=True, timeout=30)
    settled_once(client, ["web1"])


def test_node_killed_mid_flush(client: ClusterClient, start_agent: AgentFactory) -> None:
    agents = {n: start_agent(n, *FAST) for n in ("hv1", "hv2", "hv3")}
    names = [f"vm{i}" for i in range(6)]
    for name in names:
        client.define_vm(vm_xml(name), "hv1", start=True)
    for name in names:
        client.wait_vm_state(client.get_vm(name), VMState.START, 30)
    client.flush_node("hv1", concurrency=1)
    time.sleep(0.05)  # let the flush begin (test choreography, not synchronisation)
    agents["hv1"] = kill_and_restart(start_agent, client, agents["hv1"])
    settled_once(client, names, timeout=60)
    # the interrupted flush can always be finished or replaced by a new request
    request = moves.request_domain_state(client, "hv1", "flush")
    done = moves.wait_domain_state(client, "hv1", "flush", request, timeout=90)
    assert done["finished"] and client.get_node("hv1").domain_state == "flushed"
    counts = settled_once(client, names, timeout=60)
    assert all(client.get_vm(n).node != "hv1" for n in names), counts
    client.ready_node("hv1", wait=True, timeout=90)
    settled_once(client, names, timeout=60)
