"""Records written by a buggy or newer client: malformed, oversized, from a newer schema.

Neither the agent nor the dashboard nor the CLI may crash; each bad record is shown as
unreadable with its reason, and everything else keeps working.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pvc_tui.cluster import ClusterClient, layout
from pvc_tui.cluster.layout import VMState
from pvc_tui.tui.app import Dashboard
from pvc_tui.tui.unreadable import UnreadableScreen
from tests.conftest import AgentFactory, vm_xml
from tests.dashboard_helpers import until
from tests.test_cli import pvc

BAD_VM = "0badbad0-0000-4000-8000-0000000000{:02d}"


def write_broken_records(client: ClusterClient) -> dict[str, str]:
    """Bad records all over the tree; path -> the reason the reader should give."""
    future = {**layout.VM_FIELDS, "schema": 2, "name": "future1", "node": "hv1",
              "state": "start", "uuid": BAD_VM.format(3)}
    bad: dict[str, tuple[bytes, str]] = {
        layout.vm_path(BAD_VM.format(1)): (b"\xff{not json", "not JSON"),
        layout.vm_path(BAD_VM.format(2)): (json.dumps({"name": "x" * 300_000}).encode(),
                                           "exceeds"),
        layout.vm_path(BAD_VM.format(3)): (json.dumps(future).encode(), "newer pvc"),
        layout.vm_path(BAD_VM.format(4)): (b'{"name": 5, "node": "hv1"}', "should be str"),
        layout.node_path("hv9"): (b"[]", "not a JSON object"),
        layout.STORAGE_STATUS: (b'{"schema": 99}', "newer pvc"),
        layout.volume_path("rbd", "v1"): (b'{"size": "big"}', "should be int"),
    }
    for path, (data, _) in bad.items():
        client.zk.create(path, data, makepath=True)
    return {path: why for path, (_, why) in bad.items()}


async def test_broken_records_crash_nothing(client: ClusterClient, start_agent: AgentFactory,
                                            zk_hosts: str) -> None:
    agent = start_agent("hv1")
    client.define_vm(vm_xml("good1"), "hv1", start=True)
    client.wait_vm_state(client.get_vm("good1"), VMState.START, 20)
    expected = write_broken_records(client)

    # the agent carries on: a VM defined now is started
    client.define_vm(vm_xml("good2"), "hv1", start=True)
    client.wait_vm_state(client.get_vm("good2"), VMState.START, 20)
    assert agent.proc.poll() is None, agent.log_text()
    assert "Traceback" not in agent.log_text()

    # the CLI lists what it can read
    listed = pvc("vm", "list", "--format", "json", zk=zk_hosts)
    assert listed.returncode == 0, listed.stderr
    assert sorted(v["name"] for v in json.loads(listed.stdout)) == ["good1", "good2"]
    assert pvc("node", "list", zk=zk_hosts).returncode == 0

    # the dashboard shows each bad record with its reason, the rest as usual
    app = Dashboard(zk_hosts)
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, lambda: len(app.vm_table.items) == 2, what="good VMs")
        await until(pilot, lambda: len(app.invalid) == len(expected), what="unreadable")
        header = str(app.main_screen.query_one("#header").render())
        assert f"{len(expected)} unreadable records" in header
        await pilot.press("exclamation_mark")
        await until(pilot, lambda: isinstance(app.screen, UnreadableScreen), what="list")
        shown = str(app.screen.query_one("#unreadable").render())
        for path, why in expected.items():
            line = next((ln for ln in shown.splitlines() if ln.startswith(path)), "")
            assert why in line, (path, why, shown)
        await pilot.press("escape")
        # fixing a record makes it readable again, live
        client.zk.delete(layout.vm_path(BAD_VM.format(1)))
        await until(pilot, lambda: len(app.invalid) == len(expected) - 1, what="one fewer")
        assert app.crashes == []


def test_store_reports_reasons(client: ClusterClient) -> None:
    from pvc_tui.cluster import ClusterStore

    expected = write_broken_records(client)
    store = ClusterStore(client.zk)
    store.start()
    try:
        invalid: dict[str, Any] = dict(store.snapshot().invalid)
    finally:
        store.stop()
    assert set(invalid) == set(expected)
    for path, why in expected.items():
        assert why in invalid[path].reason


def test_agent_keeps_a_newer_clients_node_record(client: ClusterClient,
                                                  start_agent: AgentFactory) -> None:
    """A node record rewritten by a newer pvc is left as it is (its data is not lost to
    a fresh record of this schema); a malformed one is rewritten."""
    agent = start_agent("hv1")
    path = layout.node_path("hv1")
    newer = json.dumps({"schema": layout.SCHEMA_VERSION + 1, "name": "hv1",
                        "a_future_field": {"kept": True}}).encode()
    client.zk.set(path, newer)
    deadline = time.monotonic() + 15
    while "written by a newer pvc" not in agent.log_text():
        assert time.monotonic() < deadline, agent.log_text()
        time.sleep(0.1)
    time.sleep(2.5)  # two more keepalive intervals (1 s): it still does not overwrite it
    assert client.zk.get(path)[0] == newer
    assert agent.proc.poll() is None and "Traceback" not in agent.log_text()
    client.zk.set(path, b"{not json")
    deadline = time.monotonic() + 15
    while client.zk.get(path)[0] == b"{not json":  # the agent writes a valid one again
        assert time.monotonic() < deadline, agent.log_text()
        time.sleep(0.1)
    assert client.get_node("hv1").daemon_state == "run"
