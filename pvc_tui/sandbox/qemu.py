"""Real QEMU hypervisor nodes for tests and demos: one libvirtd per node on one machine.

Each node runs ``virtlogd`` and ``libvirtd`` in its own mount + UTS namespace
(``unshare -m -u --propagation private``) with its own directories bind-mounted over
/run/libvirt, /var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt and /etc/libvirt, and its
own host name, host UUID, TCP listen address (127.0.0.(10+index)) and migration ports, so that
live migration between nodes works. Guests are tiny (see :mod:`pvc_tui.sandbox.guest_image`)
and run under software emulation (``<domain type='qemu'>``).

Requires root. Everything a node creates lives under its ``node_dir``; processes are ended
only by the PIDs recorded from their pid files, never by name.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import libvirt

from pvc_tui.sandbox import nsinit
from pvc_tui.sandbox.guest_image import GuestImage, ensure_guest_image, guest_domain_xml
from pvc_tui.sandbox.processes import ProcessRef, is_running, wait_exit

__all__ = [
    "GuestImage",
    "LibvirtdNode",
    "ensure_guest_image",
    "guest_domain_xml",
    "qemu_unavailable_reason",
    "start_libvirtd_node",
    "stop_libvirtd_node",
]

_REQUIRED_TOOLS = ("qemu-system-x86_64", "libvirtd", "virtlogd", "unshare", "busybox")
_START_TIMEOUT = 30.0
_MAX_INDEX = 200
_UNSHARE = ("unshare", "-m", "-u", "--propagation", "private", "--")
_NODE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,62}")

# The nsinit processes (one per node) this process started, so that it can reap them.
_REAPERS: dict[Path, subprocess.Popen[bytes]] = {}
_REAPERS_LOCK = threading.Lock()


def qemu_unavailable_reason() -> str | None:
    """None when real QEMU nodes can run here; else a one-line reason."""
    if sys.platform != "linux":
        return f"real QEMU nodes need Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "real QEMU nodes need root (per-node mount namespaces and bind mounts)"
    missing = [tool for tool in _REQUIRED_TOOLS if _which(tool) is None]
    if missing:
        return "missing programs: " + ", ".join(missing)
    if not Path("/etc/libvirt/libvirtd.conf").is_file():
        return "/etc/libvirt/libvirtd.conf not found (install libvirt-daemon-system)"
    return None


def _which(tool: str) -> str | None:
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin:/bin"
    return shutil.which(tool, path=path)


@dataclass(frozen=True)
class LibvirtdNode:
    """A running per-node virtlogd + libvirtd pair."""

    name: str
    index: int
    node_dir: Path
    uri: str
    migration_uri: str
    console_log_dir: Path
    libvirtd_pid: int
    virtlogd_pid: int


def _read_pid(path: Path) -> int:
    return int(path.read_text().split()[0])


def _unix_uri(socket_path: Path) -> str:
    return "qemu+unix:///system?socket=" + urllib.parse.quote(str(socket_path), safe="/._-~")


def start_libvirtd_node(node_dir: Path, name: str, index: int) -> LibvirtdNode:
    """Start virtlogd + libvirtd for one hypervisor node in its own mount+UTS namespace.

    Returns once libvirt accepts connections on the node's ``uri``.
    """
    reason = qemu_unavailable_reason()
    if reason is not None:
        raise RuntimeError(reason)
    if not 1 <= index <= _MAX_INDEX:
        raise ValueError(f"node index must be 1..{_MAX_INDEX}, not {index}")
    if not _NODE_NAME_RE.fullmatch(name):
        raise ValueError(f"invalid node (host) name {name!r}")
    node_dir = Path(node_dir).resolve()
    socket_path = node_dir / "run/libvirt/libvirt-sock"
    if len(os.fsencode(socket_path)) >= 108:
        raise ValueError(f"node_dir too long for a unix socket path: {socket_path}")
    nsinit.prepare_node_dir(node_dir, name, index)

    log_path = node_dir / "nsinit.log"
    env = dict(os.environ)
    env["PATH"] = env.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"
    for key in [k for k in env if k.startswith(("LIBVIRT_", "VIR_"))]:
        del env[key]
    with log_path.open("ab") as log:
        reaper = subprocess.Popen(
            [*_UNSHARE, sys.executable, "-I", nsinit.__file__, str(node_dir), name],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,  # Ctrl-C in the caller's terminal must not reach it
        )
    with _REAPERS_LOCK:
        _REAPERS[node_dir] = reaper
    pids = node_dir / nsinit.PID_DIR
    try:
        _wait_for_ready(reaper, pids / nsinit.READY_FILE, log_path, name)
        node = _node_record(node_dir, name, index)
        _wait_for_connection(node, socket_path)
    except BaseException:
        stop_libvirtd_node(_node_record(node_dir, name, index), timeout=5.0)
        raise
    return node


def _node_record(node_dir: Path, name: str, index: int) -> LibvirtdNode:
    pids = node_dir / nsinit.PID_DIR
    return LibvirtdNode(
        name=name,
        index=index,
        node_dir=node_dir,
        uri=_unix_uri(node_dir / "run/libvirt/libvirt-sock"),
        migration_uri=f"qemu+tcp://{nsinit.node_ip(index)}/system",
        console_log_dir=node_dir / "console",
        libvirtd_pid=_try_read_pid(pids / nsinit.LIBVIRTD_PIDFILE) or 0,
        virtlogd_pid=_try_read_pid(pids / nsinit.VIRTLOGD_PIDFILE) or 0,
    )


def _wait_for_ready(
    reaper: subprocess.Popen[bytes], ready: Path, log_path: Path, name: str
) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while not ready.exists():
        code = reaper.poll()
        if code is not None or time.monotonic() > deadline:
            tail = log_path.read_text(errors="replace")[-800:]
            raise RuntimeError(f"starting node {name} failed (nsinit exit {code}): {tail}")
        time.sleep(0.02)  # a starting/ending daemon offers no event: bounded poll


def _try_read_pid(path: Path) -> int | None:
    try:
        return _read_pid(path)
    except (OSError, ValueError, IndexError):
        return None


def _wait_for_connection(node: LibvirtdNode, socket_path: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    last_error = "socket not created"
    while time.monotonic() < deadline:
        if not _alive(node.libvirtd_pid):
            raise RuntimeError(f"libvirtd of node {node.name} exited during start")
        if socket_path.exists():
            try:
                conn = libvirt.open(node.uri)
            except libvirt.libvirtError as exc:
                last_error = str(exc)
            else:
                conn.close()
                return
        time.sleep(0.05)  # a starting/ending daemon offers no event: bounded poll
    raise RuntimeError(f"libvirtd of node {node.name} not reachable: {last_error}")


# --- stopping ---------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(comm, state) of a process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    return comm, raw[raw.rindex(")") + 2 :].split()[0]


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    if pid <= 0:
        return False
    stat = _proc_stat(pid)
    return stat is not None and stat[1] not in ("Z", "X")


def _mntns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def _belongs(pid: int, node_ns: str | None, comms: tuple[str, ...]) -> bool:
    """Whether pid is still the node's process: expected name and the node's mount namespace."""
    stat = _proc_stat(pid)
    if stat is None or not stat[0].startswith(comms):
        return False
    return node_ns is None or _mntns(pid) == node_ns


def _qemu_pids(node: LibvirtdNode) -> set[int]:
    """PIDs from the node's guest pid files (libvirt's own driver.pid lock is not a guest)."""
    daemons = {node.libvirtd_pid, node.virtlogd_pid}
    pids: set[int] = set()
    for pidfile in (node.node_dir / "run/libvirt/qemu").glob("*.pid"):
        pid = _try_read_pid(pidfile) if pidfile.name != "driver.pid" else None
        if pid and pid not in daemons:
            pids.add(pid)
    return pids


def _destroy_guests(node: LibvirtdNode, timeout: float) -> None:
    """Destroy every running guest of the node in parallel (a TCG destroy takes ~2 s)."""
    if not _alive(node.libvirtd_pid):
        return
    try:
        conn = libvirt.open(node.uri)
    except libvirt.libvirtError:
        return
    try:
        domains = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)

        def destroy(dom: libvirt.virDomain) -> None:
            with contextlib.suppress(libvirt.libvirtError):
                dom.destroy()

        threads = [threading.Thread(target=destroy, args=(d,), daemon=True) for d in domains]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
    except libvirt.libvirtError:
        pass
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()


def _signal_all(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _wait_gone(pids: set[int], timeout: float) -> set[int]:
    """Wait (on pidfds, no polling) until these processes end; return those still alive."""
    deadline = time.monotonic() + timeout
    refs = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            refs.append(ProcessRef.of(pid))
    for ref in refs:
        wait_exit(ref, max(0.0, deadline - time.monotonic()))
    return {ref.pid for ref in refs if is_running(ref)}


def _is_reaper(pid: int, node: LibvirtdNode) -> bool:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return os.fsencode(nsinit.__file__) in args and os.fsencode(node.node_dir) in args


def _stop_reaper(node: LibvirtdNode, timeout: float) -> set[int]:
    """End the node's nsinit (it exits by itself once its children are gone); return leftovers."""
    with _REAPERS_LOCK:
        popen = _REAPERS.pop(node.node_dir, None)
    pid = (
        popen.pid
        if popen
        else _try_read_pid(node.node_dir / nsinit.PID_DIR / nsinit.NSINIT_PIDFILE)
    )
    remaining: set[int] = set()
    if pid and (popen is not None or _is_reaper(pid, node)):
        remaining = _wait_gone({pid}, min(timeout, 5.0))
        if remaining:  # something it adopted is still running: it SIGKILLs its children
            _signal_all(remaining, signal.SIGTERM)
            remaining = _wait_gone(remaining, min(timeout, 5.0))
        if remaining:
            _signal_all(remaining, signal.SIGKILL)
            remaining = _wait_gone(remaining, 5.0)
    if popen is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=1.0)
    return remaining


