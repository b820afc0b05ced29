"""A real ZooKeeper server (Debian's jar) on loopback, for the sandbox and the tests."""

from __future__ import annotations

import random
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pvc_tui.sandbox.processes import ProcessRef, is_running, spawn, terminate

ZOOKEEPER_JARS = ("/usr/share/java/zookeeper.jar", "/usr/share/java/slf4j-simple.jar")
MAIN_CLASS = "org.apache.zookeeper.server.quorum.QuorumPeerMain"


class ZooKeeperError(RuntimeError):
    """The ZooKeeper server could not be started."""


@dataclass(frozen=True)
class ZooKeeperServer:
    """A running server process and where it listens."""

    process: ProcessRef
    host: str
    port: int
    data_dir: Path

    @property
    def address(self) -> str:
        """host:port for clients."""
        return f"{self.host}:{self.port}"


def zookeeper_unavailable_reason() -> str | None:
    """None if a ZooKeeper server can be started here, else why not."""
    if shutil.which("java") is None:
        return "java is not installed (apt-get install zookeeper)"
    missing = [j for j in ZOOKEEPER_JARS if not Path(j).exists()]
    if missing:
        return f"{missing[0]} is missing (apt-get install zookeeper)"
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_port_block(count: int, host: str = "127.0.0.1") -> int:
    """The first of `count` consecutive free TCP ports, below the kernel's ephemeral range.

    Daemons that bind several fixed ports (Ceph's mon binds two) must not pick from the
    ephemeral range: an outgoing connection may take one of those ports at any moment."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    top = max(low - count, 12000)
    for _ in range(200):
        base = random.randrange(10000, top)
        sockets: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise OSError(f"no block of {count} free ports below {low}")


def four_letter(host: str, port: int, command: str = "srvr", timeout: float = 1.0) -> str:
    """Send a ZooKeeper four-letter command; return the reply ('' if none)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(command.encode())
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
            return b"".join(chunks).decode(errors="replace")
    except OSError:
        return ""


def _config(data_dir: Path, host: str, port: int, tick_ms: int, fast_unsafe: bool,
            extra: list[str]) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    cfg = data_dir / "zoo.cfg"
    lines = [
        f"tickTime={tick_ms}", f"dataDir={data_dir / 'data'}", f"clientPort={port}",
        f"clientPortAddress={host}", "admin.enableServer=false",
        "4lw.commands.whitelist=ruok,srvr,mntr,stat", "maxClientCnxns=0",
        "minSessionTimeout=1000", "maxSessionTimeout=60000", *extra,
    ]
    if fast_unsafe:
        lines.append("forceSync=no")
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def _launch(data_dir: Path) -> tuple[ProcessRef, Any]:
    argv = ["java", "-Xmx256m", "-XX:+UseSerialGC", "-Dzookeeper.jmx.log4j.disable=true",
            "-cp", ":".join(ZOOKEEPER_JARS), MAIN_CLASS, str(data_dir / "zoo.cfg")]
    return spawn(argv, data_dir / "zookeeper.log")


def _wait_serving(ref: ProcessRef, proc: Any, host: str, port: int, data_dir: Path,
                  timeout: float) -> ZooKeeperServer:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ZooKeeperError(f"ZooKeeper exited at start; see {data_dir / 'zookeeper.log'}")
        if four_letter(host, port).startswith("Zookeeper version"):
            return ZooKeeperServer(ref, host, port, data_dir)
        time.sleep(0.05)  # a server that is starting has no event to wait on
    terminate([ref])
    raise ZooKeeperError(f"ZooKeeper did not serve on {host}:{port} within {timeout:g} s")


