"""`pvc-tui storage ...`: the storage commands (each is one request to the storage primary)."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import sys
from collections.abc import Callable
from typing import Any

from pvc_tui.cli import output
from pvc_tui.cli.commands import connect
from pvc_tui.cluster import InvalidRequest
from pvc_tui.cluster.storage import StorageStatus
from pvc_tui.cluster.storage_api import StorageAPI
from pvc_tui.cluster.storage_checks import format_size, parse_replication, parse_size
from pvc_tui.cluster.text import printable


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except InvalidRequest as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _pgs(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"invalid PG count {text!r}: a power of two")
    return int(text)


def _replication(text: str) -> tuple[int, int]:
    try:
        return parse_replication(text)
    except InvalidRequest as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(sub: Any, parser_class: type[argparse.ArgumentParser],
               add_format: Callable[[argparse.ArgumentParser], None],
               seconds: Callable[[str], float]) -> None:
    """The `storage` command tree, added to the top-level subparsers."""
    storage = sub.add_parser("storage", help="Ceph storage: status, pools, volumes, "
                             "snapshots, OSDs (run by the storage primary agent)")
    storage.add_argument("--claim-timeout", type=seconds, default=5.0, metavar="SECONDS",
                         help="fail if no storage primary takes a request within this long "
                         "(default 5; the request is withdrawn, nothing changes)")
    groups = storage.add_subparsers(dest="storage_group", metavar="GROUP", required=True,
                                    parser_class=parser_class)

    def command(group: Any, name: str, text: str, run: Callable[..., int],
                listing: bool = False) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = group.add_parser(name, help=text)
        if listing:
            add_format(p)
        p.set_defaults(run=lambda args: _run(args, run))
        return p

    command(groups, "status", "Ceph health, usage, OSDs and flags", status, listing=True)
    command(groups, "util", "space used, in the cluster and per pool", util, listing=True)

    pools = groups.add_parser("pool", help="pools").add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=parser_class)
    command(pools, "list", "list pools", pool_list, listing=True)
    p = command(pools, "add", "create an RBD pool", pool_add)
    p.add_argument("pool")
    p.add_argument("--pgs", type=_pgs, default=64, metavar="N",
                   help="placement groups, a power of two (default 64)")
    p.add_argument("--replication", type=_replication, metavar="size=N,min=M",
                   help="replicas, and the fewest that accept writes (default: Ceph's)")
    p = command(pools, "set-pgs", "change a pool's placement-group count", pool_set_pgs)
    p.add_argument("pool")
    p.add_argument("pgs", type=_pgs, metavar="N")
    p = command(pools, "remove", "delete a pool and all its volumes", pool_remove)
    p.add_argument("pool")
    _destructive(p)

    volumes = groups.add_parser("volume", help="RBD volumes").add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=parser_class)
    p = command(volumes, "list", "list volumes", volume_list, listing=True)
    p.add_argument("pool", nargs="?")
    p = command(volumes, "add", "create a volume", volume_add)
    p.add_argument("pool")
    p.add_argument("volume")
    p.add_argument("size", type=_size, help="with a binary unit: 512M, 10G, 1T")
    p = command(volumes, "resize", "grow (or, with --allow-shrink, shrink) a volume",
                volume_resize)
    p.add_argument("pool")
    p.add_argument("volume")
    p.add_argument("size", type=_size, help="the new size: 20G, +unit as for add")
    p.add_argument("--allow-shrink", action="store_true",
                   help="allow a smaller size (the data past the new end is lost)")
    p = command(volumes, "rename", "rename a volume", volume_rename)
    p.add_argument("pool")
    p.add_argument("volume")
    p.add_argument("new_name", metavar="NEW")
    p.add_argument("--force", action="store_true", help="even if a VM uses it")
    p = command(volumes, "clone", "copy a volume to a new one", volume_clone)
    p.add_argument("pool")
    p.add_argument("volume")
    p.add_argument("new_name", metavar="NEW")
    p.add_argument("--snapshot", metavar="SNAP", help="a copy-on-write clone of this "
                   "snapshot instead of a full copy (the clone keeps it as its parent)")
    p = command(volumes, "remove", "delete a volume", volume_remove)
    p.add_argument("pool")
    p.add_argument("volume")
    _destructive(p)

    snaps = volumes.add_parser("snapshot", help="volume snapshots").add_subparsers(
        dest="snapshot_action", metavar="ACTION", required=True, parser_class=parser_class)
    p = command(snaps, "list", "list snapshots", snapshot_list, listing=True)
    p.add_argument("pool", nargs="?")
    p.add_argument("volume", nargs="?")
    for name, text in (("add", "take a snapshot"), ("remove", "delete a snapshot"),
                       ("rollback", "return a volume to a snapshot (later writes are lost)")):
        p = command(snaps, name, text, snapshot_change)
        p.add_argument("pool")
        p.add_argument("volume")
        p.add_argument("snapshot")
        if name == "rollback":
            p.add_argument("--force", action="store_true", help="even if a VM uses the volume")
        p.set_defaults(snapshot_change=name)

    osds = groups.add_parser("osd", help="OSDs and OSD flags").add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=parser_class)
    command(osds, "list", "list OSDs", osd_list, listing=True)
    for name, text in (("in", "mark an OSD in (it takes data)"),
                       ("out", "mark an OSD out (its data moves elsewhere)")):
        p = command(osds, name, text, osd_mark)
        p.add_argument("osd", metavar="ID")
        p.set_defaults(osd_mark=name)
    for name, text in (("set", "set an OSD flag (noout, norebalance, ...)"),
                       ("unset", "clear an OSD flag")):
        p = command(osds, name, text, osd_flag)
        p.add_argument("flag")
        p.set_defaults(osd_flag=name)


def _destructive(p: argparse.ArgumentParser) -> None:
    p.add_argument("--yes", action="store_true", help="confirm: the data is destroyed")
    p.add_argument("--force", action="store_true", help="even if a VM uses it")


def _run(args: argparse.Namespace, run: Callable[[argparse.Namespace, StorageAPI], int]) -> int:
    if hasattr(args, "yes") and not args.yes:
        what = f"{args.pool}/{args.volume}" if getattr(args, "volume", None) else args.pool
        raise InvalidRequest(f"this destroys {what} and its data: add --yes to confirm")
    with connect(args) as client:
        client.storage.claim_timeout = args.claim_timeout
        return run(args, client.storage)


def _listing(args: argparse.Namespace, items: list[Any], headers: tuple[str, ...],
             row: Callable[[Any], list[object]]) -> int:
    """A list command's output: the items as JSON, or a table of `row(item)` each."""
    if args.format == "json":
        output.print_json([dataclasses.asdict(i) for i in items])
    else:
        output.print_table(headers, [row(i) for i in items])
    return 0


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.1f}%"