def stop_libvirtd_node(node: LibvirtdNode, timeout: float = 15.0) -> None:
    """Destroy the node's guests, then end libvirtd, virtlogd and leftover qemu BY PID.

    SIGTERM first, SIGKILL after ``timeout``; waits for every process to exit. The node's
    mounts live only in its private mount namespace, which disappears with its processes.
    """
    pidfile_ns = node.node_dir / nsinit.PID_DIR / nsinit.MNTNS_FILE
    try:
        node_ns: str | None = pidfile_ns.read_text().strip() or None
    except OSError:
        node_ns = None
    qemu_before = _qemu_pids(node)
    _destroy_guests(node, timeout)
    candidates = {pid: ("qemu-system",) for pid in qemu_before | _qemu_pids(node)}
    candidates[node.libvirtd_pid] = ("libvirtd",)
    candidates[node.virtlogd_pid] = ("virtlogd",)
    ours = {pid for pid, comms in candidates.items() if pid > 0 and _belongs(pid, node_ns, comms)}
    # libvirtd first (so it does not react to its guests vanishing), then the rest.
    _signal_all(ours & {node.libvirtd_pid}, signal.SIGTERM)
    _signal_all(ours - {node.libvirtd_pid}, signal.SIGTERM)
    remaining = _wait_gone(ours, timeout)
    if remaining:
        _signal_all(remaining, signal.SIGKILL)
        remaining = _wait_gone(remaining, 10.0)
    remaining |= _stop_reaper(node, timeout)
    if remaining:
        raise RuntimeError(f"node {node.name}: processes {sorted(remaining)} did not exit")
