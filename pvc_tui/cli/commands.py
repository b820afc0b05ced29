"""Handlers of the `node` and `vm` commands (and the no-command overview)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from pvc_tui.cli import output
from pvc_tui.cluster import ClusterClient, InvalidRequest, PvcError, moves
from pvc_tui.cluster.auth import Credentials, load_credentials, read_credentials_file
from pvc_tui.cluster.describe import flush_item
from pvc_tui.cluster.text import printable


def resolve_zk(flag: str | None) -> str:
    """--zk, else $PVC_ZK, else a running sandbox's ZooKeeper, else 127.0.0.1:2181."""
    if flag:
        return flag
    if env := os.environ.get("PVC_ZK"):
        return env
    from pvc_tui.sandbox.demo import default_state_dir, load
    from pvc_tui.sandbox.processes import is_running

    sandbox = load(default_state_dir())
    if sandbox and any(is_running(server.process) for server in sandbox.zk_servers()):
        return sandbox.zk  # an ensemble serves with one of its servers down
    return "127.0.0.1:2181"


def resolve_credentials(hosts: str, state_dir: Path | None = None,
                        sandbox_role: str = "operator") -> Credentials | None:
    """$PVC_ZK_AUTH / $PVC_ZK_AUTH_FILE / ~/.config/pvc-tui/zk-auth, else, for the running
    sandbox's own ZooKeeper, the sandbox's credentials of `sandbox_role`."""
    found = load_credentials()
    if found is not None:
        return found
    from pvc_tui.sandbox.demo import default_state_dir, load

    sandbox = load(state_dir or default_state_dir())
    if sandbox is not None and hosts.split("/")[0] == sandbox.zk and \
            (file := sandbox.credentials_file(sandbox_role)).exists():
        return read_credentials_file(file)
    return None


def connect(args: argparse.Namespace) -> ClusterClient:
    """A client for the cluster the arguments point at."""
    hosts = resolve_zk(args.zk)
    return ClusterClient.connect(hosts, timeout=args.connect_timeout,
                                 credentials=resolve_credentials(hosts, args.state_dir))


def overview(args: argparse.Namespace) -> int:
    """Nodes and VMs, as two tables."""
    with connect(args) as client:
        output.print_table(output.NODE_HEADERS, [output.node_row(n) for n in client.list_nodes()])
        print()
        output.print_table(output.VM_HEADERS, [output.vm_row(v) for v in client.list_vms()])
    return 0


