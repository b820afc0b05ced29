"""`pvc-tui`: the operator's command line (the dashboard opens with no subcommand).

Exit codes: 0 success, 1 the operation failed, 2 bad usage or bad input (nothing
changed). Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from kazoo.exceptions import (
    ConnectionLoss,
    KazooException,
    NoAuthError,
    OperationTimeoutError,
    SessionExpiredError,
)

from pvc_tui.cli import acl_cmd, commands, console_cmd, demo_cmd, storage_cmd
from pvc_tui.cluster.errors import PvcError
from pvc_tui.cluster.placement import SELECTORS
from pvc_tui.cluster.text import printable

FORMATS = ("table", "json")
MAX_SECONDS = 86400.0


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are a single line and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree."""
    parser = OneLineParser(
        prog="pvc-tui",
        description="Manage a pvc hyperconverged cluster. With no command: the live "
        "dashboard (on a terminal; otherwise a plain overview of nodes and VMs).",
    )
    parser.add_argument("--zk", help="ZooKeeper hosts (default: $PVC_ZK, else a running "
                        "sandbox, else 127.0.0.1:2181)")
    parser.add_argument("--connect-timeout", type=seconds, default=5.0, metavar="SECONDS",
                        help="give up reaching ZooKeeper after this long (default 5)")
    parser.add_argument("--readonly", action="store_true",
                        help="dashboard without any action that changes the cluster")
    sub = parser.add_subparsers(dest="group", metavar="COMMAND", parser_class=OneLineParser)

    node = sub.add_parser("node", help="hypervisor nodes").add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=OneLineParser)
    p = node.add_parser("list", help="list nodes")
    _format(p)
    p.set_defaults(run=commands.node_list)
    p = node.add_parser("info", help="show one node")
    p.add_argument("node")
    _format(p)
    p.set_defaults(run=commands.node_info)

    p = node.add_parser("flush", help="move every VM off a node (it ends `flushed`)")
    p.add_argument("node")
    _concurrency(p)
    _wait(p, default=600.0, what="every VM has moved; print one line per VM")
    p.set_defaults(run=commands.node_domain_state, domain_action="flush")
    p = node.add_parser("ready", aliases=["unflush"],
                        help="take a flushed node's VMs back (it ends `ready`)")
    p.add_argument("node")
    _concurrency(p)
    _wait(p, default=600.0, what="every VM is back; print one line per VM")
    p.set_defaults(run=commands.node_domain_state, domain_action="ready")

    p = node.add_parser("recover", help="start a dead node's VMs on other nodes (its "
                        "previous node becomes the dead one); the node must really be off")
    p.add_argument("node")
    p.add_argument("--yes", action="store_true", help="confirm the node is off")
    p.set_defaults(run=commands.node_recover)

    vm = sub.add_parser("vm", help="virtual machines").add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=OneLineParser)
    p = vm.add_parser("list", help="list VMs")
    p.add_argument("--node", help="only VMs on this node")
    p.add_argument("--state", help="only VMs in this desired state")
    _format(p)
    p.set_defaults(run=commands.vm_list)
    p = vm.add_parser("info", help="show one VM")
    p.add_argument("vm", help="name or UUID")
    p.add_argument("--xml", action="store_true", help="print the domain XML instead")
    _format(p)
    p.set_defaults(run=commands.vm_info)
    p = vm.add_parser("define", help="add a VM from a libvirt domain XML file")
    p.add_argument("file", help="domain XML file, or - for standard input")
    p.add_argument("--node", required=True, help="the node to place it on")
    p.add_argument("--start", action="store_true", help="start it once defined")
    _wait(p)
    p.set_defaults(run=commands.vm_define)
    p = vm.add_parser("undefine", help="remove a VM (its agent powers it off)")
    p.add_argument("vm")
    p.add_argument("--yes", action="store_true", help="confirm removing a running VM")
    _wait(p)
    p.set_defaults(run=commands.vm_undefine)
    for action, text in (("start", "start a VM"), ("stop", "power a VM off at once"),
                         ("shutdown", "shut a VM down gracefully (power off after the "
                                      "agent's shutdown timeout)"),
                         ("restart", "shut down gracefully, then start again")):
        p = vm.add_parser(action, help=text)
        p.add_argument("vm")
        _wait(p)
        p.set_defaults(run=commands.vm_set_state, state_action=action)

    p = vm.add_parser("log", help="a VM's console: the recent buffer in a pager, or --follow")
    p.add_argument("vm")
    p.add_argument("--lines", type=int, metavar="N", help="the last N lines (default: the "
                   "whole buffer; with --follow, 10)")
    p.add_argument("--follow", "-f", action="store_true", help="then print new lines as they "
                   "come, until Ctrl-C")
    p.add_argument("--raw", action="store_true", help="the guest's bytes unchanged (escape "
                   "sequences included): for piping into other tools; refused on a terminal")
    p.set_defaults(run=console_cmd.vm_log)
    p = vm.add_parser("migrate", help="move a VM to another node for now (unmigrate sends "
                      "it back)")
    p.add_argument("vm")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--target", help="the node to move it to")
    target.add_argument("--selector", choices=SELECTORS,
                        help="pick the target: mem (most free memory, default), load, "
                        "vcpus (fewest allocated), vms (fewest VMs)")
    p.add_argument("--force", action="store_true", help="migrate an already-migrated VM "
                   "(it keeps its original previous node)")
    _wait(p)
    p.set_defaults(run=commands.vm_move, move_kind="migrate")
    p = vm.add_parser("unmigrate", help="send a migrated VM back to its previous node")
    p.add_argument("vm")
    _wait(p)
    p.set_defaults(run=commands.vm_move, move_kind="unmigrate")
    p = vm.add_parser("move", help="place a VM on a node permanently (clears its previous "
                      "node)")
    p.add_argument("vm")
    p.add_argument("--target", required=True, help="the node to place it on")
    _wait(p)
    p.set_defaults(run=commands.vm_move, move_kind="move")

    storage_cmd.add_parser(sub, OneLineParser, _format, seconds)

    acl = sub.add_parser("acl", help="ZooKeeper access control (status, enable)"
                         ).add_subparsers(dest="action", metavar="ACTION", required=True,
                                          parser_class=OneLineParser)
    p = acl.add_parser("status", help="whether ACLs are on, and each role's user name")
    p.set_defaults(run=acl_cmd.acl_status)
    p = acl.add_parser("enable", help="switch ACLs on (agent, operator and viewer roles) "
                       "for this cluster, new or running; again: re-apply them")
    p.add_argument("--roles-dir", type=Path, required=True, metavar="DIR",
                   help="directory with the files agent, operator and viewer (mode 0600, "
                   "one line user:password each)")
    p.add_argument("--yes", action="store_true", help="confirm every agent already has "
                   "the agent credentials (zk_auth_file)")
    p.set_defaults(run=acl_cmd.acl_enable)

    demo = sub.add_parser("demo", help="a local sandbox cluster (up, status, down); with "
                          "no action: up, then open the dashboard on it")
    _state_dir(demo)
    demo.set_defaults(run=demo_cmd.demo_default)
    demo_sub = demo.add_subparsers(dest="action", metavar="ACTION",
                                   parser_class=OneLineParser)
    p = demo_sub.add_parser("up", help="start the sandbox (idempotent)")
    p.add_argument("--nodes", type=int, help="hypervisor nodes (default 3 for a new "
                   "sandbox; an existing one keeps its size)")
    p.add_argument("--driver", choices=("qemu", "test"),
                   help="qemu: real guests under per-node libvirtd (default where "
                   "possible); test: libvirt's test driver")
    p.add_argument("--no-vms", action="store_true", help="do not define demo VMs")
    p.add_argument("--no-ceph", action="store_true", help="do not start the tiny Ceph")
    p.add_argument("--zk-servers", type=int, choices=(1, 3, 5),
                   help="ZooKeeper servers: 3 or 5 form an ensemble (a new sandbox only; "
                   "default 1)")
    p.add_argument("--keepalive-interval", type=seconds, default=5.0, help=argparse.SUPPRESS)
    _state_dir(p)
    p.set_defaults(run=demo_cmd.demo_up)
    p = demo_sub.add_parser("status", help="what the sandbox runs")
    _format(p, default="json")
    _state_dir(p)
    p.set_defaults(run=demo_cmd.demo_status)
    p = demo_sub.add_parser("down", help="stop everything the sandbox started and remove it")
    _state_dir(p)
    p.set_defaults(run=demo_cmd.demo_down)
    return parser