def status(args: argparse.Namespace, storage: StorageAPI) -> int:
    """`storage status`"""
    s = storage.status()
    if args.format == "json":
        output.print_json(dataclasses.asdict(s))
        return 0
    up = sum(o.up for o in s.osds)
    inside = sum(o.in_cluster for o in s.osds)
    output.print_details([
        ("health", s.health or "unknown"), ("primary", s.primary or "-"),
        ("osds", f"{len(s.osds)} ({up} up, {inside} in)"), ("pools", len(s.pools)),
        ("flags", ",".join(s.flags) or "-"), *_usage(s)])
    for name, message in sorted(s.health_checks.items()):
        print(f"  {printable(name)}: {printable(message)}")
    return 0


def _usage(s: StorageStatus) -> list[tuple[str, object]]:
    total = int(s.usage.get("total_bytes", 0))
    used = int(s.usage.get("total_used_raw_bytes", 0))
    return [("raw size", format_size(total)), ("raw used",
            f"{format_size(used)} ({_percent(used / total if total else 0)})"),
            ("raw avail", format_size(int(s.usage.get("total_avail_bytes", 0))))]


def util(args: argparse.Namespace, storage: StorageAPI) -> int:
    """`storage util`"""
    s = storage.util()
    if args.format == "json":
        output.print_json({"usage": s.usage, "pools": [dataclasses.asdict(p) for p in s.pools]})
        return 0
    output.print_details(_usage(s))
    print()
    output.print_table(("POOL", "STORED", "OBJECTS", "USED", "MAX AVAIL"), [
        [p.name, format_size(p.stored), p.objects, _percent(p.percent_used),
         format_size(p.max_avail)] for p in s.pools])
    return 0


def pool_list(args: argparse.Namespace, storage: StorageAPI) -> int:
    """`storage pool list`"""
    return _listing(args, storage.pools.list(), (
        "NAME", "ID", "PGS", "REPLICAS", "STORED", "OBJECTS", "USED", "MAX AVAIL", "READ/S",
        "WRITE/S"), lambda p: [
        p.name, p.id, p.pg_num, f"{p.size}/{p.min_size}", format_size(p.stored), p.objects,
        _percent(p.percent_used), format_size(p.max_avail), format_size(p.read_bytes_sec),
        format_size(p.write_bytes_sec)])


def pool_add(args: argparse.Namespace, storage: StorageAPI) -> int:
    """`storage pool add`"""
    size, minimum = args.replication or (None, None)
    pool = storage.pools.add(args.pool, args.pgs, size, minimum)
    print(f"pool {printable(pool.name)} added ({pool.pg_num} PGs, "
          f"replicas {pool.size}/{pool.min_size})")
    return 0


def pool_set_pgs(args: argparse.Namespace, storage: StorageAPI) -> int:
    """`storage pool set-pgs`"""
    pool = storage.pools.set_pgs(args.pool, args.pgs)
    print(f"pool {printable(pool.name)}: PGs set to {args.pgs} (Ceph moves there "
          "gradually)")
    return 0


