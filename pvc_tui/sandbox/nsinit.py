"""Entry point run by ``unshare -m -u --propagation private`` for one sandbox hypervisor node.

Inside the fresh mount and UTS namespaces it bind-mounts the node's own directories over
libvirt's system paths, sets the host name, then starts ``virtlogd -d`` and
``libvirtd --listen -d`` (both fork into the background and report readiness before their
parent exits). It then stays as the node's child subreaper: the daemons and the QEMU processes
libvirtd double-forks are re-parented to it, and it reaps them (on machines whose PID 1 does
not reap orphans they would otherwise stay zombies). It exits when its last child has gone;
the node's mount namespace disappears with it. On SIGTERM it SIGKILLs its remaining children.

Usage: ``python nsinit.py NODE_DIR NAME`` (standard library only; no shell involved).
:func:`prepare_node_dir` (run on the host beforehand) creates the node's directory layout and
libvirt configuration.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import FrameType

# (directory under NODE_DIR, system path it is mounted over)
BIND_MOUNTS: tuple[tuple[str, str], ...] = (
    ("run/libvirt", "/run/libvirt"),
    ("lib/libvirt", "/var/lib/libvirt"),
    ("cache/libvirt", "/var/cache/libvirt"),
    ("log/libvirt", "/var/log/libvirt"),
    ("etc/libvirt", "/etc/libvirt"),
)

PID_DIR = "pids"
VIRTLOGD_PIDFILE = "virtlogd.pid"
LIBVIRTD_PIDFILE = "libvirtd.pid"
NSINIT_PIDFILE = "nsinit.pid"
MNTNS_FILE = "mntns"
READY_FILE = "ready"

_PR_SET_CHILD_SUBREAPER = 36
_LIBVIRT_DIRS = ("/var/lib/libvirt", "/var/cache/libvirt", "/var/log/libvirt", "/etc/libvirt")
_MIGRATION_PORT_BASE = 49152
_MIGRATION_PORTS_PER_NODE = 64
_UUID_NAMESPACE = uuid.UUID("5d2f8f0e-2b7c-4d1e-9a57-7a1c3c0e9b11")


# --- on the host: the node's directory and configuration --------------------------------


def node_ip(index: int) -> str:
    """The loopback address of node ``index`` (libvirtd TCP, migrations)."""
    return f"127.0.0.{10 + index}"


def _conf_str(value: str) -> str:
    """A libvirt config-file string literal."""
    if any(ch in value for ch in '"\\\n'):
        raise ValueError(f"unsupported character in config value {value!r}")
    return f'"{value}"'


def _libvirtd_conf(node_dir: Path, name: str, index: int) -> str:
    host_uuid = uuid.uuid5(_UUID_NAMESPACE, f"{node_dir}\0{name}")
    return "\n".join(
        [
            "# Written by pvc_tui.sandbox.qemu for one sandbox hypervisor node.",
            f"host_uuid = {_conf_str(str(host_uuid))}",
            "listen_tls = 0",
            "listen_tcp = 1",
            'auth_tcp = "none"',
            f"listen_addr = {_conf_str(node_ip(index))}",
            'unix_sock_rw_perms = "0700"',
            'unix_sock_ro_perms = "0700"',
            'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"',
            "",
        ]
    )


def _qemu_conf(index: int) -> str:
    low = _MIGRATION_PORT_BASE + (index - 1) * _MIGRATION_PORTS_PER_NODE
    ip = node_ip(index)
    return "\n".join(
        [
            "# Written by pvc_tui.sandbox.qemu for one sandbox hypervisor node.",
            'user = "root"',
            'group = "root"',
            'security_driver = "none"',
            "dynamic_ownership = 0",
            "namespaces = [ ]",
            "remember_owner = 0",
            f"migration_address = {_conf_str(ip)}",
            f"migration_host = {_conf_str(ip)}",
            f"migration_port_min = {low}",
            f"migration_port_max = {low + _MIGRATION_PORTS_PER_NODE - 1}",
            "",
        ]
    )


def _virtlogd_conf() -> str:
    return 'log_outputs = "3:file:/var/log/libvirt/virtlogd.log"\n'


def _copy_config(etc: Path) -> None:
    def ignore(directory: str, names: list[str]) -> list[str]:
        # No host guests, networks to autostart or hooks leak into a sandbox node.
        rel = Path(directory).relative_to("/etc/libvirt")
        skipped = {"autostart", "hooks"} & set(names)
        if rel == Path("qemu"):
            skipped |= {n for n in names if n.endswith(".xml")}
        return sorted(skipped)

    shutil.copytree("/etc/libvirt", etc, ignore=ignore, dirs_exist_ok=True, symlinks=True)


def _seed_capabilities(node_dir: Path) -> None:
    """Copy a sibling node's QEMU capabilities cache: saves the first-use probe (1.4-8 s)."""
    mine = node_dir / "cache/libvirt/qemu/capabilities"
    if any(mine.glob("*.xml")):
        return
    for sibling in sorted(node_dir.parent.glob("*/cache/libvirt/qemu/capabilities")):
        cached = sorted(sibling.glob("*.xml"))
        if sibling != mine and cached:
            mine.mkdir(parents=True, exist_ok=True)
            for xml in cached:
                shutil.copy2(xml, mine / xml.name)
            return


