"""Screenshots of the dashboard on a real sandbox cluster (QEMU guests where possible).

Brings up its own sandbox in a temporary state directory, drives the dashboard with
Textual's Pilot, saves SVGs and converts them to PNG with rsvg-convert, then takes the
sandbox down. Run with `make screenshots`; the README shows the results.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from textual.pilot import Pilot

from pvc_tui.cluster import ClusterClient
from pvc_tui.cluster.auth import Credentials
from pvc_tui.sandbox import demo
from pvc_tui.tui.app import Dashboard
from pvc_tui.tui.progress import DomainProgressScreen

OUT = Path(__file__).resolve().parent.parent / "screenshots"
SIZE = (150, 38)


async def until(pilot: Pilot[int], check: Callable[[], object], timeout: float,
                what: str) -> None:
    """Let the app run until `check()` holds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"screenshots: timed out waiting for {what}")
        await pilot.pause(0.1)


def shoot(app: Dashboard, name: str) -> None:
    """Save `name`.svg and convert it to `name`.png."""
    svg = OUT / f"{name}.svg"
    app.save_screenshot(filename=svg.name, path=str(OUT))
    # rsvg drops the leading (non-breaking) spaces of each text run unless told to keep
    # whitespace; browsers keep them either way
    svg.write_text(svg.read_text().replace("<svg ", '<svg xml:space="preserve" ', 1))
    subprocess.run(["rsvg-convert", "-w", "1600", str(svg), "-o", str(OUT / f"{name}.png")],
                   check=True)
    print(f"screenshots: {svg.with_suffix('.png')}", file=sys.stderr)


async def drive(hosts: str, client: ClusterClient, ceph_conf: Path,
                credentials: Credentials) -> None:
    """Visit each view and dialog."""
    app = Dashboard(hosts, credentials=credentials)
    async with app.run_test(size=SIZE) as pilot:
        count = len(client.list_vms())
        await until(pilot, lambda: len(app.vm_table.items) == count, 30, "first load")
        await pilot.press("1")
        await pilot.pause(0.5)
        shoot(app, "node-view")
        await pilot.press("2")
        web1 = client.get_vm("web1")
        app.vm_table.move_to(web1.uuid)
        await pilot.pause(0.3)
        shoot(app, "vm-view")
        await pilot.press("m")
        await pilot.pause(0.5)
        shoot(app, "migrate-picker")
        await pilot.press("escape")
        client.restart_vm("web1")  # so the console pane shows a guest booting
        await pilot.press("c")
        view = app.console_pane.view
        await until(pilot, lambda: "Linux version" in view.text(), 60, "web1 booting")
        await until(pilot, lambda: "mem free" in view.text(), 90, "web1 booted")
        await pilot.pause(1.0)
        shoot(app, "console-pane")
        await pilot.press("escape")
        await pilot.press("1")
        app.node_table.move_to("hv1")
        await pilot.press("f", "tab", *"hv1", "enter")
        await until(pilot, lambda: isinstance(app.screen, DomainProgressScreen), 10, "flush")
        screen = app.screen
        assert isinstance(screen, DomainProgressScreen)
        await until(pilot, lambda: screen.outcome is not None, 180, "flush to finish")
        await pilot.pause(0.5)
        shoot(app, "flush-progress")
        await pilot.press("escape")
        await storage_views(app, pilot, client, ceph_conf)
    client.ready_node("hv1", wait=True, timeout=180)


async def storage_views(app: Dashboard, pilot: Pilot[int], client: ClusterClient,
                        ceph_conf: Path) -> None:
    """Pools and volumes on the sandbox's real tiny Ceph, with some data written."""
    storage = client.storage
    storage.pools.add("backup", pgs=16)
    for name, size in (("web1-disk0", 10 << 30), ("db1-disk0", 40 << 30)):
        storage.volumes.add("rbd", name, size)
    storage.snapshots.add("rbd", "web1-disk0", "base")
    storage.volumes.clone("rbd", "web1-disk0", "web2-disk0", snapshot="base")
    storage.volumes.add("backup", "db1-nightly", 40 << 30)
    write_data(ceph_conf, [("rbd", "web1-disk0", 160), ("backup", "db1-nightly", 320)])
    await until(pilot, lambda: "rbd/web2-disk0" in app.volume_table.items, 30, "volumes")
    await until(pilot, lambda: getattr(app.pool_table.items.get("backup"), "stored", 0)
                >= 320 << 20, 60, "backup pool stats")
    await pilot.press("3")
    await pilot.pause(0.5)
    shoot(app, "pool-view")
    await pilot.press("4")
    app.volume_table.move_to("rbd/web2-disk0")
    await pilot.pause(0.5)
    shoot(app, "volume-view")


def write_data(ceph_conf: Path, writes: list[tuple[str, str, int]]) -> None:
    """Write MiB of data into volumes through librbd, as a guest would."""
    import rados
    import rbd

    cluster = rados.Rados(conffile=str(ceph_conf))
    cluster.connect(timeout=10)
    try:
        for pool, volume, mib in writes:
            with cluster.open_ioctx(pool) as ioctx, rbd.Image(ioctx, volume) as image:
                for i in range(mib // 4):
                    image.write(bytes([i % 251]) * (4 << 20), i * (4 << 20))
    finally:
        cluster.shutdown()


def main() -> int:
    """Bring a sandbox up, take the screenshots, bring it down."""
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pvc-screenshots-") as tmp:
        state_dir = Path(tmp)
        sandbox = demo.up(state_dir, nodes=3,
                          progress=lambda m: print(f"sandbox: {m}", file=sys.stderr))
        try:
            with ClusterClient.connect(sandbox.zk, credentials=sandbox.operator()) as client:
                assert sandbox.ceph is not None, "the screenshots need the tiny Ceph"
                conf = Path(sandbox.ceph["state_dir"]) / "ceph.conf"
                asyncio.run(drive(sandbox.zk, client, conf, sandbox.operator()))
        finally:
            demo.down(state_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