def _forced(users: list[str]) -> None:
    if users:
        print(f"pvc-tui: warning: it was used by VM{'s' if len(users) > 1 else ''} "
              f"{printable(', '.join(users))}", file=sys.stderr)


def pool_remove(args: argparse.Namespace, storage: StorageAPI) -> int:
    """`storage pool remove`"""
    _forced(storage.pools.remove(args.pool, force=args.force))
    print(f"pool {printable(args.pool)} removed")
    return 0


def volume_list(args: argparse.Namespace, storage: StorageAPI) -> int:
    """`storage volume list`"""
    return _listing(args, storage.volumes.list(args.pool), (
        "POOL", "NAME", "SIZE", "USED", "PARENT", "SNAPSHOTS"), lambda v: [
        v.pool, v.name, format_size(v.size), format_size(v.used) if v.used >= 0 else "?",
        v.parent or "-", len(v.snapshots)])


def volume_add(args: argparse.Namespace, storage: StorageAPI) -> int:
    """`storage volume add`"""
    volume = storage.volumes.add(args.pool, args.volume, args.size)
    print(f"volume {printable(volume.key)} added ({format_size(volume.size)})")
    return 0


def volume_resize(args: argparse.Namespace, storage: StorageAPI) -> int:
    """`storage volume resize`"""
    volume = storage.volumes.resize(args.pool, args.volume, args.size, args.allow_shrink)
    print(f"volume {printable(volume.key)} is now {format_size(volume.size)}")
    return 0


def volume_rename(args: argparse.Namespace, storage: StorageAPI) -> int:
    """`storage volume rename`"""
    _forced(storage.volumes.rename(args.pool, args.volume, args.new_name, force=args.force))
    print(f"volume {printable(args.pool)}/{printable(args.volume)} renamed "
          f"to {printable(args.new_name)}")
    return 0


def volume_clone(args: argparse.Namespace, storage: StorageAPI) -> int:
    """`storage volume clone`"""
    volume = storage.volumes.clone(args.pool, args.volume, args.new_name, args.snapshot)
    how = f"clone of {volume.parent}" if volume.parent else "full copy"
    print(f"volume {printable(volume.key)} added ({how})")
    return 0


def volume_remove(args: argparse.Namespace, storage: StorageAPI) -> int:
    """`storage volume remove`"""
    _forced(storage.volumes.remove(args.pool, args.volume, force=args.force))
    print(f"volume {printable(args.pool)}/{printable(args.volume)} removed")
    return 0


def snapshot_list(args: argparse.Namespace, storage: StorageAPI) -> int:
    """`storage volume snapshot list`"""
    return _listing(args, storage.snapshots.list(args.pool, args.volume), (
        "POOL", "VOLUME", "NAME", "SIZE", "TAKEN"), lambda s: [
        s.pool, s.volume, s.name, format_size(s.size),
        datetime.datetime.fromtimestamp(s.timestamp).strftime("%Y-%m-%d %H:%M:%S")])


def snapshot_change(args: argparse.Namespace, storage: StorageAPI) -> int:
    """`storage volume snapshot add|remove|rollback`"""
    action = args.snapshot_change
    if action == "rollback":
        _forced(storage.snapshots.rollback(args.pool, args.volume, args.snapshot,
                                           force=args.force))
    else:
        run = storage.snapshots.add if action == "add" else storage.snapshots.remove
        run(args.pool, args.volume, args.snapshot)
    done = {"add": "taken", "remove": "removed", "rollback": "rolled back to"}[action]
    where = f"{args.pool}/{args.volume}@{args.snapshot}"
    print(f"snapshot {printable(where)} {done}" if action != "rollback" else
          f"volume {printable(args.pool)}/{printable(args.volume)} rolled "
          f"back to {printable(args.snapshot)}")
    return 0


def osd_list(args: argparse.Namespace, storage: StorageAPI) -> int:
    """`storage osd list`"""
    return _listing(args, storage.osds.list(), (
        "ID", "HOST", "UP", "IN", "WEIGHT", "REWEIGHT", "USED", "PGS", "SIZE"), lambda o: [
        o.id, o.host or "-", "up" if o.up else "down", "in" if o.in_cluster else "out",
        f"{o.weight:.4f}", f"{o.reweight:.2f}", f"{o.utilization:.1f}%", o.pgs,
        format_size(o.kb * 1024)])


def osd_mark(args: argparse.Namespace, storage: StorageAPI) -> int:
    """`storage osd in|out`"""
    (storage.osds.set_in if args.osd_mark == "in" else storage.osds.set_out)(args.osd)
    print(f"osd.{printable(args.osd).removeprefix('osd.')} marked {args.osd_mark}")
    return 0


def osd_flag(args: argparse.Namespace, storage: StorageAPI) -> int:
    """`storage osd set|unset`"""
    (storage.osds.set_flag if args.osd_flag == "set" else storage.osds.unset_flag)(args.flag)
    print(f"OSD flag {printable(args.flag)} {args.osd_flag}")
    return 0
