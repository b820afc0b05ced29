"""ZooKeeper access control: who may read and change what (digest auth, three roles).

- `agent`: everything the agents write (node records and liveness, runtime, consoles,
  storage status, volumes and claims) and everything operators may;
- `operator`: desired state (define, start, migrate, flush requests, storage requests),
  and read everything, consoles included; no creating nodes, no writing what agents
  publish;
- `viewer`: read everything except consoles; no writes at all.

ZooKeeper enforces this: a viewer's write is refused by the server (NoAuth), not only
hidden by the UI. The roles' digest ids live in ACL_IDS_PATH (written once, when ACLs
are switched on); every znode a client creates gets the ACL `acl_for(path)` gives, so
no create call anywhere has to spell one.

Credentials (`user:password`) come from $PVC_ZK_AUTH, or a file named by
$PVC_ZK_AUTH_FILE (the agent: `zk_auth_file`), or ~/.config/pvc-tui/zk-auth; a file must
not be readable by group or others. They never come from the command line and never
appear in a message or a log.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kazoo.client import KazooClient, KazooState, TransactionRequest
from kazoo.exceptions import (
    ConnectionLoss,
    NoAuthError,
    NoNodeError,
    OperationTimeoutError,
    SessionExpiredError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.security import ACL, make_acl, make_digest_acl_credential

from pvc_tui.cluster import layout
from pvc_tui.cluster.errors import InvalidRequest

ROLES = ("agent", "operator", "viewer")
SCHEMA_PREFIX = f"{layout.ROOT}/schema"
ACL_IDS_PATH = f"{SCHEMA_PREFIX}/acl"  # {"agent": "agent:<digest>", ...}
DEFAULT_FILE = Path.home() / ".config" / "pvc-tui" / "zk-auth"


@dataclass(frozen=True)
class Credentials:
    """A ZooKeeper digest identity; `repr` hides the password."""

    user: str
    password: str

    def __repr__(self) -> str:
        return f"Credentials(user={self.user!r})"

    @property
    def auth(self) -> tuple[str, str]:
        """kazoo's auth_data entry."""
        return ("digest", f"{self.user}:{self.password}")

    @property
    def digest_id(self) -> str:
        """The ACL id ZooKeeper derives from these credentials."""
        return str(make_digest_acl_credential(self.user, self.password))


def parse_credentials(text: str, where: str) -> Credentials:
    """`user:password` (one line); InvalidRequest naming `where`, never the content."""
    user, sep, password = text.strip().partition(":")
    if not sep or not user or not password or "\n" in password:
        raise InvalidRequest(f"{where}: expected one line user:password")
    return Credentials(user, password)


def read_credentials_file(path: Path) -> Credentials:
    """Credentials from a file that only its owner may read."""
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise InvalidRequest(f"credentials file {path} is readable by others: "
                                 f"chmod 600 {path}")
        return parse_credentials(path.read_text(), f"credentials file {path}")
    except OSError as exc:
        raise InvalidRequest(f"cannot read credentials file {path}: {exc.strerror}") from None


def load_credentials(file: str | Path | None = None) -> Credentials | None:
    """$PVC_ZK_AUTH, else `file`, else $PVC_ZK_AUTH_FILE, else the default file, else None."""
    if text := os.environ.get("PVC_ZK_AUTH"):
        return parse_credentials(text, "$PVC_ZK_AUTH")
    for candidate in (file, os.environ.get("PVC_ZK_AUTH_FILE")):
        if candidate:
            return read_credentials_file(Path(candidate))
    if DEFAULT_FILE.exists():
        return read_credentials_file(DEFAULT_FILE)
    return None