def prepare_node_dir(node_dir: Path, name: str, index: int) -> None:
    """Create the node's directories and write its libvirt configuration (run on the host)."""
    for sub, _target in BIND_MOUNTS:
        (node_dir / sub).mkdir(parents=True, exist_ok=True)
    for sub in (PID_DIR, "console"):
        (node_dir / sub).mkdir(parents=True, exist_ok=True)
    for stale in (
        VIRTLOGD_PIDFILE,
        LIBVIRTD_PIDFILE,
        NSINIT_PIDFILE,
        MNTNS_FILE,
        READY_FILE,
    ):
        (node_dir / PID_DIR / stale).unlink(missing_ok=True)
    etc = node_dir / "etc/libvirt"
    _copy_config(etc)
    (etc / "libvirtd.conf").write_text(_libvirtd_conf(node_dir, name, index))
    (etc / "qemu.conf").write_text(_qemu_conf(index))
    (etc / "virtlogd.conf").write_text(_virtlogd_conf())
    _seed_capabilities(node_dir)
    # Mount points on the real system (an empty /run/libvirt, libvirt's own directories).
    Path("/run/libvirt").mkdir(mode=0o755, exist_ok=True)
    for path in _LIBVIRT_DIRS:
        Path(path).mkdir(parents=True, exist_ok=True)


# --- inside the node's namespaces ---------------------------------------------------------


def _run(args: list[str]) -> None:
    proc = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"nsinit: {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")


def _wait_for(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"nsinit: {path} did not appear within {timeout} s")
        time.sleep(0.02)  # a daemon's pid file has no event: bounded poll


def _children() -> list[int]:
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(raw[raw.rindex(")") + 2 :].split()[1]) == me:
            found.append(int(entry))
    return found


def _kill_children(signum: int, frame: FrameType | None) -> None:
    for pid in _children():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _reap_until_alone() -> None:
    while True:
        try:
            os.wait()
        except ChildProcessError:
            return
        except InterruptedError:  # pragma: no cover - PEP 475 retries, kept for clarity
            continue


def _setup(node_dir: Path, name: str, pids: Path) -> None:
    for sub, target in BIND_MOUNTS:
        _run(["mount", "--bind", str(node_dir / sub), target])
    _run(["hostname", name])
    (pids / MNTNS_FILE).write_text(os.readlink("/proc/self/ns/mnt") + "\n")
    _run(["virtlogd", "-d", "-p", str(pids / VIRTLOGD_PIDFILE)])
    _wait_for(Path("/run/libvirt/virtlogd-sock"), 10.0)
    _run(["libvirtd", "--listen", "-d", "-p", str(pids / LIBVIRTD_PIDFILE)])
    _wait_for(pids / LIBVIRTD_PIDFILE, 10.0)
    (pids / READY_FILE).write_text("ready\n")


def main(argv: list[str]) -> int:
    """Mount, name and start the daemons of one node, then reap until they are all gone."""
    if len(argv) != 2:
        print("usage: nsinit.py NODE_DIR NAME", file=sys.stderr)
        return 2
    node_dir = Path(argv[0])
    name = argv[1]
    pids = node_dir / PID_DIR
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print(f"nsinit: PR_SET_CHILD_SUBREAPER failed: errno {ctypes.get_errno()}")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _kill_children)
    (pids / NSINIT_PIDFILE).write_text(f"{os.getpid()}\n")
    try:
        _setup(node_dir, name, pids)
    except BaseException:
        # Do not leave a half-started node behind: end (and reap) what was already started.
        _kill_children(signal.SIGTERM, None)
        _reap_until_alone()
        raise
    print(f"nsinit: node {name} up", flush=True)
    _reap_until_alone()
    print(f"nsinit: node {name} down", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
