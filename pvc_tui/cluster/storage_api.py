"""`client.storage`: the storage commands, as the CLI and the dashboard name them.

    client.storage.status() / .util()
    client.storage.pools.list() / .add() / .set_pgs() / .remove()
    client.storage.volumes.list() / .add() / .resize() / .rename() / .clone() / .remove()
    client.storage.snapshots.list() / .add() / .remove() / .rollback()
      (also reachable as client.storage.volumes.snapshots)
    client.storage.osds.list() / .set_in() / .set_out() / .set_flag() / .unset_flag()

Arguments are checked here first (InvalidRequest, nothing sent); then each command is
one storage request run by the primary agent (storage_requests.py). Removing a pool or
a volume that a defined VM uses is refused unless `force`.
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any

from pvc_tui.cluster import layout
from pvc_tui.cluster.domain_xml import rbd_volumes
from pvc_tui.cluster.errors import InvalidRequest
from pvc_tui.cluster.storage import Osd, Pool, Snapshot, StorageStatus, Volume
from pvc_tui.cluster.storage_checks import (
    check_ceph_name,
    check_osd_flag,
    check_osd_id,
    check_pgs,
    format_size,
)
from pvc_tui.cluster.storage_requests import (
    DEFAULT_CLAIM_TIMEOUT,
    DEFAULT_RESULT_TIMEOUT,
    submit,
)

if TYPE_CHECKING:
    from pvc_tui.cluster.client import ClusterClient


class _Group:
    def __init__(self, storage: StorageAPI) -> None:
        self._storage = storage

    def _run(self, command: str, **args: Any) -> Any:
        return self._storage.run(command, **args)


class Pools(_Group):
    """`storage pool ...`"""

    def list(self) -> builtins.list[Pool]:
        """Every pool, fresh from Ceph."""
        return [Pool.from_dict(p) for p in self._run("pool.list")]

    def add(self, name: str, pgs: int = 64, size: int | None = None,
            min_size: int | None = None) -> Pool:
        """Create an RBD pool with `pgs` placement groups (replication: Ceph's default)."""
        check_ceph_name(name, "pool")
        check_pgs(pgs)
        if (size is None) != (min_size is None):
            raise InvalidRequest("give both the replication size and min")
        return Pool.from_dict(self._run("pool.add", pool=name, pgs=pgs, size=size,
                                        min_size=min_size))

    def set_pgs(self, name: str, pgs: int) -> Pool:
        """Change a pool's placement-group count."""
        check_ceph_name(name, "pool")
        check_pgs(pgs)
        return Pool.from_dict(self._run("pool.set-pgs", pool=name, pgs=pgs))

    def remove(self, name: str, force: bool = False) -> builtins.list[str]:
        """Delete a pool and everything in it (refused if a VM uses it, unless `force`).

        Returns the VMs that used it (only ever non-empty with `force`)."""
        check_ceph_name(name, "pool")
        users = self._storage.check_unused(name, None, force)
        self._run("pool.remove", pool=name)
        return users


class Snapshots(_Group):
    """`storage volume snapshot ...`"""

    def list(self, pool: str | None = None, volume: str | None = None) -> builtins.list[Snapshot]:
        """Snapshots of every volume, of a pool's, or of one volume."""
        if pool is not None:
            check_ceph_name(pool, "pool")
        if volume is not None:
            check_ceph_name(volume, "volume")
        return [Snapshot.from_dict(s)
                for s in self._run("snapshot.list", pool=pool, volume=volume)]

    def _change(self, command: str, pool: str, volume: str, name: str) -> None:
        check_ceph_name(pool, "pool")
        check_ceph_name(volume, "volume")
        check_ceph_name(name, "snapshot")
        self._run(command, pool=pool, volume=volume, snapshot=name)

    def add(self, pool: str, volume: str, name: str) -> None:
        """Take a snapshot of a volume."""
        self._change("snapshot.add", pool, volume, name)

    def remove(self, pool: str, volume: str, name: str) -> None:
        """Delete a snapshot."""
        self._change("snapshot.remove", pool, volume, name)

    def rollback(self, pool: str, volume: str, name: str,
                 force: bool = False) -> builtins.list[str]:
        """Return a volume's content to a snapshot (what was written since is lost).

        Refused if a defined VM uses the volume, unless `force`; the VMs that did."""
        check_ceph_name(pool, "pool")
        check_ceph_name(volume, "volume")
        users = self._storage.check_unused(pool, volume, force)
        self._change("snapshot.rollback", pool, volume, name)
        return users


class Volumes(_Group):
    """`storage volume ...`"""

    def __init__(self, storage: StorageAPI) -> None:
        super().__init__(storage)
        self.snapshots = Snapshots(storage)

    def list(self, pool: str | None = None) -> builtins.list[Volume]:
        """Every volume, or a pool's, fresh from Ceph."""
        if pool is not None:
            check_ceph_name(pool, "pool")
        return [Volume.from_dict(v) for v in self._run("volume.list", pool=pool)]

    def add(self, pool: str, name: str, size: int) -> Volume:
        """Create a volume of `size` bytes."""
        check_ceph_name(pool, "pool")
        check_ceph_name(name, "volume")
        return Volume.from_dict(self._run("volume.add", pool=pool, volume=name, size=size))

    def resize(self, pool: str, name: str, size: int, allow_shrink: bool = False) -> Volume:
        """Grow a volume (shrinking, which loses data, needs `allow_shrink`)."""
        check_ceph_name(pool, "pool")
        check_ceph_name(name, "volume")
        return Volume.from_dict(self._run("volume.resize", pool=pool, volume=name, size=size,
                                          allow_shrink=allow_shrink))

    def rename(self, pool: str, name: str, new_name: str,
               force: bool = False) -> builtins.list[str]:
        """Rename a volume (refused if a VM uses it, unless `force`); the VMs that did."""
        check_ceph_name(pool, "pool")
        check_ceph_name(name, "volume")
        check_ceph_name(new_name, "volume")
        users = self._storage.check_unused(pool, name, force)
        self._run("volume.rename", pool=pool, volume=name, new_name=new_name)
        return users

    def clone(self, pool: str, name: str, new_name: str,
              snapshot: str | None = None) -> Volume:
        """A full copy of a volume; with `snapshot`, a copy-on-write clone of it."""
        check_ceph_name(pool, "pool")
        check_ceph_name(name, "volume")
        check_ceph_name(new_name, "volume")
        if snapshot is not None:
            check_ceph_name(snapshot, "snapshot")
        return Volume.from_dict(self._run("volume.clone", pool=pool, volume=name,
                                          new_name=new_name, snapshot=snapshot))

    def remove(self, pool: str, name: str, force: bool = False) -> builtins.list[str]:
        """Delete a volume (refused if a VM uses it, unless `force`); the VMs that did."""
        check_ceph_name(pool, "pool")
        check_ceph_name(name, "volume")
        users = self._storage.check_unused(pool, name, force)
        self._run("volume.remove", pool=pool, volume=name)
        return users


class Osds(_Group):
    """`storage osd ...`"""

    def list(self) -> builtins.list[Osd]:
        """Every OSD, fresh from Ceph."""
        return [Osd.from_dict(o) for o in self._run("osd.list")]

    def set_in(self, osd: int | str) -> None:
        """Mark an OSD in: it takes data again."""
        self._run("osd.in", osd=check_osd_id(osd))

    def set_out(self, osd: int | str) -> None:
        """Mark an OSD out: Ceph moves its data elsewhere."""
        self._run("osd.out", osd=check_osd_id(osd))

    def set_flag(self, flag: str) -> None:
        """Set an OSD map flag (noout, norebalance, ...)."""
        self._run("osd.set", flag=check_osd_flag(flag))

    def unset_flag(self, flag: str) -> None:
        """Clear an OSD map flag."""
        self._run("osd.unset", flag=check_osd_flag(flag))


class StorageAPI:
    """The storage subsystem of one cluster (`client.storage`)."""

    def __init__(self, client: ClusterClient) -> None:
        self.client = client
        self.claim_timeout = DEFAULT_CLAIM_TIMEOUT
        self.result_timeout = DEFAULT_RESULT_TIMEOUT
        self.pools = Pools(self)
        self.volumes = Volumes(self)
        self.snapshots = self.volumes.snapshots
        self.osds = Osds(self)

    def run(self, command: str, **args: Any) -> Any:
        """One storage request: the primary's result, or a PvcError."""
        return submit(self.client.zk, command, args, self.claim_timeout, self.result_timeout)

    def status(self) -> StorageStatus:
        """Health, usage, OSDs, pools and flags, fresh from Ceph."""
        record = self.run("status")
        return StorageStatus.from_record({**layout.STORAGE_STATUS_FIELDS, **record})

    def util(self) -> StorageStatus:
        """Like status (`storage util` prints the usage part)."""
        return self.status()

    def users(self, pool: str, volume: str | None = None) -> builtins.list[str]:
        """Names of the defined VMs with a disk on `pool` (on `pool/volume` if given)."""
        names = []
        for vm in self.client.list_vms():
            try:
                disks = rbd_volumes(self.client.get_vm_xml(vm.uuid))
            except InvalidRequest:
                continue
            if any(p == pool and (volume is None or v == volume) for p, v in disks):
                names.append(vm.name)
        return names

    def check_unused(self, pool: str, volume: str | None, force: bool) -> builtins.list[str]:
        """The VMs using `pool` (`pool/volume`); InvalidRequest if any, unless `force`."""
        users = self.users(pool, volume)
        if users and not force:
            what = f"volume {pool}/{volume}" if volume else f"pool {pool}"
            raise InvalidRequest(f"{what} is used by VM{'s' if len(users) > 1 else ''} "
                                 f"{', '.join(sorted(users))}: add --force to do it anyway")
        return sorted(users)


__all__ = ["StorageAPI", "format_size"]