def write_credentials_file(path: Path, credentials: Credentials) -> None:
    """Create (or replace) a 0600 credentials file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{credentials.user}:{credentials.password}\n")
    os.chmod(path, 0o600)


def acl_for(path: str, ids: dict[str, str]) -> list[ACL]:
    """The ACL of a znode at `path`, by what it holds (see the module docstring)."""
    agent = make_acl("digest", ids["agent"], all=True)
    viewer = [make_acl("digest", ids["viewer"], read=True)]
    read_only = make_acl("digest", ids["operator"], read=True)
    if path.startswith(layout.CONSOLES):  # operators delete an undefined VM's buffer
        return [agent, make_acl("digest", ids["operator"], read=True, delete=True)]
    if path.startswith(layout.STORAGE_REQUESTS):
        return [agent, make_acl("digest", ids["operator"], read=True, write=True, create=True,
                                delete=True), *viewer]
    nodes = layout.NODES + "/"
    # The root and the schema (version, cluster id, these ids) are the agents' alone: an
    # operator who could delete ACL_IDS_PATH would switch access control off for all.
    if path in (layout.ROOT, layout.NODES) or path.startswith(SCHEMA_PREFIX) \
            or path.startswith(layout.STORAGE) \
            or (path.startswith(nodes) and path.endswith("/alive")):
        return [agent, read_only, *viewer]
    if path.startswith(nodes):  # a node record: operators request flush / ready on it
        return [agent, make_acl("digest", ids["operator"], read=True, write=True), *viewer]
    return [agent, make_acl("digest", ids["operator"], read=True, write=True, create=True,
                            delete=True), *viewer]


class _Transaction(TransactionRequest):  # type: ignore[misc]
    def create(self, path: str, value: bytes = b"", acl: Any = None, ephemeral: bool = False,
               sequence: bool = False) -> None:
        if acl is None:
            acl = self.client.acl_of(path)
        super().create(path, value, acl=acl, ephemeral=ephemeral, sequence=sequence)

    def commit(self) -> list[Any]:
        """As kazoo's, but a refusal by the ACLs is raised, not returned among the results:
        no caller mistakes it for a lost race and retries."""
        results: list[Any] = super().commit()
        for result in results:
            if isinstance(result, NoAuthError):
                raise NoAuthError()
        return results


class PvcKazooClient(KazooClient):  # type: ignore[misc]
    """A kazoo client that gives every znode it creates the cluster's ACL for its path."""

    acl_ids: dict[str, str] | None = None  # None: ACLs are off in this cluster
    # Library clients (CLI, dashboard) set this: a read that loses its connection (a
    # leader change, say) is sent again, and a read not answered within this many
    # seconds fails with OperationTimeoutError instead of waiting for ZooKeeper forever.
    # None (the agents): kazoo's own behaviour.
    read_deadline: float | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._connected = threading.Event()  # set while a server serves this session
        self.add_listener(self._on_state)

    def _on_state(self, state: KazooState) -> None:  # kazoo's thread: nothing blocking
        if state == KazooState.CONNECTED:
            self._connected.set()
        else:
            self._connected.clear()

    def acl_of(self, path: str) -> list[ACL] | None:
        """The ACL a new znode at `path` gets (None: kazoo's open default)."""
        return None if self.acl_ids is None else acl_for(path, self.acl_ids)

    def create_async(self, path: str, value: bytes = b"", acl: Any = None,
                     ephemeral: bool = False, sequence: bool = False, makepath: bool = False,
                     include_data: bool = False) -> Any:
        if acl is None:
            acl = self.acl_of(path)
        return super().create_async(path, value, acl=acl, ephemeral=ephemeral,
                                    sequence=sequence, makepath=makepath,
                                    include_data=include_data)

    def ensure_path_async(self, path: str, acl: Any = None) -> Any:
        # kazoo passes a child's ACL down to every missing parent (create with makepath):
        # with ACLs on, each parent gets the ACL of its own path instead
        return super().ensure_path_async(path, acl=None if self.acl_ids is not None else acl)

    def transaction(self) -> TransactionRequest:
        return _Transaction(self)

    def acl_ids_written(self, event: Any) -> None:
        """Watch callback (kazoo's thread, so nothing blocking): ACLs were switched on."""
        def loaded(result: Any) -> None:
            try:
                self.acl_ids = _parse_ids(result.get_nowait()[0])
            except NoNodeError:  # not yet (the watch fired for a lost connection, say)
                self.exists_async(ACL_IDS_PATH, watch=self.acl_ids_written)
            except Exception:  # unreadable: stay as we were
                return

        self.get_async(ACL_IDS_PATH).rawlink(loaded)

    def get(self, path: str, watch: Any = None) -> Any:
        return self._read(lambda: self.get_async(path, watch=watch), watch)

    def get_children(self, path: str, watch: Any = None, include_data: bool = False) -> Any:
        return self._read(lambda: self.get_children_async(path, watch=watch,
                                                          include_data=include_data), watch)

    def exists(self, path: str, watch: Any = None) -> Any:
        return self._read(lambda: self.exists_async(path, watch=watch), watch)

    def _read(self, send: Callable[[], Any], watch: Any) -> Any:
        """One read, repeated if the connection drops while it is in flight (reads are
        safe to repeat; a repeat waits in kazoo's queue until a server answers).

        Reads that set a watch (kazoo's recipes: DataWatch, ChildrenWatch) keep kazoo's
        own behaviour: the recipes retry themselves, on kazoo's callback thread."""
        if self.read_deadline is None or watch is not None:
            return send().get()
        deadline = time.monotonic() + self.read_deadline
        while True:
            try:
                return send().get(timeout=max(0.0, deadline - time.monotonic()))
            except (ConnectionLoss, SessionExpiredError):
                # wait for kazoo to be connected again (a new session after an expiry)
                if not self._connected.wait(max(0.0, deadline - time.monotonic())):
                    raise
            except KazooTimeoutError:
                raise OperationTimeoutError(
                    f"ZooKeeper did not answer within {self.read_deadline:g} s") from None


