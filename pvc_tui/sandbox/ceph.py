"""A tiny real Ceph for the sandbox and the tests: 1 mon, 1 mgr, 1-3 memstore OSDs.

Everything binds to 127.0.0.1 on private ports and lives in one directory, via
`-c DIR/ceph.conf`; no systemd, no cephadm. Daemons run in the foreground as our own
children and are ended by PID. Setup talks to the mon through librados (a `ceph` CLI
call costs 150-180 ms to spawn; a mon_command well under 1 ms).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pvc_tui.sandbox.processes import ProcessRef, spawn, terminate
from pvc_tui.sandbox.zookeeper import free_port_block

CEPH_BINARIES = ("ceph-mon", "ceph-mgr", "ceph-osd", "ceph-authtool", "monmaptool")
PORT_SPAN = 60  # ports per cluster for the daemons' messengers
MEMSTORE_BYTES = 1 << 30


class CephError(RuntimeError):
    """The tiny Ceph could not be started."""


@dataclass
class CephCluster:
    """A running tiny Ceph: where its config is, and the processes we started."""

    state_dir: Path
    fsid: str
    mon_port: int
    processes: list[ProcessRef] = field(default_factory=list)

    @property
    def conf(self) -> Path:
        """The ceph.conf clients use."""
        return self.state_dir / "ceph.conf"

    @property
    def keyring(self) -> Path:
        """The client.admin keyring."""
        return self.state_dir / "client.admin.keyring"

    def to_dict(self) -> dict[str, Any]:
        """For the sandbox's state file."""
        return {"state_dir": str(self.state_dir), "fsid": self.fsid,
                "mon_port": self.mon_port,
                "processes": [[p.pid, p.start_time] for p in self.processes]}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CephCluster:
        """From the sandbox's state file."""
        return cls(Path(raw["state_dir"]), raw["fsid"], raw["mon_port"],
                   [ProcessRef(int(p[0]), int(p[1])) for p in raw["processes"]])


def ceph_unavailable_reason() -> str | None:
    """Why a tiny Ceph cannot run here, or None."""
    missing = [b for b in CEPH_BINARIES if shutil.which(b) is None]
    if missing:
        return f"Ceph is not installed ({', '.join(missing)} missing): run scripts/bootstrap"
    try:
        import rados  # noqa: F401
    except ImportError:
        return "Ceph's Python bindings (python3-rados) are not importable: run scripts/bootstrap"
    return None


def _conf_text(d: Path, fsid: str, mon_port: int, port_min: int) -> str:
    return f"""[global]
fsid = {fsid}
mon_initial_members = a
mon_host = [v2:127.0.0.1:{mon_port},v1:127.0.0.1:{mon_port + 1}]
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
ms_bind_ipv4 = true
ms_bind_ipv6 = false
ms_bind_port_min = {port_min}
ms_bind_port_max = {port_min + PORT_SPAN - 1}
run_dir = {d}/run
crash_dir = {d}/crash
pid_file = {d}/run/$name.pid
admin_socket = {d}/run/$name.asok
log_file = {d}/log/$name.log
mon_data = {d}/mon/$name
osd_data = {d}/osd/$name
mgr_data = {d}/mgr/$name
osd_objectstore = memstore
memstore_device_bytes = {MEMSTORE_BYTES}
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pg_autoscale_mode = off
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
mon_warn_on_pool_no_redundancy = false
osd_crush_chooseleaf_type = 0
mgr_stats_period = 1
mon_mgr_digest_period = 1
paxos_propose_interval = 0.1
auth_allow_insecure_global_id_reclaim = false
mon_warn_on_insecure_global_id_reclaim_allowed = false
mon_data_avail_warn = 2
rados_mon_op_timeout = 10
rados_osd_op_timeout = 10
client_mount_timeout = 10

[client]
keyring = {d}/client.admin.keyring

[mgr]
keyring = $mgr_data/keyring

[osd]
keyring = $osd_data/keyring
"""


