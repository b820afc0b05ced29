"""The storage commands the primary executes, by request command name.

Each handler takes the connected cluster and the request's arguments (already checked
by the client library, and checked again here where Ceph would accept nonsense) and
returns a JSON-able result, or raises CommandError with a one-line message. `CHANGES`
names the commands after which the primary publishes at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import rados
import rbd

from node_agent.storage_ceph import (
    CommandError,
    describe_volume,
    mon,
    open_pool,
    read_osds,
    read_pools,
    read_status,
    read_volumes,
)
from pvc_tui.cluster.errors import InvalidRequest
from pvc_tui.cluster.storage_checks import (
    check_ceph_name,
    check_osd_flag,
    check_pgs,
    format_size,
)

Handler = Callable[[rados.Rados, dict[str, Any]], Any]


def _pool(cluster: rados.Rados, args: dict[str, Any]) -> str:
    name = check_ceph_name(str(args["pool"]), "pool")
    if not cluster.pool_exists(name):
        raise CommandError("not_found", f"pool {name} does not exist")
    return name


def _pool_record(cluster: rados.Rados, name: str) -> dict[str, Any]:
    return next((p for p in read_pools(cluster) if p["name"] == name), {"name": name})


def pool_add(cluster: rados.Rados, args: dict[str, Any]) -> Any:
    name, pgs = check_ceph_name(str(args["pool"]), "pool"), check_pgs(int(args["pgs"]))
    if cluster.pool_exists(name):
        raise CommandError("exists", f"pool {name} already exists")
    mon(cluster, "osd pool create", pool=name, pg_num=pgs, pgp_num=pgs)
    if args.get("size") is not None:
        mon(cluster, "osd pool set", pool=name, var="size", val=str(int(args["size"])),
            yes_i_really_mean_it=True)
        mon(cluster, "osd pool set", pool=name, var="min_size",
            val=str(int(args["min_size"])))
    mon(cluster, "osd pool application enable", pool=name, app="rbd")
    with open_pool(cluster, name) as ioctx:
        rbd.RBD().pool_init(ioctx, False)
    return _pool_record(cluster, name)


def pool_set_pgs(cluster: rados.Rados, args: dict[str, Any]) -> Any:
    name, pgs = _pool(cluster, args), check_pgs(int(args["pgs"]))
    mon(cluster, "osd pool set", pool=name, var="pg_num", val=str(pgs))
    return _pool_record(cluster, name)


def pool_remove(cluster: rados.Rados, args: dict[str, Any]) -> Any:
    name = _pool(cluster, args)
    mon(cluster, "osd pool rm", pool=name, pool2=name, yes_i_really_really_mean_it=True)
    return None


def _volume_args(cluster: rados.Rados, args: dict[str, Any]) -> tuple[str, str]:
    return _pool(cluster, args), check_ceph_name(str(args["volume"]), "volume")


def _image(ioctx: rados.Ioctx, pool: str, name: str, read_only: bool = False) -> rbd.Image:
    try:
        return rbd.Image(ioctx, name, read_only=read_only)
    except rbd.ImageNotFound:
        raise CommandError("not_found", f"volume {pool}/{name} does not exist") from None


def volume_list(cluster: rados.Rados, args: dict[str, Any]) -> Any:
    return read_volumes(cluster, _pool(cluster, args) if args.get("pool") else None)


def volume_add(cluster: rados.Rados, args: dict[str, Any]) -> Any:
    pool, name = _volume_args(cluster, args)
    with open_pool(cluster, pool) as ioctx:
        try:
            rbd.RBD().create(ioctx, name, int(args["size"]))
        except rbd.ImageExists:
            raise CommandError("exists", f"volume {pool}/{name} already exists") from None
        return describe_volume(ioctx, pool, name)


def volume_resize(cluster: rados.Rados, args: dict[str, Any]) -> Any:
    pool, name = _volume_args(cluster, args)
    size = int(args["size"])
    with open_pool(cluster, pool) as ioctx:
        with _image(ioctx, pool, name) as image:
            current = image.size()
            if size < current and not args.get("allow_shrink"):
                raise CommandError("invalid", f"shrinking {pool}/{name} from "
                                   f"{format_size(current)} to {format_size(size)} loses "
                                   "the data past the new end: add --allow-shrink")
            if size != current:
                image.resize(size)
        return describe_volume(ioctx, pool, name)


def volume_rename(cluster: rados.Rados, args: dict[str, Any]) -> Any:
    pool, name = _volume_args(cluster, args)
    new_name = check_ceph_name(str(args["new_name"]), "volume")
    with open_pool(cluster, pool) as ioctx:
        _image(ioctx, pool, name, read_only=True).close()
        try:
            rbd.RBD().rename(ioctx, name, new_name)
        except rbd.ImageExists:
            raise CommandError("exists", f"volume {pool}/{new_name} already exists") from None
    return None


def volume_clone(cluster: rados.Rados, args: dict[str, Any]) -> Any:
    pool, name = _volume_args(cluster, args)
    new_name = check_ceph_name(str(args["new_name"]), "volume")
    snapshot = args.get("snapshot")
    with open_pool(cluster, pool) as ioctx:
        if new_name in rbd.RBD().list(ioctx):
            raise CommandError("exists", f"volume {pool}/{new_name} already exists")
        with _image(ioctx, pool, name) as image:
            if snapshot is None:
                image.copy(ioctx, new_name)
            else:
                snap = check_ceph_name(str(snapshot), "snapshot")
                if snap not in {s["name"] for s in image.list_snaps()}:
                    raise CommandError("not_found", f"snapshot {pool}/{name}@{snap} does "
                                       "not exist")
                if not image.is_protected_snap(snap):
                    image.protect_snap(snap)  # clones of this cluster's format need it
                rbd.RBD().clone(ioctx, name, snap, ioctx, new_name)
        return describe_volume(ioctx, pool, new_name)


def volume_remove(cluster: rados.Rados, args: dict[str, Any]) -> Any:
    pool, name = _volume_args(cluster, args)
    with open_pool(cluster, pool) as ioctx:
        try:
            rbd.RBD().remove(ioctx, name)
        except rbd.ImageNotFound:
            raise CommandError("not_found", f"volume {pool}/{name} does not exist") from None
        except rbd.ImageHasSnapshots:
            raise CommandError("failed", f"volume {pool}/{name} has snapshots: remove them "
                               "first (storage volume snapshot list)") from None
        except rbd.ImageBusy:
            raise CommandError("failed", f"volume {pool}/{name} is in use (open by a "
                               "running guest, or it has clones)") from None
    return None


def snapshot_list(cluster: rados.Rados, args: dict[str, Any]) -> Any:
    pool = _pool(cluster, args) if args.get("pool") else None
    volumes = read_volumes(cluster, pool)
    if args.get("volume"):
        volumes = [v for v in volumes if v["name"] == args["volume"]]
        if not volumes:
            raise CommandError("not_found", f"volume {pool}/{args['volume']} does not exist")
    return [{"pool": v["pool"], "volume": v["name"], **s}
            for v in volumes for s in v["snapshots"]]


def _snapshot_change(action: str) -> Handler:
    def handler(cluster: rados.Rados, args: dict[str, Any]) -> Any:
        pool, name = _volume_args(cluster, args)
        snap = check_ceph_name(str(args["snapshot"]), "snapshot")
        where = f"{pool}/{name}@{snap}"
        with open_pool(cluster, pool) as ioctx, _image(ioctx, pool, name) as image:
            exists = snap in {s["name"] for s in image.list_snaps()}
            if action == "add":
                if exists:
                    raise CommandError("exists", f"snapshot {where} already exists")
                image.create_snap(snap)
                return None
            if not exists:
                raise CommandError("not_found", f"snapshot {where} does not exist")
            if action == "rollback":
                image.rollback_to_snap(snap)
                return None
            try:
                if image.is_protected_snap(snap):
                    image.unprotect_snap(snap)
                image.remove_snap(snap)
            except rbd.ImageBusy:
                raise CommandError("failed", f"snapshot {where} has clones: remove or "
                                   "flatten them first") from None
        return None

    return handler


def _osd(cluster: rados.Rados, args: dict[str, Any]) -> str:
    osd = int(args["osd"])
    if osd not in {o["osd"] for o in mon(cluster, "osd dump").get("osds", [])}:
        raise CommandError("not_found", f"osd.{osd} does not exist")
    return str(osd)


def _osd_mark(command: str) -> Handler:
    def handler(cluster: rados.Rados, args: dict[str, Any]) -> Any:
        mon(cluster, command, ids=[_osd(cluster, args)])

    return handler


def _osd_flag(command: str) -> Handler:
    def handler(cluster: rados.Rados, args: dict[str, Any]) -> Any:
        mon(cluster, command, key=check_osd_flag(str(args["flag"])))

    return handler


COMMANDS: dict[str, Handler] = {
    "status": lambda cluster, _args: read_status(cluster),
    "util": lambda cluster, _args: read_status(cluster),
    "pool.list": lambda cluster, _args: read_pools(cluster),
    "pool.add": pool_add,
    "pool.set-pgs": pool_set_pgs,
    "pool.remove": pool_remove,
    "volume.list": volume_list,
    "volume.add": volume_add,
    "volume.resize": volume_resize,
    "volume.rename": volume_rename,
    "volume.clone": volume_clone,
    "volume.remove": volume_remove,
    "snapshot.list": snapshot_list,
    "snapshot.add": _snapshot_change("add"),
    "snapshot.remove": _snapshot_change("remove"),
    "snapshot.rollback": _snapshot_change("rollback"),
    "osd.list": lambda cluster, _args: read_osds(cluster),
    "osd.in": _osd_mark("osd in"),
    "osd.out": _osd_mark("osd out"),
    "osd.set": _osd_flag("osd set"),
    "osd.unset": _osd_flag("osd unset"),
}
READ_ONLY = frozenset({"status", "util", "pool.list", "volume.list", "snapshot.list",
                       "osd.list"})


def execute(cluster: rados.Rados, command: str, args: dict[str, Any]) -> Any:
    """Run one command; CommandError for anything that went wrong, with a clear message."""
    handler = COMMANDS.get(command)
    if handler is None:
        raise CommandError("invalid", f"unknown storage command {command!r} (a newer client?)")
    try:
        return handler(cluster, args)
    except CommandError:
        raise
    except InvalidRequest as exc:
        raise CommandError("invalid", str(exc)) from None
    except (KeyError, TypeError, ValueError) as exc:  # includes InvalidRequest from checks
        raise CommandError("invalid", f"bad arguments: {exc}") from None
    except (rados.Error, rbd.Error) as exc:
        raise CommandError("failed", f"Ceph: {exc}") from None