def load_acl_ids(zk: PvcKazooClient | KazooClient) -> None:
    """Read the roles' ids (if ACLs are on) so that creates get the right ACL; while
    they are off, a watch picks them up the moment `acl enable` writes them."""
    if isinstance(zk, PvcKazooClient):
        zk.acl_ids = acl_ids(zk)
        if zk.acl_ids is None:
            zk.exists(ACL_IDS_PATH, watch=zk.acl_ids_written)


def enable_acls(zk: KazooClient, roles: dict[str, Credentials]) -> None:
    """Switch ACLs on for a new cluster (before anything else is created in it): record
    the three roles' ids; from then on every client gives each znode its ACL. Run it,
    and then connection.ensure_schema, as the agent role: operators may not create the
    layout's top-level znodes."""
    ids = {role: roles[role].digest_id for role in ROLES}
    client = zk if isinstance(zk, PvcKazooClient) else None
    if client is not None:
        client.acl_ids = ids
    for path in (layout.ROOT, SCHEMA_PREFIX):
        if zk.exists(path) is None:
            zk.create(path, b"", acl=acl_for(path, ids))
    zk.create(ACL_IDS_PATH, json.dumps(ids, sort_keys=True).encode(),
              acl=acl_for(ACL_IDS_PATH, ids))


def acl_ids(zk: KazooClient) -> dict[str, str] | None:
    """The roles' digest ids if ACLs are on in this cluster, else None."""
    try:
        data, _ = zk.get(ACL_IDS_PATH)
    except NoNodeError:
        return None
    return _parse_ids(data)


def _parse_ids(data: bytes) -> dict[str, str]:
    raw = json.loads(data.decode())
    return {role: str(raw[role]) for role in ROLES}


def apply_acls(zk: KazooClient, ids: dict[str, str]) -> int:
    """Give every existing znode under the root the ACL of its path (switching ACLs on
    for a cluster that ran without them); returns how many were set. Parents first, so a
    crash part-way leaves a tree that a second run completes."""
    count = 0
    pending = [layout.ROOT]
    while pending:
        path = pending.pop()
        try:
            zk.set_acls(path, acl_for(path, ids))
            children = zk.get_children(path)
        except NoNodeError:
            continue  # deleted meanwhile
        count += 1
        pending.extend(f"{path}/{child}" for child in children)
    return count