def dashboard_log_path() -> Path:
    """Where the dashboard logs (internal errors with their tracebacks)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "pvc-tui" / "dashboard.log"


def dashboard(args: argparse.Namespace) -> int:
    """No command: the live dashboard on a terminal, else the plain overview."""
    if not (sys.stdout.isatty() and sys.stdin.isatty()):
        return overview(args)
    import logging

    from pvc_tui.cluster.connection import check_hosts
    from pvc_tui.tui.app import Dashboard

    hosts = check_hosts(resolve_zk(args.zk))
    log_path = dashboard_log_path()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.getLogger("pvc_tui").addHandler(handler)
    logging.getLogger("pvc_tui").setLevel(logging.INFO)
    readonly = getattr(args, "readonly", False)  # on the sandbox: as its viewer
    app = Dashboard(hosts, readonly=readonly, log_path=log_path,
                    connect_timeout=args.connect_timeout,
                    credentials=resolve_credentials(hosts, args.state_dir,
                                                    "viewer" if readonly else "operator"))
    code = app.run()
    if app.fatal_error:
        print(f"pvc-tui: error: {app.fatal_error}", file=sys.stderr)
        return 1
    return code if isinstance(code, int) else (1 if app.return_code else 0)


def node_list(args: argparse.Namespace) -> int:
    """`node list`."""
    with connect(args) as client:
        nodes = client.list_nodes()
    if args.format == "json":
        output.print_json([n.to_dict() for n in nodes])
    else:
        output.print_table(output.NODE_HEADERS, [output.node_row(n) for n in nodes])
    return 0


def node_info(args: argparse.Namespace) -> int:
    """`node info NODE`."""
    with connect(args) as client:
        node = client.get_node(args.node)
    if args.format == "json":
        output.print_json(node.to_dict())
    else:
        output.print_details(output.node_details(node))
    return 0


def vm_list(args: argparse.Namespace) -> int:
    """`vm list [--node N] [--state S]`."""
    with connect(args) as client:
        vms = client.list_vms(node=args.node, state=args.state)
    if args.format == "json":
        output.print_json([v.to_dict() for v in vms])
    else:
        output.print_table(output.VM_HEADERS, [output.vm_row(v) for v in vms])
    return 0


def vm_info(args: argparse.Namespace) -> int:
    """`vm info VM [--xml]`."""
    with connect(args) as client:
        vm = client.get_vm(args.vm)
        xml = client.get_vm_xml(vm.uuid) if args.xml else ""
    if args.xml:
        if args.format == "json":
            output.print_json({"name": vm.name, "uuid": vm.uuid, "xml": xml})
        else:
            sys.stdout.write("\n".join(printable(line, 10_000)
                                       for line in xml.splitlines()) + "\n")
    elif args.format == "json":
        output.print_json(vm.to_dict())
    else:
        output.print_details(output.vm_details(vm))
    return 0


def vm_define(args: argparse.Namespace) -> int:
    """`vm define FILE --node N [--start] [--wait]`."""
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    except OSError as exc:
        raise InvalidRequest(f"cannot read {args.file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InvalidRequest(f"{args.file} is not UTF-8 text") from None
    with connect(args) as client:
        vm = client.define_vm(text, args.node, start=args.start)
        print(f"defined VM {printable(vm.name)} ({vm.uuid}) on {vm.node}")
        if args.start and args.wait:
            client.start_vm(vm.uuid, wait=True, timeout=args.timeout)
            print(f"VM {printable(vm.name)} is running on {vm.node}")
    return 0


def vm_undefine(args: argparse.Namespace) -> int:
    """`vm undefine VM [--yes] [--wait]`."""
    with connect(args) as client:
        vm = client.undefine_vm(args.vm, wait=args.wait, timeout=args.timeout, force=args.yes)
        done = "removed from" if args.wait else "undefined; its agent removes it from"
        print(f"VM {printable(vm.name)} {done} {vm.node}")
    return 0


def vm_set_state(args: argparse.Namespace) -> int:
    """`vm start|stop|shutdown|restart VM [--wait]`."""
    action = {"start": "start_vm", "stop": "stop_vm", "shutdown": "shutdown_vm",
              "restart": "restart_vm"}[args.state_action]
    with connect(args) as client:
        vm = getattr(client, action)(args.vm, wait=args.wait, timeout=args.timeout)
        name = printable(vm.name)
        if args.wait:
            print(f"VM {name}: {args.state_action} done ({vm.power_state} on {vm.node})")
        else:
            print(f"VM {name}: {args.state_action} requested on {vm.node}")
            with contextlib.suppress(PvcError):  # only a note: the request stands
                node = client.get_node(vm.node)
                if node.daemon_state != "run":
                    print(f"note: node {node.name}'s agent is {node.daemon_state}; it acts "
                          "when it runs again", file=sys.stderr)
    return 0


def vm_move(args: argparse.Namespace) -> int:
    """`vm migrate|unmigrate|move VM ... [--wait]`."""
    with connect(args) as client:
        before = client.get_vm(args.vm)
        if args.move_kind == "migrate":
            vm = client.migrate_vm(before.uuid, target=args.target, selector=args.selector,
                                   force=args.force)
        elif args.move_kind == "unmigrate":
            vm = client.unmigrate_vm(before.uuid)
        else:
            vm = client.move_vm(before.uuid, args.target)
        name = printable(vm.name)
        if vm.migration is None:
            print(f"VM {name} now belongs to {vm.node} permanently")
            return 0
        route = f"{vm.migration.source} -> {vm.migration.target}"
        if not args.wait:
            print(f"VM {name}: {args.move_kind} {route} requested")
            return 0
        done = moves.wait_move(client, vm, args.timeout)
        last = done.last_migration
        how = f" ({last.used}, {last.seconds:.2f} s)" if last else ""
        print(f"VM {name}: {args.move_kind} {route} done{how}; previous node "
              f"{done.previous_node or '-'}")
    return 0


def node_domain_state(args: argparse.Namespace) -> int:
    """`node flush|ready NODE [--wait]`: one line per VM, exit 1 unless all reached goal."""
    action = args.domain_action
    bad = 0

    def on_item(item: dict[str, Any]) -> None:
        nonlocal bad
        bad += not moves.item_reached_goal(item)
        print(f"  {printable(flush_item(item))}", flush=True)

    with connect(args) as client:
        call = client.flush_node if action == "flush" else client.ready_node
        if not args.wait:
            call(args.node, concurrency=args.concurrency)
            print(f"node {args.node}: {action} requested")
            return 0
        print(f"node {args.node}: {action}", flush=True)
        progress = call(args.node, wait=True, timeout=args.timeout, on_item=on_item,
                        concurrency=args.concurrency)
    goal = "flushed" if action == "flush" else "ready"
    count = len(progress.get("items", []))
    print(f"node {args.node} is {goal} ({count} VMs, {progress.get('seconds', 0):.2f} s)"
          + (f"; {bad} did not reach their goal" if bad else ""))
    return 1 if bad else 0


def node_recover(args: argparse.Namespace) -> int:
    """`node recover NODE --yes`: start a dead node's VMs on other nodes."""
    from pvc_tui.cluster.recovery import recover_node

    if not args.yes:
        raise InvalidRequest(f"make sure node {args.node} is really off (its guests would "
                             "otherwise run twice), then add --yes")
    with connect(args) as client:
        outcome = recover_node(client, args.node)
    for vm, where in outcome:
        print(f"  {printable(vm)}: {printable(where)}")
    print(f"node {args.node}: {len(outcome)} VMs recovered")
    return 0
