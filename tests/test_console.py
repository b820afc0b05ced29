"""Console logs end to end: real files, a real agent, real ZooKeeper, the library and CLI."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node_agent.console_writer import ConsoleWriter
from pvc_tui.cluster import ClusterClient, console
from pvc_tui.cluster.console import ConsoleLine, Ended, Gap, Partial
from tests.conftest import AgentFactory, AgentProcess, vm_xml
from tests.test_cli import assert_one_line_error, pvc

FAST = ("--console-publish-interval", "0.02", "--console-log-lines", "100")


def log_of(agent: AgentProcess, vm: str) -> Path:
    return Path(agent.argv[agent.argv.index("--console-log-dir") + 1]) / f"{vm}.log"


def running_vm(client: ClusterClient, agent: AgentProcess, name: str = "web1") -> Path:
    client.define_vm(vm_xml(name), agent.name, start=True)
    client.start_vm(name, wait=True, timeout=20)
    return log_of(agent, name)


def write(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


class Follower:
    """Collects console.follow() events in a thread; wait_for() blocks on a condition."""

    def __init__(self, client: ClusterClient, vm: str, last: int = 10) -> None:
        self.events: list[object] = []
        self.stop = threading.Event()
        self._cond = threading.Condition()
        self._paused = threading.Event()
        self._paused.set()
        self._thread = threading.Thread(target=self._run, args=(client, vm, last), daemon=True)
        self._thread.start()

    def _run(self, client: ClusterClient, vm: str, last: int) -> None:
        for event in console.follow(client, vm, last=last, stop=self.stop):
            self._paused.wait()
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()

    def lines(self) -> list[ConsoleLine]:
        return [e for e in self.events if isinstance(e, ConsoleLine)]

    def wait_for(self, predicate: object, timeout: float = 15) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: predicate(self), timeout), self.events[-5:]  # type: ignore[operator]

    def close(self) -> None:
        self.stop.set()
        self._paused.set()


@pytest.fixture
def follower(client: ClusterClient) -> Iterator[list[Follower]]:
    made: list[Follower] = []
    yield made
    for f in made:
        f.close()


def test_lines_tail_and_partial_prompt(client: ClusterClient, start_agent: AgentFactory) -> None:
    log = running_vm(client, start_agent("hv1", *FAST))
    write(log, b"one\n\n\nsame\nsame\nsame\nlogin: ")
    deadline = time.monotonic() + 10
    while (got := console.tail(client, "web1")) is None or got[1] != "login: ":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    lines = got[0]
    assert [line.text for line in lines] == ["one", "", "", "same", "same", "same"]
    assert [line.seq for line in lines] == list(range(6))
    write(log, b"root\n")
    while (got := console.tail(client, "web1", lines=2)) is None or got[1] != "":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert [line.text for line in got[0]] == ["same", "login: root"]  # completed once


def test_follow_is_exact_with_repeats_blanks_and_bursts(
        client: ClusterClient, start_agent: AgentFactory, follower: list[Follower]) -> None:
    log = running_vm(client, start_agent("hv1", *FAST))
    write(log, b"start\n")
    f = Follower(client, "web1")
    follower.append(f)
    f.wait_for(lambda f: any(line.text == "start" for line in f.lines()))
    body = [b"same", b"", b"", b"same", b"same", b"", b"prompt$ ", b"same"] * 10
    write(log, b"\n".join(body) + b"\n")
    f.wait_for(lambda f: len(f.lines()) >= 1 + len(body))
    assert [line.text.encode() for line in f.lines()[1:]] == body
    seqs = [line.seq for line in f.lines()]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))

    f._paused.clear()  # the reader falls far behind: 2000 lines into a 100-line buffer
    write(log, b"".join(b"burst %d\n" % i for i in range(2000)))
    time.sleep(1)
    f._paused.set()
    f.wait_for(lambda f: f.lines()[-1].text == "burst 1999")
    gaps = [e for e in f.events if isinstance(e, Gap)]
    after = f.lines()[1 + len(body):]
    missed = sum(g.missed for g in gaps)
    assert missed + len(after) == 2000  # every line either seen once or counted as missed
    assert [line.text for line in after] == [f"burst {i}" for i in range(missed, 2000)]


def test_restart_and_migration_markers(client: ClusterClient, start_agent: AgentFactory,
                                       follower: list[Follower]) -> None:
    hv1 = start_agent("hv1", *FAST)
    hv2 = start_agent("hv2", *FAST)
    log = running_vm(client, hv1)
    write(log, b"boot 1\n")
    f = Follower(client, "web1")
    follower.append(f)
    f.wait_for(lambda f: any(line.text == "boot 1" for line in f.lines()))
    client.stop_vm("web1", wait=True, timeout=20)
    log.write_bytes(b"boot 2\n")  # what QEMU does with append='off' when the guest starts
    client.start_vm("web1", wait=True, timeout=20)
    f.wait_for(lambda f: any(line.text == "boot 2" for line in f.lines()))
    client.migrate_vm("web1", target="hv2", wait=True, timeout=20)
    write(log_of(hv2, "web1"), b"on hv2\n")
    f.wait_for(lambda f: any(line.text == "on hv2" for line in f.lines()))
    texts = [line.text for line in f.lines()]
    assert texts.index("boot 1") < texts.index("--- web1 started on hv1 ---") < texts.index(
        "boot 2") < texts.index("--- web1 started on hv2 ---") < texts.index("on hv2")
    assert all(line.marker for line in f.lines() if line.text.startswith("---"))
    assert texts.count("boot 2") == 1
    seqs = [line.seq for line in f.lines()]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # one sequence across nodes
    uuid = client.get_vm("web1").uuid
    client.undefine_vm("web1", force=True)
    f.wait_for(lambda f: isinstance(f.events[-1], Ended))
    assert console.read_meta(client, uuid) is None  # the buffer went with the VM


def test_hostile_bytes_through_the_cli(client: ClusterClient, start_agent: AgentFactory) -> None:
    log = running_vm(client, start_agent("hv1", *FAST))
    payload = (b"a\x1b]52;c;aGk=\x07b\x1b[2Jc\x9b6n\xc2\x9b31md\x1bP$q m\x1b\\e\xe2\x80\xaef"
               b"\x1b]0;title\x07g\xff\xfe")
    lines = []
    for cut in range(1, len(payload)):  # every split point, written in two pieces
        write(log, payload[:cut])
        time.sleep(0.002)
        write(log, payload[cut:] + b"\n")
        lines.append(payload)
    deadline = time.monotonic() + 15
    while len((console.tail(client, "web1") or ([], ""))[0]) < len(lines):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    shown = pvc("vm", "log", "web1", zk=client.hosts)
    assert shown.returncode == 0
    assert shown.stdout.count("\n") == len(lines)
    for line in shown.stdout.splitlines():
        assert line == "abc\ufffd6ndefg\ufffd\ufffd"  # a lone 0x9b byte is not a CSI
    exact = subprocess.run([sys.executable, "-m", "pvc_tui.cli.main", "--zk", client.hosts,
                            "vm", "log", "web1", "--raw", "--lines", "1"],
                           capture_output=True, timeout=30)
    assert exact.stdout == payload + b"\n"


def test_bad_input(client: ClusterClient, start_agent: AgentFactory) -> None:
    running_vm(client, start_agent("hv1", *FAST))
    for lines in ("0", "-3", "10000000"):
        assert_one_line_error(pvc("vm", "log", "web1", "--lines", lines, zk=client.hosts), 2,
                              "--lines must be between 1 and")
    assert_one_line_error(pvc("vm", "log", "nope", zk=client.hosts), 2, "no VM named")
    quiet = pvc("vm", "log", "web1", zk=client.hosts)
    assert quiet.returncode == 0 and "has no console output yet" in quiet.stderr


def test_writes_do_not_grow_with_the_buffer(client: ClusterClient) -> None:
    """Bytes per publish stay the size of the current chunk, however long the buffer;
    worst-case lines never push a request past ZooKeeper's 1 MiB limit."""
    writer = ConsoleWriter(client.zk, "00000000-0000-4000-8000-000000000001", "hv1", 1000)
    sizes = []
    for i in range(1200):
        writer.append(f"line {i:05d} " + "x" * 68)
        sizes.append(writer.publish())
    assert max(sizes[1000:]) <= max(sizes[:64]) + 64  # not growing with the 1000 lines
    assert max(sizes) < 4 * 1024
    hostile = "\udcff" * console.MAX_LINE_BYTES  # 6 bytes of JSON per character
    for _ in range(3 * console.CHUNK_LINES):
        writer.append(hostile, cont=True)
    assert writer.publish() > 1024 * 1024  # several requests, each accepted by ZooKeeper
    got = console.read_lines(client, writer.uuid, writer.next_seq - 1, writer.next_seq)
    assert got[0].text == hostile and got[0].cont


