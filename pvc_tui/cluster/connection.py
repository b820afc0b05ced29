"""Connecting to ZooKeeper, and waiting on a znode through watches."""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from kazoo.client import KazooClient
from kazoo.exceptions import NodeExistsError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.recipe.watchers import DataWatch
from kazoo.retry import KazooRetry

from pvc_tui.cluster import layout
from pvc_tui.cluster.auth import Credentials, PvcKazooClient, load_acl_ids
from pvc_tui.cluster.errors import ClusterUnavailable, InvalidRequest, WaitTimeout

T = TypeVar("T")
DEFAULT_CONNECT_TIMEOUT = 5.0
READ_DEADLINE = 10.0  # at least: a read may wait out a leader change this long

# kazoo logs every failed connection attempt at WARNING; the library reports failures
# as exceptions instead, so keep its chatter off the operator's terminal by default.
logging.getLogger("kazoo").addHandler(logging.NullHandler())


_HOSTS = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}(,[A-Za-z0-9.\-\[\]:]+:\d{1,5})*"
                    r"(/[A-Za-z0-9._\-/]*)?$")


def check_hosts(hosts: str) -> str:
    """`hosts` if it reads as host:port[,host:port...][/chroot], else InvalidRequest."""
    if not _HOSTS.match(hosts or ""):
        raise InvalidRequest(f"invalid ZooKeeper address {hosts!r}: use host:port[,host:port]"
                             "[/chroot]")
    return hosts


def connect(hosts: str, timeout: float = DEFAULT_CONNECT_TIMEOUT,
            credentials: Credentials | None = None) -> KazooClient:
    """Start a kazoo client on `hosts` (host:port[,host:port][/chroot]) or fail in `timeout`.

    It authenticates with `credentials` and gives every znode it creates the cluster's
    ACL (auth.py)."""
    check_hosts(hosts)
    try:
        zk = PvcKazooClient(
            hosts=hosts,
            timeout=max(timeout, 2.0),
            connection_retry=KazooRetry(max_tries=-1, max_delay=2.0),
            command_retry=KazooRetry(max_tries=3, max_delay=1.0, deadline=timeout),
            auth_data=[credentials.auth] if credentials else None,
        )
    except ValueError as exc:
        raise InvalidRequest(f"invalid ZooKeeper address {hosts!r}: {exc}") from None
    zk.read_deadline = max(2 * timeout, READ_DEADLINE)
    try:
        zk.start(timeout=timeout)
    except KazooTimeoutError:
        zk.stop()
        zk.close()
        raise ClusterUnavailable(
            f"cannot reach ZooKeeper at {hosts} within {timeout:g} s"
        ) from None
    return zk


def ensure_schema(zk: KazooClient) -> int:
    """Create the top-level layout if missing; return the cluster's schema version.

    A cluster written by a newer schema is refused for writing with a clear error.
    Where ACLs are on, the roles' ids are read first, so that what is created here gets
    its ACL.
    """
    load_acl_ids(zk)
    for path in (layout.NODES, layout.VMS, layout.VM_NAMES, layout.CONSOLES,
                 layout.STORAGE_VOLUMES, layout.STORAGE_REQUESTS, layout.STORAGE_CLAIMS):
        zk.ensure_path(path)
    for path, value in ((layout.SCHEMA_VERSION_PATH, str(layout.SCHEMA_VERSION)),
                        (layout.CLUSTER_ID_PATH, uuid.uuid4().hex)):
        if not zk.exists(path):
            with contextlib.suppress(NodeExistsError):  # another writer won the race
                zk.create(path, value.encode(), makepath=True)
    data, _ = zk.get(layout.SCHEMA_VERSION_PATH)
    try:
        version = int(data.decode())
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest(f"cluster schema version {data!r} is not a number") from None
    if version > layout.SCHEMA_VERSION:
        raise InvalidRequest(
            f"cluster schema version {version} is newer than this program's "
            f"({layout.SCHEMA_VERSION}): upgrade pvc-tui"
        )
    return version


def cluster_id(zk: KazooClient) -> str:
    """The cluster's id (see layout.CLUSTER_ID_PATH)."""
    data, _ = zk.get(layout.CLUSTER_ID_PATH)
    return bytes(data).decode()


def wait_on_znode(
    zk: KazooClient,
    path: str,
    check: Callable[[bytes | None, Any], T | None],
    timeout: float,
    describe: Callable[[], str],
) -> T:
    """Block until `check(data, stat)` returns non-None for the znode at `path`.

    Driven by a ZooKeeper data watch, never by sleeping and polling. `check` may
    raise to end the wait with that error; `describe` explains a timeout.
    """
    done = threading.Event()
    outcome: list[Any] = []

    def on_change(data: bytes | None, stat: Any, event: Any = None) -> bool:
        if done.is_set():
            return False
        try:
            value = check(data, stat)
        except Exception as exc:  # delivered to the waiting thread
            outcome.append(exc)
            done.set()
            return False
        if value is not None:
            outcome.append(value)
            done.set()
            return False
        return True

    DataWatch(zk, path, on_change)
    if not done.wait(timeout):
        done.set()  # the watch callback unregisters itself on its next call
        raise WaitTimeout(f"{describe()} (waited {timeout:g} s; the request stands)")
    result = outcome[0]
    if isinstance(result, Exception):
        raise result
    return result  # type: ignore[no-any-return]
