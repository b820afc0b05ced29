"""Access control enforced by ZooKeeper itself: agent, operator and viewer roles.

Every test's cluster runs with ACLs on (conftest.new_chroot); these tests check what each
role may not do, that the refusal comes from the server, and that credentials never leak.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError

from pvc_tui.cluster import ClusterClient, layout
from pvc_tui.cluster.auth import ACL_IDS_PATH
from pvc_tui.cluster.connection import wait_on_znode
from pvc_tui.tui.app import Dashboard
from tests.conftest import ROLE_CREDENTIALS, AgentFactory, desired_state, vm_xml
from tests.dashboard_helpers import until
from tests.test_cli import pvc
from tests.test_console import FAST, running_vm, write


def as_role(role: str) -> dict[str, str]:
    return {"PVC_ZK_AUTH": f"{role}:{ROLE_CREDENTIALS[role].password}"}


@pytest.fixture
def cluster(client: ClusterClient, start_agent: AgentFactory) -> ClusterClient:
    log = running_vm(client, start_agent("hv1", *FAST), "web1")
    write(log, b"secret console text\n")
    client.define_vm(vm_xml("off1"), "hv1")
    return client


def test_viewer_reads_but_zookeeper_refuses_its_writes(cluster: ClusterClient,
                                                       zk_hosts: str) -> None:
    before = desired_state(cluster.zk)
    listed = pvc("vm", "list", zk=zk_hosts, env=as_role("viewer"))
    assert listed.returncode == 0 and "web1" in listed.stdout
    for args in (("vm", "stop", "web1"), ("vm", "define", "-", "--node", "hv1"),
                 ("node", "flush", "hv1"), ("vm", "migrate", "web1", "--target", "hv1")):
        run = pvc(*args, zk=zk_hosts, env=as_role("viewer"), stdin=vm_xml("new1"))
        assert run.returncode in (1, 2), args
        if run.returncode == 1:
            assert "not allowed" in run.stderr and run.stderr.count("\n") == 1, run.stderr
    assert desired_state(cluster.zk) == before
    # the library, straight to the server: refused there, not by the UI
    with ClusterClient.connect(zk_hosts, credentials=ROLE_CREDENTIALS["viewer"]) as viewer:
        with pytest.raises(NoAuthError):
            viewer.stop_vm("web1")
        with pytest.raises(NoAuthError):
            viewer.zk.set(layout.node_path("hv1"), b"{}")
    assert desired_state(cluster.zk) == before


def test_consoles_are_for_operators_and_agents(cluster: ClusterClient, zk_hosts: str) -> None:
    from pvc_tui.cluster import console

    deadline = time.monotonic() + 15
    while not (console.tail(cluster, "web1") or ([], ""))[0]:  # the agent publishes it
        assert time.monotonic() < deadline, "the console was never published"
        time.sleep(0.1)
    shown = pvc("vm", "log", "web1", zk=zk_hosts, env=as_role("operator"))
    assert shown.returncode == 0 and "secret console text" in shown.stdout
    refused = pvc("vm", "log", "web1", zk=zk_hosts, env=as_role("viewer"))
    assert refused.returncode == 1 and "not allowed" in refused.stderr
    assert "secret console text" not in refused.stdout + refused.stderr
    uuid = cluster.get_vm("web1").uuid
    with ClusterClient.connect(zk_hosts, credentials=ROLE_CREDENTIALS["viewer"]) as viewer:
        for path in (f"{layout.CONSOLES}/{uuid}", console.chunk_path(uuid, 0)):
            with pytest.raises(NoAuthError):  # straight to a chunk: refused by the server
                viewer.zk.get(path)
    anonymous = KazooClient(hosts=zk_hosts)
    anonymous.start(timeout=10)
    try:
        with pytest.raises(NoAuthError):
            anonymous.get_children(layout.VMS)
        with pytest.raises(NoAuthError):
            anonymous.get_children(layout.CONSOLES)
    finally:
        anonymous.stop()
        anonymous.close()


def test_operators_cannot_write_what_agents_publish(cluster: ClusterClient,
                                                    zk_hosts: str) -> None:
    with ClusterClient.connect(zk_hosts, credentials=ROLE_CREDENTIALS["operator"]) as op:
        for attempt in (lambda: op.zk.create(layout.node_path("fake9"), b"{}"),
                        lambda: op.zk.delete(layout.node_alive_path("hv1")),
                        lambda: op.zk.create(layout.volume_path("rbd", "fake"), b"{}"),
                        lambda: op.zk.create(f"{layout.STORAGE_CLAIMS}/x", b""),
                        lambda: op.zk.set(ACL_IDS_PATH, b"{}"),
                        # switching access control off, or the schema under the agents
                        lambda: op.zk.delete(ACL_IDS_PATH),
                        lambda: op.zk.set(layout.SCHEMA_VERSION_PATH, b"99"),
                        lambda: op.zk.create(f"{layout.ROOT}/extra", b""),
                        # standing in for the storage primary
                        lambda: op.zk.create(layout.STORAGE_PRIMARY, b"x", ephemeral=True),
                        lambda: op.zk.create(f"{layout.STORAGE}/other", b"")):
            with pytest.raises(NoAuthError):
                attempt()
        op.stop_vm("off1")  # desired state is theirs
        op.flush_node("hv1")  # and node requests
        # an operator's undefine removes the VM and its console buffer, all of it
        uuid = op.get_vm("web1").uuid
        wait_on_znode(op.zk, f"{layout.CONSOLES}/{uuid}", lambda d, st: d or None, 15,
                      lambda: "web1's console was never published")
        undefined = pvc("vm", "undefine", "web1", "--yes", zk=zk_hosts, env=as_role("operator"))
        assert undefined.returncode == 0, undefined.stderr
        assert op.zk.exists(f"{layout.CONSOLES}/{uuid}") is None
        assert op.zk.exists(layout.vm_path(uuid)) is None


async def test_readonly_dashboard_with_viewer_credentials(cluster: ClusterClient,
                                                          zk_hosts: str) -> None:
    app = Dashboard(zk_hosts, readonly=True, credentials=ROLE_CREDENTIALS["viewer"])
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, lambda: len(app.vm_table.items) == 2, what="VMs shown")
        assert app.invalid == {}
        # a viewer's console pane says why it shows nothing, and shows no console text
        app.vm_table.move_to(cluster.get_vm("web1").uuid)
        await pilot.press("c")
        view = app.console_pane.view
        await until(pilot, lambda: "not allowed" in view.text(), what="refusal shown")
        assert "secret console text" not in view.text()
        assert app.crashes == []


def test_credentials_files_and_secrecy(cluster: ClusterClient, zk_hosts: str,
                                      start_agent: AgentFactory, tmp_path: Path) -> None:
    loose = tmp_path / "loose.auth"
    loose.write_text(f"operator:{ROLE_CREDENTIALS['operator'].password}\n")
    os.chmod(loose, 0o644)
    env = {"PVC_ZK_AUTH": "", "PVC_ZK_AUTH_FILE": str(loose)}
    run = pvc("vm", "list", zk=zk_hosts, env=env)
    assert run.returncode == 2 and "readable by others: chmod 600" in run.stderr
    assert ROLE_CREDENTIALS["operator"].password not in run.stderr
    agent = start_agent("hv2", "--zk-auth-file", str(loose), wait=False)
    assert agent.proc.wait(timeout=20) == 2
    assert "readable by others" in agent.log_text()
    # a wrong password: a clear failure that shows no password
    wrong = pvc("vm", "list", zk=zk_hosts, env={"PVC_ZK_AUTH": "operator:not-the-password"})
    assert wrong.returncode == 1 and "not-the-password" not in wrong.stderr + wrong.stdout
    assert wrong.stderr.count("\n") == 1, wrong.stderr
    for role in ("agent", "operator"):
        assert ROLE_CREDENTIALS[role].password not in (tmp_path / "hv1" / "agent-0.log"
                                                       ).read_text()


def test_switching_acls_on_for_a_running_open_cluster(zk_server: Any, tmp_path: Path) -> None:
    """`acl enable` on a cluster that ran without ACLs: every existing znode gets its
    role's ACL; from then on anonymous clients read nothing and viewers change nothing."""
    from pvc_tui.cluster.auth import Credentials, write_credentials_file
    from tests.conftest import dump_tree, new_chroot
    from tests.dashboard_helpers import seed_cluster

    hosts = new_chroot(zk_server, acls=False)
    with ClusterClient.connect(hosts) as open_client:  # no credentials: the open cluster
        seed_cluster(open_client)
        before = dump_tree(open_client.zk)
    status = pvc("acl", "status", zk=hosts)
    assert status.returncode == 0 and "ACLs: off" in status.stdout
    # a client (an agent, say) connected while ACLs are off
    running = ClusterClient.connect(hosts, credentials=ROLE_CREDENTIALS["agent"])
    roles = tmp_path / "roles"
    for role, credentials in ROLE_CREDENTIALS.items():
        write_credentials_file(roles / role, credentials)
    unsure = pvc("acl", "enable", "--roles-dir", str(roles), zk=hosts)
    assert unsure.returncode == 2 and "zk_auth_file" in unsure.stderr
    enabled = pvc("acl", "enable", "--roles-dir", str(roles), "--yes", zk=hosts)
    assert enabled.returncode == 0 and "ACLs on" in enabled.stdout, enabled.stderr
    for role in ROLE_CREDENTIALS:
        assert ROLE_CREDENTIALS[role].password not in enabled.stdout + enabled.stderr
    status = pvc("acl", "status", zk=hosts)
    assert f"operator = {ROLE_CREDENTIALS['operator'].user}" in status.stdout
    again = pvc("acl", "enable", "--roles-dir", str(roles), "--yes", zk=hosts)
    assert again.returncode == 0, again.stderr  # re-applies: finishes an interrupted run
    others = tmp_path / "others"
    for role in ROLE_CREDENTIALS:  # the same agent, another operator and viewer
        write_credentials_file(others / role, ROLE_CREDENTIALS[role] if role == "agent"
                               else Credentials(f"other-{role}", "pw"))
    other = pvc("acl", "enable", "--roles-dir", str(others), "--yes", zk=hosts)
    assert other.returncode == 1 and "other credentials" in other.stderr
    # a client connected while ACLs were off learns the ids: what it creates is protected
    running.define_vm(vm_xml("late1"), "hv1")
    late = layout.vm_path(running.get_vm("late1").uuid)
    assert len(running.zk.get_acls(late)[0]) == 3, running.zk.get_acls(late)

    anonymous = KazooClient(hosts=hosts)
    anonymous.start(timeout=10)
    try:
        for path in (layout.VMS, layout.NODES, layout.node_path("hv1"), late):
            with pytest.raises(NoAuthError):
                anonymous.get(path)
        with pytest.raises(NoAuthError):  # the chroot's own node, too
            anonymous.create("/squatter", b"")
    finally:
        anonymous.stop()
        anonymous.close()
    with ClusterClient.connect(hosts, credentials=ROLE_CREDENTIALS["viewer"]) as viewer:
        assert {vm.name for vm in viewer.list_vms()} >= {"web1", "db1"}
        with pytest.raises(NoAuthError):
            viewer.stop_vm("web1")
    with ClusterClient.connect(hosts, credentials=ROLE_CREDENTIALS["operator"]) as op:
        op.stop_vm("web1")  # an operator's change still works
        with pytest.raises(NoAuthError):
            op.zk.create(layout.node_path("fake9"), b"{}")
    running.undefine_vm("late1")
    running.close()
    with ClusterClient.connect(hosts, credentials=ROLE_CREDENTIALS["agent"]) as agent:
        after = dump_tree(agent.zk)
        web1 = layout.vm_path(agent.get_vm("web1").uuid)
    # the data is as it was: only the ids were added, and the operator's stop landed
    # (the seeded liveness znodes ended with the session that created them)
    changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)
               and not p.endswith("/alive")}
    assert changed == {web1, ACL_IDS_PATH}, changed