def start_zookeeper(data_dir: Path, port: int | None = None, host: str = "127.0.0.1",
                    tick_ms: int = 500, fast_unsafe: bool = False,
                    timeout: float = 30.0) -> ZooKeeperServer:
    """Start a standalone server keeping its data in `data_dir`; return once it serves.

    Readiness is the `srvr` command answering: the port opens before the server can
    serve, and connecting too early costs a client a 5 s retry.
    """
    reason = zookeeper_unavailable_reason()
    if reason:
        raise ZooKeeperError(reason)
    port = port or free_port(host)
    _config(data_dir, host, port, tick_ms, fast_unsafe, [])
    ref, proc = _launch(data_dir)
    return _wait_serving(ref, proc, host, port, data_dir, timeout)


@dataclass(frozen=True)
class Ensemble:
    """Several servers forming one ZooKeeper service."""

    servers: tuple[ZooKeeperServer, ...]

    @property
    def address(self) -> str:
        """host:port,host:port,... for clients."""
        return ",".join(s.address for s in self.servers)

    def leader(self) -> ZooKeeperServer | None:
        """The server that leads now, if any."""
        return next((s for s in self.servers
                     if "Mode: leader" in four_letter(s.host, s.port)), None)

    def healthy(self) -> bool:
        """Every server serves, as the leader or a follower of it."""
        modes = [four_letter(s.host, s.port) for s in self.servers]
        return sum("Mode: leader" in m for m in modes) == 1 and \
            all("Mode: leader" in m or "Mode: follower" in m for m in modes)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Until every server serves again (ZooKeeperError after `timeout`)."""
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if time.monotonic() > deadline:
                raise ZooKeeperError(f"the ensemble was not whole within {timeout:g} s")
            time.sleep(0.1)  # a server rejoining offers no event to wait on

    def restarted(self, server: ZooKeeperServer) -> Ensemble:
        """This ensemble with its stopped `server` started again."""
        again = restart_server(server)
        return Ensemble(tuple(again if s is server else s for s in self.servers))


def start_ensemble(base_dir: Path, count: int = 3, host: str = "127.0.0.1",
                   tick_ms: int = 500, fast_unsafe: bool = False,
                   timeout: float = 60.0) -> Ensemble:
    """Start `count` servers (ports: client, peer, election each) forming one ensemble;
    return once every one serves (so a quorum and a leader exist)."""
    reason = zookeeper_unavailable_reason()
    if reason:
        raise ZooKeeperError(reason)
    base = free_port_block(3 * count, host)
    members = [f"server.{i + 1}={host}:{base + 3 * i + 1}:{base + 3 * i + 2}"
               for i in range(count)]
    started = []
    try:
        for i in range(count):
            data_dir = base_dir / f"zk{i + 1}"
            _config(data_dir, host, base + 3 * i, tick_ms, fast_unsafe,
                    ["initLimit=10", "syncLimit=5", *members])
            (data_dir / "data").mkdir(parents=True, exist_ok=True)
            (data_dir / "data" / "myid").write_text(f"{i + 1}\n")
            started.append((*_launch(data_dir), base + 3 * i, data_dir))
        return Ensemble(tuple(_wait_serving(ref, proc, host, port, data_dir, timeout)
                              for ref, proc, port, data_dir in started))
    except BaseException:
        terminate([ref for ref, *_ in started])
        raise


def restart_server(server: ZooKeeperServer, timeout: float = 60.0) -> ZooKeeperServer:
    """Start a stopped server again from its own directory (same ports, same data)."""
    ref, proc = _launch(server.data_dir)
    return _wait_serving(ref, proc, server.host, server.port, server.data_dir, timeout)


def stop_zookeeper(server: ZooKeeperServer) -> None:
    """End the server process."""
    terminate([server.process], timeout=10.0)


def zookeeper_running(server: ZooKeeperServer) -> bool:
    """True if that server process is alive and answering."""
    return is_running(server.process) and four_letter(
        server.host, server.port).startswith("Zookeeper version")


__all__ = ["Ensemble", "ZooKeeperServer", "restart_server", "start_ensemble",
           "start_zookeeper", "stop_zookeeper"]
