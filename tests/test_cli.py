"""The `pvc-tui` command as an operator runs it: output, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pvc_tui.cluster import ClusterClient, layout
from pvc_tui.sandbox.zookeeper import free_port
from tests.conftest import AgentFactory, dump_tree, vm_xml


def pvc(*args: str, zk: str | None = None, stdin: str | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "pvc_tui.cli.main"]
    if zk:
        argv += ["--zk", zk]
    full_env = {**os.environ, "PVC_SANDBOX_DIR": "/nonexistent-sandbox"}
    full_env.pop("PVC_ZK", None)
    full_env.update(env or {})
    return subprocess.run(argv + list(args), capture_output=True, text=True, input=stdin,
                          timeout=60, env=full_env)


def assert_one_line_error(run: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert run.returncode == code, run
    assert run.stderr.count("\n") == 1 and text in run.stderr, run.stderr
    assert "Traceback" not in run.stderr


def test_define_start_and_list(zk_hosts: str, start_agent: AgentFactory,
                               tmp_path: Path) -> None:
    start_agent("hv1")
    xml = tmp_path / "web1.xml"
    xml.write_text(vm_xml("web1", memory_mib=768, vcpus=2))
    run = pvc("vm", "define", str(xml), "--node", "hv1", "--start", "--wait", zk=zk_hosts)
    assert run.returncode == 0, run.stderr
    assert "web1 is running on hv1" in run.stdout
    listed = json.loads(pvc("vm", "list", "--format", "json", zk=zk_hosts).stdout)
    assert [(v["name"], v["state"], v["power_state"], v["memory_mib"]) for v in listed] == [
        ("web1", "start", "running", 768)]
    table = pvc("vm", "list", zk=zk_hosts).stdout.splitlines()
    assert table[0].split()[:4] == ["NAME", "STATE", "POWER", "NODE"]
    assert table[1].split()[:4] == ["web1", "start", "running", "hv1"]
    nodes = json.loads(pvc("node", "list", "--format", "json", zk=zk_hosts).stdout)
    assert nodes[0]["name"] == "hv1" and nodes[0]["running_vms"] == ["web1"]
    info = pvc("node", "info", "hv1", zk=zk_hosts).stdout
    assert "daemon state: run" in info
    assert "<name>web1</name>" in pvc("vm", "info", "web1", "--xml", zk=zk_hosts).stdout
    run = pvc("vm", "shutdown", "web1", "--wait", zk=zk_hosts)
    assert run.returncode == 0 and "shutdown done (shutoff on hv1)" in run.stdout
    assert pvc("vm", "define", "-", "--node", "hv1", zk=zk_hosts,
               stdin=vm_xml("web2")).returncode == 0


def test_failed_operation_exits_1(zk_hosts: str, start_agent: AgentFactory,
                                  tmp_path: Path) -> None:
    start_agent("hv1")
    xml = tmp_path / "bad.xml"
    xml.write_text("<domain type='test'><name>bad</name><memory>1024</memory></domain>")
    assert pvc("vm", "define", str(xml), "--node", "hv1", zk=zk_hosts).returncode == 0
    run = pvc("vm", "start", "bad", "--wait", "--timeout", "20", zk=zk_hosts)
    assert_one_line_error(run, 1, "VM bad failed:")


@pytest.mark.parametrize("args, text", [
    (("vm", "info", "nope"), "no VM named 'nope'"),
    (("node", "info", "hv9"), "no node named 'hv9'"),
    (("vm", "start", "nope"), "no VM named 'nope'"),
    (("vm", "define", "/nonexistent.xml", "--node", "hv1"), "cannot read /nonexistent.xml"),
    (("vm", "define", "MALFORMED", "--node", "hv1"), "malformed XML"),
    (("vm", "define", "DUPLICATE", "--node", "hv1"), "already defined"),
    (("vm", "define", "NEW", "--node", "hv9"), "no node named 'hv9'"),
    (("vm", "list", "--state", "running"), "unknown state"),
    (("vm", "undefine", "web1"), "stop it first, or pass --yes"),
    (("vm", "restart", "off1"), "use start"),
    (("vm", "frobnicate", "web1"), "invalid choice"),
    (("vm", "start"), "required"),
    (("vm", "start", "web1", "--timeout", "-1"), "not between 0 and"),
    (("vm", "start", "web1", "--wait", "--timeout", "inf"), "not between 0 and"),
    (("node", "info", ".."), "no node named '..'"),
    (("vm", "list", "--node", ""), "no node named ''"),
    (("vm", "define", "UUIDNAME", "--node", "hv1"), "looks like a UUID"),
])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(
        client: ClusterClient, zk_hosts: str, tmp_path: Path, args: tuple[str, ...],
        text: str) -> None:
    client.zk.create(layout.node_path("hv1"), layout.encode(layout.new_node_record(name="hv1")))
    client.define_vm(vm_xml("web1"), "hv1", start=True)
    client.define_vm(vm_xml("off1"), "hv1")
    files = {"MALFORMED": "<domain><name>x</name>", "DUPLICATE": vm_xml("web1"),
             "NEW": vm_xml("new1"),
             "UUIDNAME": vm_xml("0b1f5c2e-8d1a-4c55-9d7e-2f4b6a8c9e01")}
    argv = []
    for arg in args:
        if arg in files:
            (tmp_path / arg).write_text(files[arg])
            arg = str(tmp_path / arg)
        argv.append(arg)
    before = dump_tree(client.zk)
    assert_one_line_error(pvc(*argv, zk=zk_hosts), 2, text)
    assert dump_tree(client.zk) == before


def test_unreachable_zookeeper_is_a_clear_error() -> None:
    run = pvc("--connect-timeout", "1", "vm", "list", zk=f"127.0.0.1:{free_port()}")
    assert_one_line_error(run, 1, "cannot reach ZooKeeper")


def test_zk_from_environment(client: ClusterClient, zk_hosts: str) -> None:
    client.zk.create(layout.node_path("hv7"), layout.encode(layout.new_node_record(name="hv7")))
    run = pvc("node", "list", env={"PVC_ZK": zk_hosts})
    assert run.returncode == 0 and "hv7" in run.stdout


def test_hostile_record_text_never_reaches_the_terminal(client: ClusterClient,
                                                        zk_hosts: str) -> None:
    client.zk.create(layout.node_path("hv1"), layout.encode(layout.new_node_record(name="hv1")))
    vm = client.define_vm(vm_xml("web1"), "hv1")
    hostile = "boom\x1b]0;owned\x07\x1b[2J\x9b6n\u202eevil"
    client.update_vm(vm.uuid, lambda r: r.update(state="fail", failed_reason=hostile))
    for args in (("vm", "list"), ("vm", "info", "web1"), ("vm", "list", "--format", "json")):
        out = pvc(*args, zk=zk_hosts).stdout
        assert "boom" in out
        assert not any(c in out for c in "\x1b\x07\x9b\u202e"), args


def test_corrupt_record_is_a_one_line_error(client: ClusterClient, zk_hosts: str) -> None:
    client.zk.create(layout.node_path("hv1"), layout.encode(layout.new_node_record(name="hv1")))
    vm = client.define_vm(vm_xml("web1"), "hv1")
    client.define_vm(vm_xml("web2"), "hv1")
    client.zk.set(layout.vm_path(vm.uuid), b"{broken")
    for args in (("vm", "info", "web1"), ("vm", "start", "web1")):
        assert_one_line_error(pvc(*args, zk=zk_hosts), 1, "record of VM")
    listed = pvc("vm", "list", zk=zk_hosts)  # the rest of the cluster still shows
    assert listed.returncode == 0 and "web2" in listed.stdout