def test_partial_event_then_completion(client: ClusterClient, start_agent: AgentFactory,
                                       follower: list[Follower]) -> None:
    log = running_vm(client, start_agent("hv1", *FAST))
    f = Follower(client, "web1")
    follower.append(f)
    write(log, b"login: ")
    f.wait_for(lambda f: any(isinstance(e, Partial) and e.text == "login: " for e in f.events))
    write(log, b"admin\n")
    f.wait_for(lambda f: any(line.text == "login: admin" for line in f.lines()))
    assert [line.text for line in f.lines()].count("login: admin") == 1


def test_follow_begun_before_any_output_gets_every_line(
        client: ClusterClient, start_agent: AgentFactory, follower: list[Follower]) -> None:
    agent = start_agent("hv1", *FAST)
    client.define_vm(vm_xml("quiet"), "hv1")
    f = Follower(client, "quiet", last=0)  # waits: the VM never logged
    follower.append(f)
    log = log_of(agent, "quiet")
    log.write_bytes(b"".join(b"boot %d\n" % i for i in range(40)))  # a burst at power-on
    client.start_vm("quiet", wait=True, timeout=20)
    f.wait_for(lambda f: len(f.lines()) >= 40)
    assert [line.text for line in f.lines()] == [f"boot {i}" for i in range(40)]


def test_a_request_whose_reply_was_lost_is_not_repeated(
        client: ClusterClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection breaks after ZooKeeper applied a publish: the writer recognises its
    own request by its token and does not append the same lines again."""
    from kazoo.exceptions import ConnectionLoss

    import node_agent.console_writer as console_writer

    writer = ConsoleWriter(client.zk, "00000000-0000-4000-8000-000000000002", "hv1", 100)
    writer.append("one")
    writer.publish()
    real_commit = console_writer.commit
    lose_reply = [True]

    def commit_then_lose_the_reply(zk: object, ops: list[object]) -> None:
        real_commit(zk, ops)  # type: ignore[arg-type]
        if lose_reply.pop() if lose_reply else False:
            raise ConnectionLoss()

    monkeypatch.setattr(console_writer, "commit", commit_then_lose_the_reply)
    writer.append("two")
    with pytest.raises(ConnectionLoss):
        writer.publish()
    writer.append("three")
    writer.publish()
    lines = console.read_lines(client, writer.uuid, 0, writer.next_seq)
    assert [line.text for line in lines] == ["one", "two", "three"]
    assert [line.seq for line in lines] == [0, 1, 2]
