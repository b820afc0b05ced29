"""Handlers of `pvc-tui demo` (the local sandbox cluster)."""

from __future__ import annotations

import argparse
import sys

from pvc_tui.cli import commands, output
from pvc_tui.cluster.errors import InvalidRequest, PvcError
from pvc_tui.sandbox import demo
from pvc_tui.sandbox.zookeeper import ZooKeeperError


def _progress(message: str) -> None:
    print(f"demo: {message}", file=sys.stderr, flush=True)


def demo_up(args: argparse.Namespace) -> int:
    """`demo up`: start or complete the sandbox."""
    state_dir = args.state_dir or demo.default_state_dir()
    try:
        sandbox = demo.up(state_dir, nodes=args.nodes, driver=args.driver,
                          demo_vms=not args.no_vms,
                          keepalive_interval=args.keepalive_interval, progress=_progress,
                          ceph=not getattr(args, "no_ceph", False),
                          zk_servers=getattr(args, "zk_servers", None))
    except (ZooKeeperError, OSError, RuntimeError) as exc:
        raise PvcError(f"sandbox failed to start: {exc}") from None
    print(f"sandbox up: {len(sandbox.nodes)} {sandbox.driver} nodes, ZooKeeper at "
          f"{sandbox.zk} (state in {sandbox.state_dir})")
    return 0


def demo_status(args: argparse.Namespace) -> int:
    """`demo status`: what the sandbox runs."""
    state_dir = args.state_dir or demo.default_state_dir()
    sandbox = demo.load(state_dir.resolve())
    if sandbox is None:
        print(f"pvc-tui: error: no sandbox in {state_dir}", file=sys.stderr)
        return 1
    status = sandbox.status()
    if args.format == "json":
        output.print_json(status)
    else:
        print(f"ZooKeeper {status['zk']} ({'running' if status['zk_running'] else 'down'}), "
              f"driver {status['driver']}, state in {status['state_dir']}")
        if status["ceph_conf"]:
            print(f"Ceph {'running' if status['ceph_running'] else 'down'}, config "
                  f"{status['ceph_conf']}")
        output.print_table(("NODE", "AGENT PID", "RUNNING", "LIBVIRT", "CONSOLE LOGS"),
                           [(n["name"], n["pid"], n["agent_running"], n["libvirt_uri"],
                             n["console_log_dir"]) for n in status["nodes"]])
    return 0


def demo_down(args: argparse.Namespace) -> int:
    """`demo down`: stop and remove the sandbox."""
    state_dir = args.state_dir or demo.default_state_dir()
    if demo.down(state_dir):
        print(f"sandbox in {state_dir} stopped and removed")
    else:
        print(f"no sandbox in {state_dir}")
    return 0


def demo_default(args: argparse.Namespace) -> int:
    """`demo`: bring the sandbox up if needed, then open the dashboard on it."""
    if args.action is None:
        args.nodes, args.driver, args.no_vms, args.keepalive_interval = None, None, False, 5.0
        args.no_ceph = False
        demo_up(args)
        state_dir = (args.state_dir or demo.default_state_dir()).resolve()
        sandbox = demo.load(state_dir)
        args.zk = sandbox.zk if sandbox else args.zk
        code = commands.dashboard(args)
        print("\ntry: pvc-tui vm log web1 --follow | pvc-tui vm migrate web1 --wait | "
              "pvc-tui node flush hv1 --wait | pvc-tui demo down", file=sys.stderr)
        return code
    raise InvalidRequest(f"unknown demo action {args.action}")
