"""Agents run in this process on the shared `test:///default` hypervisor, so the test can
look at libvirt directly: what a restarted agent or a ZooKeeper outage does to guests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from node_agent.agent import NodeAgent
from node_agent.config import AgentConfig
from pvc_tui.cluster import ClusterClient, layout
from pvc_tui.cluster.connection import wait_on_znode
from pvc_tui.sandbox.zookeeper import start_zookeeper, stop_zookeeper
from tests.conftest import AGENT_AUTH_FILE, vm_xml

URI = "test:///default"


class AgentThread:
    def __init__(self, zk: str, name: str = "hv1") -> None:
        self.agent = NodeAgent(AgentConfig(name=name, zk=zk, libvirt_uri=URI,
                                           keepalive_interval=1.0, shutdown_timeout=3.0,
                                           zk_auth_file=str(AGENT_AUTH_FILE)))
        self.thread = threading.Thread(target=self.agent.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.agent.request_stop()
        self.thread.join(timeout=15)
        assert not self.thread.is_alive()


@pytest.fixture
def hypervisor() -> Iterator[libvirt.virConnect]:
    conn = libvirt.open(URI)
    yield conn
    for dom in conn.listAllDomains(0):
        if dom.name() != "test":  # the test driver's own built-in domain
            if dom.isActive():
                dom.destroy()
            dom.undefine()
    conn.close()


def wait_node_run(client: ClusterClient, name: str = "hv1", timeout: float = 20) -> None:
    def check(data: bytes | None, stat: object) -> bool | None:
        if data is None or not client.zk.exists(layout.node_alive_path(name)):
            return None
        return True if layout.decode(data, layout.NODE_FIELDS)["daemon_state"] == "run" else None

    wait_on_znode(client.zk, layout.node_path(name), check, timeout, lambda: "node not running")


def test_restarted_agent_changes_nothing_that_was_right(
        client: ClusterClient, zk_hosts: str, hypervisor: libvirt.virConnect) -> None:
    first = AgentThread(zk_hosts)
    wait_node_run(client)
    client.define_vm(vm_xml("keep1"), "hv1", start=True)
    client.define_vm(vm_xml("off1"), "hv1")
    running = client.start_vm("keep1", wait=True, timeout=20)
    client.stop_vm("off1", wait=True, timeout=20)
    dom_id = hypervisor.lookupByUUIDString(running.uuid).ID()
    first.stop()
    # SIGTERM semantics: the agent leaves, the guest keeps running
    assert hypervisor.lookupByUUIDString(running.uuid).isActive()
    assert client.get_node("hv1").daemon_state == "stop"

    second = AgentThread(zk_hosts)
    wait_node_run(client)
    assert client.start_vm("keep1", wait=True, timeout=20).power_state == "running"
    assert hypervisor.lookupByUUIDString(running.uuid).ID() == dom_id  # not restarted
    assert not hypervisor.lookupByName("off1").isActive()
    second.stop()


def test_zookeeper_outage_never_powers_off_guests(
        tmp_path: Path, hypervisor: libvirt.virConnect) -> None:
    server = start_zookeeper(tmp_path / "zk", fast_unsafe=True)
    agent = None
    try:
        client = ClusterClient.connect(server.address)
        agent = AgentThread(server.address)
        wait_node_run(client)
        vm = client.define_vm(vm_xml("guest1"), "hv1", start=True)
        client.start_vm("guest1", wait=True, timeout=20)
        client.close()
        dom = hypervisor.lookupByUUIDString(vm.uuid)
        dom_id = dom.ID()

        stop_zookeeper(server)
        time.sleep(6)  # longer than the agent's 4 s session timeout: nothing may happen
        assert dom.isActive() and dom.ID() == dom_id

        server = start_zookeeper(tmp_path / "zk", port=server.port, fast_unsafe=True)
        client = ClusterClient.connect(server.address)
        wait_node_run(client)  # re-registered by itself
        assert dom.isActive() and dom.ID() == dom_id
        # and it still obeys
        assert client.stop_vm("guest1", wait=True, timeout=20).power_state == "shutoff"
        client.close()
    finally:
        if agent is not None:
            agent.stop()
        stop_zookeeper(server)


def test_session_expiry_reregisters_and_keeps_guests(
        client: ClusterClient, zk_hosts: str, hypervisor: libvirt.virConnect) -> None:
    from kazoo.client import KazooClient

    agent = AgentThread(zk_hosts)
    wait_node_run(client)
    vm = client.define_vm(vm_xml("g1"), "hv1", start=True)
    client.start_vm("g1", wait=True, timeout=20)
    dom_id = hypervisor.lookupByUUIDString(vm.uuid).ID()
    old_session = agent.agent.zk.client_id
    # Expire the agent's session the way a server does: another client takes it, then
    # closes it.
    thief = KazooClient(hosts=zk_hosts.split("/")[0], client_id=old_session)
    thief.start(timeout=10)
    thief.stop()
    thief.close()

    def owner_changed(data: bytes | None, stat: object) -> bool | None:
        owner = getattr(stat, "ephemeralOwner", None)
        return True if owner is not None and owner != old_session[0] else None

    wait_on_znode(client.zk, layout.node_alive_path("hv1"), owner_changed, 30,
                  lambda: "agent did not re-register after its session expired")
    wait_node_run(client)
    assert hypervisor.lookupByUUIDString(vm.uuid).ID() == dom_id  # untouched
    client.define_vm(vm_xml("g2"), "hv1", start=True)  # and it works on
    assert client.start_vm("g2", wait=True, timeout=20).power_state == "running"
    agent.stop()


def test_domains_of_another_cluster_are_never_removed(
        client: ClusterClient, zk_hosts: str, hypervisor: libvirt.virConnect) -> None:
    from pvc_tui.cluster.domain_xml import mark_managed

    foreign = hypervisor.defineXML(mark_managed(vm_xml("foreign1"), "some-other-cluster"))
    foreign.create()
    agent = AgentThread(zk_hosts)
    wait_node_run(client)
    client.define_vm(vm_xml("ours"), "hv1", start=True)
    client.start_vm("ours", wait=True, timeout=20)
    assert foreign.isActive()  # not in this cluster's records, but not this cluster's
    assert foreign.UUIDString() not in client.get_node("hv1").domains
    agent.stop()


def test_a_copy_assigned_elsewhere_is_powered_off(
        client: ClusterClient, zk_hosts: str, hypervisor: libvirt.virConnect,
        caplog: pytest.LogCaptureFixture) -> None:
    """A VM must never run on two nodes: a running copy whose record names another
    node, with no move from here under way, is stale."""
    from pvc_tui.cluster.connection import cluster_id
    from pvc_tui.cluster.domain_xml import mark_managed

    client.zk.create(layout.node_path("hv2"), layout.encode(layout.new_node_record(
        name="hv2", daemon_state="run")))
    vm = client.define_vm(vm_xml("twin"), "hv2", start=True)
    stale = hypervisor.defineXML(mark_managed(client.get_vm_xml("twin"), cluster_id(client.zk)))
    stale.create()
    agent = AgentThread(zk_hosts)
    wait_node_run(client)

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # libvirt's own view; a removal has no record
        try:
            hypervisor.lookupByUUIDString(vm.uuid)
        except libvirt.libvirtError:
            break
        time.sleep(0.05)
    with pytest.raises(libvirt.libvirtError):
        hypervisor.lookupByUUIDString(vm.uuid)
    assert "powering off this copy" in caplog.text
    agent.stop()


def test_agent_restart_continues_the_console_exactly(
        client: ClusterClient, zk_hosts: str, hypervisor: libvirt.virConnect,
        tmp_path: Path) -> None:
    from pvc_tui.cluster import console

    def agent_here() -> AgentThread:
        thread = AgentThread.__new__(AgentThread)
        thread.agent = NodeAgent(AgentConfig(
            name="hv1", zk=zk_hosts, libvirt_uri=URI, keepalive_interval=1.0,
            console_log_dir=str(tmp_path), console_publish_interval=0.02,
            zk_auth_file=str(AGENT_AUTH_FILE)))
        thread.thread = threading.Thread(target=thread.agent.run, daemon=True)
        thread.thread.start()
        return thread

    def wait_lines(count: int) -> list[str]:
        deadline = time.monotonic() + 15
        while True:
            got = console.tail(client, "talker")
            lines = [line.text for line in got[0]] if got else []
            if len(lines) >= count:
                return lines
            assert time.monotonic() < deadline, lines
            time.sleep(0.05)

    first = agent_here()
    wait_node_run(client)
    client.define_vm(vm_xml("talker"), "hv1", start=True)
    client.start_vm("talker", wait=True, timeout=20)
    log = tmp_path / "talker.log"
    with log.open("a") as f:
        f.write("".join(f"before {i}\n" for i in range(5)))
    wait_lines(5)
    first.stop()
    with log.open("a") as f:  # the guest keeps printing while no agent runs
        f.write("".join(f"while away {i}\n" for i in range(3)))
    second = agent_here()
    wait_node_run(client)
    with log.open("a") as f:
        f.write("after\n")
    lines = wait_lines(9)
    assert lines == [f"before {i}" for i in range(5)] + [
        f"while away {i}" for i in range(3)] + ["after"]  # no marker, no duplicate, no loss
    second.stop()
