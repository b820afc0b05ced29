"""The tiny real Ceph the sandbox and the storage tests run on."""

from __future__ import annotations

import json
import time
from pathlib import Path

from pvc_tui.sandbox.ceph import ceph_unavailable_reason, start_ceph, stop_ceph
from pvc_tui.sandbox.processes import is_running
from tests.conftest import require


def test_tiny_ceph_serves_rbd_and_reports_usage_then_vanishes(tmp_path: Path) -> None:
    require(ceph_unavailable_reason())
    import rados
    import rbd

    ceph = start_ceph(tmp_path / "ceph", osds=2)
    try:
        cluster = rados.Rados(conffile=str(ceph.conf))
        cluster.connect(timeout=10)
        try:
            _, out, _ = cluster.mon_command(json.dumps({"prefix": "osd stat",
                                                        "format": "json"}), b"", timeout=10)
            assert json.loads(out)["num_up_osds"] == 2
            with cluster.open_ioctx("rbd") as ioctx:
                rbd.RBD().create(ioctx, "vol1", 64 << 20)
                assert rbd.RBD().list(ioctx) == ["vol1"]
                with rbd.Image(ioctx, "vol1") as image:
                    image.write(b"x" * (4 << 20), 0)
            deadline = time.monotonic() + 20  # the mgr reports usage every second
            stored = 0
            while stored < (4 << 20) and time.monotonic() < deadline:
                _, out, _ = cluster.mon_command(json.dumps({"prefix": "df",
                                                            "format": "json"}), b"", timeout=10)
                pools = {p["name"]: p["stats"] for p in json.loads(out)["pools"]}
                stored = pools.get("rbd", {}).get("stored", 0)  # listed after ~1 s
                time.sleep(0.2)
            assert stored >= 4 << 20
        finally:
            cluster.shutdown()
    finally:
        stop_ceph(ceph)
    assert not any(is_running(p) for p in ceph.processes)
    assert not (tmp_path / "ceph").exists()