def seconds(text: str) -> float:
    """A duration argument: a finite number of seconds, more than 0, at most a day."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or not 0 < value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and {MAX_SECONDS} seconds")
    return value


def _concurrency(p: argparse.ArgumentParser) -> None:
    p.add_argument("--concurrency", type=int, metavar="N",
                   help="VMs moved at once, 1-64 (default: the agent's flush_concurrency)")


def _state_dir(p: argparse.ArgumentParser) -> None:
    # on `demo` and on each action, so both `demo --state-dir D up` and `demo up
    # --state-dir D` work; SUPPRESS keeps an action's default from hiding the other
    p.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS,
                   help="sandbox directory (default: $PVC_SANDBOX_DIR, else "
                   "~/.local/state/pvc-tui/sandbox)")


def _format(p: argparse.ArgumentParser, default: str = "table") -> None:
    p.add_argument("--format", choices=FORMATS, default=default, help=f"default {default}")


def _wait(p: argparse.ArgumentParser, default: float = 120.0,
          what: str = "the agent reports the outcome") -> None:
    p.add_argument("--wait", action="store_true",
                   help=f"block until {what}; exit 1 if anything failed")
    p.add_argument("--timeout", type=seconds, default=default, metavar="SECONDS",
                   help=f"how long --wait waits (default {default:g})")


def main(argv: list[str] | None = None) -> int:
    """Entry point of pvc-tui."""
    args = build_parser().parse_args(argv)
    if not hasattr(args, "state_dir"):
        args.state_dir = None
    run: Callable[[argparse.Namespace], int] = getattr(args, "run", commands.dashboard)
    try:
        return run(args)
    except PvcError as exc:
        print(f"pvc-tui: error: {printable(exc)}", file=sys.stderr)
        return exc.exit_code
    except NoAuthError:  # the server's ACLs, not this program, refused it
        print("pvc-tui: error: not allowed: ZooKeeper refused this to the credentials in use "
              "($PVC_ZK_AUTH, $PVC_ZK_AUTH_FILE or ~/.config/pvc-tui/zk-auth)", file=sys.stderr)
        return 1
    except (ConnectionLoss, SessionExpiredError):  # mid-command, e.g. during a write
        print("pvc-tui: error: lost the connection to ZooKeeper mid-command: a change it "
              "was making may or may not have been applied; check, then retry",
              file=sys.stderr)
        return 1
    except OperationTimeoutError as exc:
        print(f"pvc-tui: error: {printable(exc)}", file=sys.stderr)
        return 1
    except KazooException as exc:  # the session broke mid-command
        print(f"pvc-tui: error: ZooKeeper failed: {type(exc).__name__} "
              f"{printable(exc)}".rstrip(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