def _run(argv: list[str], stdin: str | None = None) -> str:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise CephError(f"{argv[0]} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def _mon_command(cluster: Any, command: dict[str, Any], inbuf: bytes = b"") -> str:
    ret, out, err = cluster.mon_command(json.dumps(command), inbuf, timeout=10)
    if ret != 0:
        raise CephError(f"{command['prefix']} failed: {err or ret}")
    return bytes(out).decode()


def start_ceph(state_dir: Path, osds: int = 1, timeout: float = 60.0) -> CephCluster:
    """Create and start a tiny Ceph in an empty `state_dir`; returns once an `rbd`
    pool is usable. On failure everything started is ended."""
    reason = ceph_unavailable_reason()
    if reason:
        raise CephError(reason)
    import rados

    d = state_dir.resolve()
    for sub in ("run", "crash", "log", "mon", "osd", "mgr"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    # fixed ports: the mon's two, then a range for the mgr's and OSDs' messengers
    base = free_port_block(2 + PORT_SPAN)
    fsid, mon_port, port_min = str(uuid.uuid4()), base, base + 2
    ceph = CephCluster(d, fsid, mon_port)
    ceph.conf.write_text(_conf_text(d, fsid, mon_port, port_min))
    conf = ["-c", str(ceph.conf)]
    try:
        mon_keyring = d / "mon.keyring"
        _run(["ceph-authtool", "--create-keyring", str(mon_keyring), "--gen-key", "-n", "mon.",
              "--cap", "mon", "allow *"])
        _run(["ceph-authtool", "--create-keyring", str(ceph.keyring), "--gen-key", "-n",
              "client.admin", "--cap", "mon", "allow *", "--cap", "osd", "allow *",
              "--cap", "mds", "allow *", "--cap", "mgr", "allow *"])
        _run(["ceph-authtool", str(mon_keyring), "--import-keyring", str(ceph.keyring)])
        _run(["monmaptool", "--create", "--fsid", fsid, "--addv", "a",
              f"[v2:127.0.0.1:{mon_port},v1:127.0.0.1:{mon_port + 1}]", str(d / "monmap")])
        _run(["ceph-mon", *conf, "--mkfs", "-i", "a", "--monmap", str(d / "monmap"),
              "--keyring", str(mon_keyring)])
        ceph.processes.append(spawn(["ceph-mon", *conf, "-i", "a", "-f"],
                                    d / "log" / "mon.a.out")[0])
        cluster = rados.Rados(conffile=str(ceph.conf))
        try:
            cluster.connect(timeout=int(timeout))
        except rados.Error as exc:
            log = (d / "log" / "mon.a.out").read_text(errors="replace").strip().splitlines()
            raise CephError(f"the tiny Ceph's mon did not answer ({exc}); its last output: "
                            f"{log[-1] if log else 'none'}") from None
        try:
            _mon_command(cluster, {"prefix": "config set", "who": "mgr",
                                   "name": "mgr/devicehealth/enable_monitoring",
                                   "value": "false", "force": True})
            mgr_dir = d / "mgr" / "mgr.x"
            mgr_dir.mkdir(parents=True, exist_ok=True)
            key = _mon_command(cluster, {"prefix": "auth get-or-create", "entity": "mgr.x",
                                         "caps": ["mon", "allow profile mgr", "osd", "allow *",
                                                  "mds", "allow *"], "format": "plain"})
            (mgr_dir / "keyring").write_text(key)
            ceph.processes.append(spawn(["ceph-mgr", *conf, "-i", "x", "-f"],
                                        d / "log" / "mgr.x.out")[0])
            for _ in range(osds):
                _start_osd(cluster, ceph, conf)
            _wait_osds_up(cluster, osds, timeout)
            _mon_command(cluster, {"prefix": "osd pool create", "pool": "rbd", "pg_num": 8})
            _mon_command(cluster, {"prefix": "osd pool application enable", "pool": "rbd",
                                   "app": "rbd"})
        finally:
            cluster.shutdown()
    except BaseException:
        stop_ceph(ceph)
        raise
    return ceph


def _start_osd(cluster: Any, ceph: CephCluster, conf: list[str]) -> None:
    osd_uuid = str(uuid.uuid4())
    secret = _run(["ceph-authtool", "--gen-print-key"]).strip()
    out = _mon_command(cluster, {"prefix": "osd new", "uuid": osd_uuid, "format": "json"},
                       json.dumps({"cephx_secret": secret}).encode())
    osd_id = int(json.loads(out)["osdid"])
    data = ceph.state_dir / "osd" / f"osd.{osd_id}"
    data.mkdir(parents=True, exist_ok=True)
    _run(["ceph-authtool", "--create-keyring", str(data / "keyring"), "--name",
          f"osd.{osd_id}", "--add-key", secret])
    _run(["ceph-osd", *conf, "-i", str(osd_id), "--mkfs", "--osd-uuid", osd_uuid])
    ceph.processes.append(spawn(["ceph-osd", *conf, "-i", str(osd_id), "-f"],
                                ceph.state_dir / "log" / f"osd.{osd_id}.out")[0])


def _wait_osds_up(cluster: Any, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stat = json.loads(_mon_command(cluster, {"prefix": "osd stat", "format": "json"}))
        if stat.get("num_up_osds") == count and stat.get("num_in_osds") == count:
            return
        time.sleep(0.1)  # OSDs booting offer no event to wait on through librados
    raise CephError(f"{count} OSDs did not come up within {timeout:g} s")


def stop_ceph(ceph: CephCluster, remove: bool = True) -> None:
    """End the daemons we started (by PID) and, by default, remove the state."""
    terminate(list(reversed(ceph.processes)), timeout=1.0)  # its state is thrown away
    if remove:
        shutil.rmtree(ceph.state_dir, ignore_errors=True)
