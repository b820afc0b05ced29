"""A 3-server ZooKeeper ensemble whose leader is killed during a migration, a flush, a
storage request and a console follow: each completes or fails clearly, exactly once, and
the agents and the dashboard carry on."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from kazoo.exceptions import KazooException

from pvc_tui.cluster import ClusterClient, PvcError
from pvc_tui.cluster.console import ConsoleLine
from pvc_tui.sandbox.ceph import ceph_unavailable_reason, start_ceph, stop_ceph
from pvc_tui.sandbox.zookeeper import (
    Ensemble,
    start_ensemble,
    stop_zookeeper,
    zookeeper_unavailable_reason,
)
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
from tests.faults.test_agent_killed import settled_once
from tests.test_console import Follower, log_of, write


def kill_leader(ensemble: Ensemble) -> tuple[Ensemble, Any]:
    """SIGTERM the leader of the whole (healthy) ensemble; returns the ensemble and a
    function that restarts that server."""
    ensemble.wait_healthy()
    leader = ensemble.leader()
    assert leader is not None, "no leader"
    stop_zookeeper(leader)
    return ensemble, lambda: ensemble.restarted(leader)


async def test_leader_killed_during_operations(tmp_path: Path) -> None:
    require(zookeeper_unavailable_reason())
    require(ceph_unavailable_reason())
    ensemble = start_ensemble(tmp_path / "zk", 3, fast_unsafe=True)
    ceph = start_ceph(tmp_path / "ceph", osds=1)
    hosts = new_chroot(ensemble)  # type: ignore[arg-type]
    client = ClusterClient.connect(hosts, timeout=10, credentials=ROLE_CREDENTIALS["agent"])
    agents = [launch_agent(hosts, tmp_path, name, 0, "--ceph-conf", str(ceph.conf),
                           "--console-publish-interval", "0.02")
              for name in ("hv1", "hv2", "hv3")]
    follower: Follower | None = None
    try:
        for agent in agents:
            wait_agent_running(client, agent, timeout=40)
        names = ["web1", "db1", "db2", "db3"]
        client.define_vm(vm_xml("web1"), "hv1", start=True)
        for name in names[1:]:
            client.define_vm(vm_xml(name), "hv2", start=True)
        settled_once(client, names)
        log = log_of(agents[0], "web1")
        follower = Follower(client, "web1", last=0)
        written = 0

        def say(count: int) -> None:
            nonlocal written
            for _ in range(count):
                write(log, b"line %d\n" % written)
                written += 1

        say(20)
        app = Dashboard(hosts, connect_timeout=5.0)
        async with app.run_test(size=(160, 40)) as pilot:
            await until(pilot, lambda: len(app.vm_table.items) == 4, what="first load")

            # 1. the leader dies during a migration
            began = time.monotonic()
            client.migrate_vm("web1", target="hv3")
            ensemble, restart = kill_leader(ensemble)
            settled_once(client, names, timeout=60)
            moved = client.get_vm("web1")
            assert client.get_vm("web1").node == "hv3", moved
            print(f"migration with the leader killed: {time.monotonic() - began:.1f} s")
            ensemble = restart()
            log = log_of(agents[2], "web1")  # its console log is on its new node
            follower.wait_for(lambda f: any(line.marker and "hv3" in line.text
                                            for line in f.lines()), timeout=30)
            first = written
            say(20)

            # 2. ... during a flush
            began = time.monotonic()
            client.flush_node("hv2")
            ensemble, restart = kill_leader(ensemble)
            say(20)
            deadline = time.monotonic() + 90
            while True:
                try:
                    if client.get_node("hv2").domain_state == "flushed":
                        break
                except KazooException:
                    pass  # the leader change under way
                assert time.monotonic() < deadline, "the flush never finished"
                time.sleep(0.2)
            settled_once(client, names, timeout=60)
            assert all(client.get_vm(n).node != "hv2" for n in names)
            print(f"flush with the leader killed: {time.monotonic() - began:.1f} s")
            ensemble = restart()

            # 3. ... during a storage request: a result or a clear failure, exactly once
            outcome: dict[str, Any] = {}

            def request() -> None:
                try:
                    outcome["volume"] = client.storage.volumes.add("rbd", "during", 8 << 20)
                except PvcError as exc:
                    outcome["error"] = str(exc)

            began = time.monotonic()
            thread = threading.Thread(target=request)
            thread.start()
            ensemble, restart = kill_leader(ensemble)
            thread.join(timeout=150)
            print(f"storage request with the leader killed: {time.monotonic() - began:.1f} s,"
                  f" {outcome}")
            assert not thread.is_alive(), "the storage request hung"
            client.storage.claim_timeout = 30.0  # the primary may be re-elected meanwhile
            began = time.monotonic()
            count = [v.name for v in client.storage.volumes.list("rbd")].count("during")
            print(f"next storage request served after {time.monotonic() - began:.1f} s")
            if "volume" in outcome:
                assert count == 1
            else:  # a clear failure: withdrawn (nothing done) or outcome unknown (done once)
                assert "storage volume add" in outcome["error"] and count <= 1, outcome
            ensemble = restart()

            # the dashboard carried on, and is live
            await until(pilot, lambda: app.facts.connection == "connected"
                        and app.vm_table.items[client.get_vm("web1").uuid].node == "hv3",
                        timeout=30, what="dashboard live")
            assert app.crashes == []

        # 4. the console follow saw every line exactly once, in order
        say(1)
        follower.wait_for(lambda f: any(isinstance(e, ConsoleLine) and e.text ==
                                        f"line {written - 1}" for e in f.events), timeout=30)
        texts = [line.text for line in follower.lines() if not line.marker]
        after = texts[texts.index(f"line {first}"):]
        assert after == [f"line {i}" for i in range(first, written)], after[-10:]
        assert len(set(texts)) == len(texts)  # nothing twice, through every leader change
        for agent in agents:
            assert agent.proc.poll() is None, agent.log_text()[-2000:]
    finally:
        if follower is not None:
            follower.close()
        stop_agents(agents)
        client.close()
        stop_ceph(ceph)
        for server in ensemble.servers:
            stop_zookeeper(server)


def test_sandbox_runs_an_ensemble(tmp_path: Path) -> None:
    """`demo up --zk-servers 3`: the cluster works through a dead server; `up` restarts it;
    `down` ends every server."""
    import json

    from pvc_tui.sandbox.processes import ProcessRef, is_running
    from tests.test_demo import demo

    require(zookeeper_unavailable_reason())
    state = tmp_path / "sandbox"
    try:
        up = demo(state, "demo", "up", "--driver", "test", "--zk-servers", "3", "--no-ceph",
                  "--nodes", "1")
        assert up.returncode == 0, up.stderr
        status = json.loads(demo(state, "demo", "status").stdout)
        assert status["zk_servers"] == 3 and status["zk"].count(",") == 2
        before = json.loads(demo(state, "vm", "list", "--format", "json").stdout)
        raw = json.loads((state / "sandbox.json").read_text())
        servers = [ProcessRef(**raw["zk_process"])] + [ProcessRef(p[0], p[1])
                                                          for p in raw["zk_peers"]]
        os.kill(servers[0].pid, signal.SIGKILL)
        listed = demo(state, "vm", "list", "--format", "json")
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout) and len(json.loads(listed.stdout)) == len(before)
        again = demo(state, "demo", "up")
        assert again.returncode == 0, again.stderr
        assert json.loads(demo(state, "demo", "status").stdout)["zk_running"]
        refused = demo(state, "demo", "up", "--zk-servers", "1")
        assert refused.returncode == 2 and "demo down" in refused.stderr
        raw = json.loads((state / "sandbox.json").read_text())
        servers = [ProcessRef(**raw["zk_process"])] + [ProcessRef(p[0], p[1])
                                                          for p in raw["zk_peers"]]
    finally:
        demo(state, "demo", "down")
    assert not any(is_running(s) for s in servers)


def test_reads_ride_through_a_leader_change(tmp_path: Path) -> None:
    """Reads in flight when the leader dies are sent again: a library client (the CLI's and
    the dashboard's) reading in a loop never sees the leader change; with every server
    gone, a read fails within its deadline instead of waiting forever."""
    from tests.dashboard_helpers import seed_cluster

    require(zookeeper_unavailable_reason())
    ensemble = start_ensemble(tmp_path / "zk", 3, fast_unsafe=True)
    hosts = new_chroot(ensemble)  # type: ignore[arg-type]
    client = ClusterClient.connect(hosts, timeout=5, credentials=ROLE_CREDENTIALS["agent"])
    reads, failures = 0, []
    stop = threading.Event()

    def read_loop() -> None:
        nonlocal reads
        while not stop.is_set():
            try:
                assert len(client.list_vms()) == 6 and client.get_node("hv3").name == "hv3"
                reads += 1
            except Exception as exc:  # each one is the test's finding
                failures.append(repr(exc))
    try:
        seed_cluster(client)
        thread = threading.Thread(target=read_loop, daemon=True)
        thread.start()
        for _ in range(2):  # two leader changes, each while reads are in flight
            time.sleep(0.5)
            ensemble, restart = kill_leader(ensemble)
            before = reads
            deadline = time.monotonic() + 30
            while reads < before + 20:  # reads resumed on the new leader
                assert time.monotonic() < deadline and not failures, failures
                time.sleep(0.05)
            ensemble = restart()
        stop.set()
        thread.join(timeout=15)
        assert failures == [], failures
        print(f"{reads} reads across two leader changes, none failed")
        for server in ensemble.servers:
            stop_zookeeper(server)
        began = time.monotonic()
        try:
            client.list_vms()
            raise AssertionError("a read answered with every server gone")
        except KazooException as exc:
            took = time.monotonic() - began
            assert "did not answer within 10 s" in str(exc) or "ConnectionLoss" in repr(exc)
        assert took < 15, took  # a bound on hanging, not a speed target
    finally:
        stop.set()
        client.close()
        for server in ensemble.servers:
            stop_zookeeper(server)
