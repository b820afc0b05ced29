"""All of ZooKeeper down for 30 s, under three agents that may fence each other, a guest
printing, the CLI and the dashboard: guests keep running, console lines printed meanwhile
arrive afterwards, nobody is declared dead or fenced, the CLI fails fast, the dashboard
shows the outage and recovers by itself."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from pvc_tui.cluster import ClusterClient, console, layout
from pvc_tui.cluster.connection import wait_on_znode
from pvc_tui.cluster.console import ConsoleLine, Gap
from pvc_tui.sandbox.zookeeper import start_zookeeper, stop_zookeeper
from pvc_tui.tui.app import Dashboard
from tests.conftest import (
    ROLE_CREDENTIALS,
    launch_agent,
    new_chroot,
    require,
    stop_agents,
    vm_xml,
    wait_agent_running,
)
from tests.dashboard_helpers import until
from tests.test_cli import pvc
from tests.test_console import Follower, log_of, write

OUTAGE = 30.0


async def test_zookeeper_down_for_30_seconds(tmp_path: Path) -> None:
    from pvc_tui.sandbox.zookeeper import zookeeper_unavailable_reason

    require(zookeeper_unavailable_reason())
    server = start_zookeeper(tmp_path / "zk", fast_unsafe=True)
    hosts = new_chroot(server)
    client = ClusterClient.connect(hosts, credentials=ROLE_CREDENTIALS["agent"])
    # every node may fence every other: an outage must not look like dead nodes
    marker = tmp_path / "fenced"
    fence = ["--recovery", "fence", "--fence-intervals", "3",
             *(f"--fence-command={arg}" for arg in (
                 sys.executable, "-c", "import pathlib, sys; pathlib.Path(sys.argv[1])"
                 ".open('a').write(sys.argv[2] + '\\n')", str(marker), "{node}"))]
    agent = launch_agent(hosts, tmp_path, "hv1", 0, "--console-publish-interval", "0.02",
                         *fence)
    peers = [launch_agent(hosts, tmp_path, name, 0, *fence) for name in ("hv2", "hv3")]
    try:
        for peer in peers:
            wait_agent_running(client, peer)
        wait_agent_running(client, agent)
        client.define_vm(vm_xml("web1"), "hv1", start=True)
        client.start_vm("web1", wait=True, timeout=20)
        log = log_of(agent, "web1")
        write(log, b"before the outage\n")
        uuid = client.get_vm("web1").uuid

        def running(data: bytes | None, stat: Any) -> dict[str, Any] | None:
            runtime = layout.decode(data, layout.VM_FIELDS)["runtime"] if data else {}
            return runtime if runtime.get("power_state") == "running" else None

        cpu_before = wait_on_znode(client.zk, layout.vm_path(uuid), running, 20,
                                   lambda: "web1 not running")["cpu_time_ns"]
        app = Dashboard(hosts, connect_timeout=2.0)
        async with app.run_test(size=(160, 40)) as pilot:
            await until(pilot, lambda: len(app.vm_table.items) == 1, what="first load")
            stop_zookeeper(server)
            went = time.monotonic()
            await until(pilot, lambda: app.facts.connection != "connected", what="outage shown")
            banner = str(app.main_screen.query_one("#banner").render())
            assert "ZooKeeper" in banner and "stale" in banner
            # the CLI fails fast and clearly
            began = time.monotonic()
            cli = pvc("--connect-timeout", "2", "vm", "list", zk=hosts)
            assert cli.returncode == 1 and "cannot reach ZooKeeper" in cli.stderr
            assert time.monotonic() - began < 15  # a bound on hanging, not a speed target
            for i in range(50):  # the guest keeps printing
                write(log, b"during the outage %d\n" % i)
            await pilot.pause(max(0.0, OUTAGE - (time.monotonic() - went)))
            assert agent.proc.poll() is None, agent.log_text()
            server = start_zookeeper(tmp_path / "zk", port=server.port, fast_unsafe=True)
            await until(pilot, lambda: app.facts.connection == "connected"
                        and app.facts.stale_since is None, timeout=60, what="live again")
            write(log, b"after the outage\n")
            await until(pilot, lambda: app.vm_table.items[uuid].power_state == "running",
                        timeout=30, what="web1 running in the dashboard")
            assert app.crashes == []
        with ClusterClient.connect(hosts, credentials=ROLE_CREDENTIALS["agent"]) as fresh:
            deadline = time.monotonic() + 30
            while True:  # the agent publishes what it kept once it is back
                kept = (console.tail(fresh, "web1") or ([], ""))[0]
                lines = [line.text for line in kept]
                if "after the outage" in lines:
                    break
                assert time.monotonic() < deadline, lines[-5:]
                time.sleep(0.2)
            assert [f"during the outage {i}" for i in range(50)] == \
                [t for t in lines if t.startswith("during")]
            assert lines.index("before the outage") < lines.index("during the outage 0")
            vm = fresh.get_vm("web1")
            assert vm.state == "start" and vm.power_state == "running"
            assert vm.runtime.cpu_time_ns >= cpu_before  # the same guest: never restarted
            assert not any(line.marker for line in kept), [ln.text for ln in kept if ln.marker]
            # nobody was declared dead or fenced for an outage of ZooKeeper itself
            time.sleep(4)  # past keepalive x fence_intervals (3 s) after the return
            assert not marker.exists(), marker.read_text()
            for node in fresh.list_nodes():
                assert node.daemon_state == "run" and not node.fence, (node.name, node.fence)
    finally:
        stop_agents([agent, *peers])
        client.close()
        stop_zookeeper(server)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def test_outage_longer_than_the_buffer_keeps_the_newest_lines(tmp_path: Path) -> None:
    """50 MB printed while ZooKeeper is away, with a 200-line buffer: the agent holds the
    newest 200 lines (its memory does not grow with what the guest prints), publishes them
    when ZooKeeper returns, and a reader sees the exact count of lines it missed."""
    from pvc_tui.sandbox.zookeeper import zookeeper_unavailable_reason


    require(zookeeper_unavailable_reason())
    server = start_zookeeper(tmp_path / "zk", fast_unsafe=True)
    hosts = new_chroot(server)
    client = ClusterClient.connect(hosts, credentials=ROLE_CREDENTIALS["agent"])
    agent = launch_agent(hosts, tmp_path, "hv1", 0, "--console-publish-interval", "0.02",
                         "--console-log-lines", "200")
    follower: Follower | None = None
    try:
        wait_agent_running(client, agent)
        client.define_vm(vm_xml("web1"), "hv1", start=True)
        client.start_vm("web1", wait=True, timeout=20)
        log = log_of(agent, "web1")
        follower = Follower(client, "web1", last=0)
        time.sleep(0.5)  # the follower's first read, before the lines below exist
        write(log, b"".join(b"before %d\n" % i for i in range(10)))
        follower.wait_for(lambda f: len(f.lines()) == 10)
        rss_before = _rss_kib(agent.proc.pid)
        stop_zookeeper(server)
        padding = b"x" * 990
        printed = 50_000
        for start in range(0, printed, 5_000):  # ~50 MB, in pieces as a guest would
            write(log, b"".join(b"during %05d %s\n" % (i, padding)
                                for i in range(start, start + 5_000)))
        time.sleep(3)  # the agent reads it all while ZooKeeper is still away
        grown_mib = (_rss_kib(agent.proc.pid) - rss_before) / 1024
        assert agent.proc.poll() is None, agent.log_text()
        server = start_zookeeper(tmp_path / "zk", port=server.port, fast_unsafe=True)
        follower.wait_for(lambda f: any(
            isinstance(e, ConsoleLine) and e.text.startswith(f"during {printed - 1:05d}")
            for e in f.events), timeout=60)
        write(log, b"after\n")
        follower.wait_for(lambda f: f.lines()[-1].text == "after", timeout=30)
        events = follower.events
        gaps = [e for e in events if isinstance(e, Gap)]
        during = [e.text.split()[1] for e in follower.lines() if e.text.startswith("during")]
        # the newest 200 lines arrive once each, in order, after one exact gap
        assert [g.missed for g in gaps] == [printed - 200], gaps
        assert during == [f"{i:05d}" for i in range(printed - 200, printed)]
        assert [e.text for e in follower.lines()][:10] == [f"before {i}" for i in range(10)]
        print(f"agent RSS grew {grown_mib:.1f} MiB while the guest printed 50 MB")
        assert grown_mib < 25, f"agent grew {grown_mib:.1f} MiB holding a 200-line buffer"
        assert client.get_vm("web1").power_state == "running"
    finally:
        if follower is not None:
            follower.close()
        stop_agents([agent])
        client.close()
        stop_zookeeper(server)
