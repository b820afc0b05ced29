"""Every command with malformed arguments: exit 2, one line, the ZooKeeper tree byte-for-byte
unchanged (compared as a full dump before and after each command)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pvc_tui.cli.main import main
from pvc_tui.cluster import ClusterClient
from tests.conftest import dump_tree, vm_xml
from tests.dashboard_helpers import seed_cluster, seed_storage

HOSTILE = "web\x1b]52;c;aGVsbG8=\x07\x1b[2J\u202e"
MALFORMED: list[tuple[str, ...]] = [
    # parsing
    ("frobnicate",), ("vm",), ("vm", "start"), ("vm", "list", "--format", "xml"),
    ("node", "flush", "hv1", "--concurrency", "0"), ("node", "flush", "hv1", "--concurrency",
                                                      "65"),
    ("node", "flush", "hv1", "--concurrency", "x"), ("vm", "start", "web1", "--timeout", "-1"),
    ("vm", "start", "web1", "--wait", "--timeout", "nan"),
    ("vm", "migrate", "web1", "--selector", "best"),
    ("vm", "migrate", "web1", "--target", "hv2", "--selector", "mem"),
    ("vm", "move", "web1"), ("vm", "log", "web1", "--lines", "x"),
    ("--connect-timeout", "0", "vm", "list"),
    # names and references
    ("vm", "start", "nope"), ("vm", "start", ""), ("vm", "start", "../../pvc"),
    ("vm", "start", HOSTILE), ("vm", "info", "/pvc/vms"), ("node", "info", "hv9"),
    ("node", "flush", "hv9"), ("node", "ready", ".."), ("vm", "migrate", "web1", "--target",
                                                        "hv9"),
    ("vm", "migrate", "web1", "--target", HOSTILE), ("vm", "move", "web1", "--target", ""),
    ("vm", "list", "--node", "hv9"), ("vm", "list", "--state", "running"),
    ("vm", "log", "nope"), ("vm", "log", "web1", "--lines", "-5"),
    # files
    ("vm", "define", "/nonexistent.xml", "--node", "hv1"),
    ("vm", "define", "MALFORMED", "--node", "hv1"), ("vm", "define", "DUPLICATE", "--node", "hv1"),
    ("vm", "define", "ENTITY", "--node", "hv1"), ("vm", "define", "HUGE", "--node", "hv1"),
    # confirmations
    ("vm", "undefine", "web1"), ("node", "recover", "hv1"),
    ("storage", "pool", "remove", "rbd"), ("storage", "volume", "remove", "rbd", "v"),
    # storage arguments
    ("storage", "volume", "add", "rbd", "v1", "10Q"), ("storage", "volume", "add", "rbd",
                                                       "v1", "0G"),
    ("storage", "volume", "add", "rbd", "a/b", "1G"), ("storage", "volume", "add", ".x", "v",
                                                       "1G"),
    ("storage", "volume", "resize", "rbd", "v1", "ten"), ("storage", "pool", "add", "p",
                                                          "--pgs", "100"),
    ("storage", "pool", "add", "p", "--replication", "size=1,min=3"),
    ("storage", "pool", "set-pgs", "rbd", "-8"), ("storage", "osd", "out", "osd.x"),
    ("storage", "osd", "set", "nosuchflag"), ("storage", "--claim-timeout", "0", "status"),
    ("storage", "volume", "snapshot", "add", "rbd", "v", "s@1"),
    # the rest of the commands
    ("vm", "stop", "nope"), ("vm", "shutdown", "web1", "--timeout", "x"),
    ("vm", "restart", HOSTILE), ("vm", "unmigrate", "nope"), ("vm", "info"),
    ("node", "list", "--format", "yaml"), ("node", "ready", "hv1", "extra"),
    ("storage", "volume", "rename", "rbd", "v", "a/b"),
    ("storage", "volume", "clone", "rbd", "v", "..x"),
    ("storage", "volume", "snapshot", "remove", "rbd", "v", ""),
    ("storage", "volume", "snapshot", "rollback", "rbd", "v", "s!"),
    ("storage", "osd", "in", "-1"), ("storage", "osd", "unset", "bogus"),
    ("vm", "log", "web1", "--follow", "--lines", "0x"),
    ("demo", "up", "--zk-servers", "2"), ("demo", "up", "--nodes", "0", "--state-dir", "SANDBOX"),
    ("demo", "down", "extra"), ("demo", "status", "--state-dir"),
]


@pytest.fixture
def seeded(client: ClusterClient) -> ClusterClient:
    seed_cluster(client)
    seed_storage(client)
    return client


def test_malformed_commands_exit_2_and_change_nothing(
        seeded: ClusterClient, zk_hosts: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    files = {"MALFORMED": "<domain><name>x</name>", "DUPLICATE": vm_xml("web1"),
             "ENTITY": ("<!DOCTYPE d [<!ENTITY e 'x'>]><domain type='test'><name>&e;</name>"
                        "<memory>1</memory></domain>"),
             "HUGE": vm_xml("huge").replace("</domain>", "<!--" + "x" * 600_000 + "--></domain>")}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    before = dump_tree(seeded.zk)
    failures = []
    for args in MALFORMED:
        argv = [str(tmp_path / a) if a in files or a == "SANDBOX" else a for a in args]
        try:
            rc = main(["--zk", zk_hosts, *argv])
        except SystemExit as exc:
            rc = int(exc.code or 0)
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        if rc != 2 or len(lines) != 1 or "\x1b" in err or "\u202e" in err:
            failures.append(f"{args!r}: exit {rc}, stderr {err!r}, stdout {out[:200]!r}")
        if dump_tree(seeded.zk) != before:
            failures.append(f"{args!r} changed the ZooKeeper tree")
            before = dump_tree(seeded.zk)
    assert not failures, "\n".join(failures)
