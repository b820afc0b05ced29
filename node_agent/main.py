"""`pvc-node-agent`: the daemon on every hypervisor node."""

from __future__ import annotations

import argparse
import faulthandler
import logging
import signal
import sys
from pathlib import Path
from types import FrameType

from node_agent.agent import NodeAgent
from node_agent.config import load_config
from pvc_tui.cluster.errors import InvalidRequest
from pvc_tui.cluster.recovery import POLICIES


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of pvc-node-agent."""
    parser = _OneLineParser(
        prog="pvc-node-agent",
        description="Reconcile this hypervisor node's VMs with the desired state in "
        "ZooKeeper and report the node's health. Flags override the config file.",
    )
    parser.add_argument("--config", type=Path, help="TOML config file with the same keys")
    parser.add_argument("--name", help="this node's name in the cluster")
    parser.add_argument("--zk", help="ZooKeeper hosts, host:port[,host:port][/chroot]")
    parser.add_argument("--libvirt-uri", help="local libvirt URI, e.g. qemu:///system")
    parser.add_argument("--console-log-dir", help="directory of guests' serial console logs")
    parser.add_argument("--keepalive-interval", type=float, help="seconds (default 5)")
    parser.add_argument("--shutdown-timeout", type=float,
                        help="seconds a graceful shutdown may take (default 180)")
    parser.add_argument("--reconcile-workers", type=int, help="VMs acted on at once (default 4)")
    parser.add_argument("--migration-uri", help="libvirt URI peers use to migrate onto this node")
    parser.add_argument("--migration-address", help="migration data URI, e.g. tcp://10.0.0.1")
    parser.add_argument("--flush-concurrency", type=int, help="VMs a flush moves at once "
                        "(default 4)")
    parser.add_argument("--target-selector", choices=["mem", "load", "vcpus", "vms"],
                        help="how a flush picks target nodes (default mem)")
    parser.add_argument("--console-log-lines", type=int,
                        help="console lines kept per VM (default 1000)")
    parser.add_argument("--console-log-interval", type=float,
                        help="console poll interval without inotify (default 0.5 s)")
    parser.add_argument("--console-publish-interval", type=float,
                        help="least time between console publishes of one VM (default 0.05 s)")
    parser.add_argument("--ceph-conf", help="ceph.conf of the cluster's Ceph (this agent "
                        "then stands for storage primary)")
    parser.add_argument("--zk-auth-file", help="file (mode 0600) with this agent's ZooKeeper "
                        "credentials, user:password (else $PVC_ZK_AUTH)")
    parser.add_argument("--fence-intervals", type=int, help="keepalive intervals a peer may "
                        "be gone before it is declared dead (default 6)")
    parser.add_argument("--recovery", choices=POLICIES, help="what happens to a dead "
                        "node's VMs: none (the operator runs `node recover`, default) or "
                        "fence (run the fence command, then start them elsewhere)")
    parser.add_argument("--fence-command", action="append", metavar="ARG",
                        help="one argument of the fence command (repeat for each, "
                        "--fence-command=-x for one that starts with -; {node} is the dead "
                        "node's name); run without a shell")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of pvc-node-agent."""
    args = build_parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k != "config"}
    try:
        config = load_config(args.config, overrides)
    except InvalidRequest as exc:
        print(f"pvc-node-agent: error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level,
        format=f"%(asctime)s {config.name} %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("kazoo").setLevel(logging.WARNING)
    agent = NodeAgent(config)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        agent.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # `kill -USR1 <pid>`: every thread's stack into the log, for a stuck agent
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
    return agent.run()


if __name__ == "__main__":
    sys.exit(main())
