"""SVG snapshots of every view and dialog, at a fixed size, on a fixed cluster.

The data comes from a real ZooKeeper (records written with fixed values, no agents, so
nothing moves). Update after an intended change with `pytest --snapshot-update`.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from textual.pilot import Pilot

from pvc_tui.cluster import ClusterClient
from pvc_tui.tui.app import Dashboard
from tests.dashboard_helpers import seed_cluster, seed_storage, until

SIZE = (130, 32)
SnapCompare = Callable[..., bool]


@pytest.fixture
def seeded(client: ClusterClient) -> ClusterClient:
    seed_cluster(client)
    return client


def prepare(*keys: str, then: Callable[[Dashboard], None] | None = None
            ) -> Callable[[Pilot[int]], Coroutine[Any, Any, None]]:
    """Wait for the first load, fix the header's address, press `keys`."""
    async def run_before(pilot: Pilot[int]) -> None:
        app = pilot.app
        assert isinstance(app, Dashboard)
        await until(pilot, lambda: len(app.vm_table.items) == 6
                    and len(app.node_table.items) == 3, what="first load")
        app.facts.address = "zk1.example:2181"  # the real one has a random port
        app._show_header()
        await pilot.pause(0.5)  # column widths settle on idle, after the first load
        if then is not None:
            then(app)
        await pilot.pause()
        await pilot.press(*keys)
        await pilot.pause(0.3)

    return run_before


def test_vm_view(snap_compare: SnapCompare, seeded: ClusterClient, zk_hosts: str) -> None:
    """The VM view with one row marked (space) and the cursor further down."""
    assert snap_compare(Dashboard(zk_hosts), terminal_size=SIZE,
                        run_before=prepare("space", "down"))


def test_node_view(snap_compare: SnapCompare, seeded: ClusterClient, zk_hosts: str) -> None:
    assert snap_compare(Dashboard(zk_hosts), terminal_size=SIZE, run_before=prepare("1"))


def test_vm_view_filtered_readonly(snap_compare: SnapCompare, seeded: ClusterClient,
                                   zk_hosts: str) -> None:
    """`:vm node=hv1` in a read-only dashboard: no mutating key in the footer."""
    assert snap_compare(Dashboard(zk_hosts, readonly=True), terminal_size=SIZE,
                        run_before=prepare("colon", *"vm node=hv1", "enter"))


def test_migrate_picker(snap_compare: SnapCompare, seeded: ClusterClient,
                        zk_hosts: str) -> None:
    """Valid targets with the selector's choice, and every other node with its reason."""
    def on_db1(app: Dashboard) -> None:
        app.vm_table.move_to("00000000-0000-4000-8000-000000000001")

    assert snap_compare(Dashboard(zk_hosts), terminal_size=SIZE,
                        run_before=prepare("m", then=on_db1))


def test_confirm_dialog(snap_compare: SnapCompare, seeded: ClusterClient,
                        zk_hosts: str) -> None:
    """Power off asks first; Cancel has the focus."""
    assert snap_compare(Dashboard(zk_hosts), terminal_size=SIZE, run_before=prepare("x"))


def test_flush_confirmation(snap_compare: SnapCompare, seeded: ClusterClient,
                            zk_hosts: str) -> None:
    """Flush is confirmed by typing the node's name."""
    assert snap_compare(Dashboard(zk_hosts), terminal_size=SIZE,
                        run_before=prepare("1", "f", "tab", *"hv"))


def test_vm_detail(snap_compare: SnapCompare, seeded: ClusterClient, zk_hosts: str) -> None:
    """Fields and the domain XML of the failed VM."""
    def on_cache1(app: Dashboard) -> None:
        app.vm_table.move_to("00000000-0000-4000-8000-000000000004")

    assert snap_compare(Dashboard(zk_hosts), terminal_size=SIZE,
                        run_before=prepare("enter", then=on_cache1))


def test_node_detail(snap_compare: SnapCompare, seeded: ClusterClient,
                     zk_hosts: str) -> None:
    """A flushed node: its last flush, VM by VM."""
    def on_hv3(app: Dashboard) -> None:
        app.node_table.move_to("hv3")

    assert snap_compare(Dashboard(zk_hosts), terminal_size=SIZE,
                        run_before=prepare("1", "enter", then=on_hv3))


@pytest.fixture
def seeded_storage(seeded: ClusterClient) -> ClusterClient:
    seed_storage(seeded)
    return seeded


def test_pool_view(snap_compare: SnapCompare, seeded_storage: ClusterClient,
                   zk_hosts: str) -> None:
    """Pools with usage bars (green, yellow past 70 %, red past 85 %); health and the
    noout flag in the header."""
    assert snap_compare(Dashboard(zk_hosts), terminal_size=SIZE, run_before=prepare("3"))


def test_volume_view(snap_compare: SnapCompare, seeded_storage: ClusterClient,
                     zk_hosts: str) -> None:
    """Volumes with used space, snapshots and a clone's parent."""
    assert snap_compare(Dashboard(zk_hosts), terminal_size=SIZE, run_before=prepare("4"))


def test_osd_view(snap_compare: SnapCompare, seeded_storage: ClusterClient,
                  zk_hosts: str) -> None:
    """OSDs: one down and out."""
    assert snap_compare(Dashboard(zk_hosts), terminal_size=SIZE, run_before=prepare("5"))


def test_volume_remove_confirmation(snap_compare: SnapCompare, seeded_storage: ClusterClient,
                                    zk_hosts: str) -> None:
    """Removing a volume asks for its name to be typed."""
    def on_db1_disk(app: Dashboard) -> None:
        app.volume_table.move_to("rbd/db1-disk0")

    assert snap_compare(Dashboard(zk_hosts), terminal_size=SIZE,
                        run_before=prepare("4", "D", then=on_db1_disk))
