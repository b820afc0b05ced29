"""Storage requests, the primary's side: claim each exactly once, execute, answer.

A thread lists STORAGE_REQUESTS with a child watch and handles every request it finds,
oldest first, reading each fresh (level-triggered: a missed event costs nothing):

- pending: claimed by one transaction, a compare-and-set of the request to `claimed`
  plus the ephemeral claim znode; a lost race (another primary, or the client withdrew
  it) means it is not ours. Then executed, and answered by one transaction that writes
  the result and deletes the claim.
- claimed, with no claim znode: its primary died mid-request; answered as failed.
- left behind by a client that went away (pending past its claim timeout, or answered
  long ago): deleted.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, KazooException, NodeExistsError, NoNodeError
from kazoo.retry import KazooRetry

from node_agent.storage_ceph import CommandError
from node_agent.storage_commands import READ_ONLY, execute
from pvc_tui.cluster import layout
from pvc_tui.cluster.layout import RecordError, RequestState

log = logging.getLogger(__name__)
STALE_GRACE = 30.0  # seconds past its claim timeout before a pending request is dropped
ANSWERED_TTL = 600.0  # seconds an answered request waits for its client to collect it
# through a ZooKeeper leader change (about a second); a session that ended is not retried
_RETRY = KazooRetry(max_tries=-1, delay=0.05, max_delay=1.0, deadline=30.0)


class RequestServer:
    """Serves storage requests while `leading()` holds."""

    def __init__(self, zk: KazooClient, node: str, cluster: Any,
                 leading: Callable[[], bool], changed: Callable[[dict[str, Any]], None],
                 interval: float) -> None:
        self._zk = zk
        self._node = node
        self._cluster = cluster
        self._leading = leading
        self._changed = changed
        self._interval = interval
        self._event = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="storage-requests",
                                        daemon=True)

    def start(self) -> None:
        """Serve in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Finish the request at hand, then stop."""
        self._stop.set()
        self._event.set()
        self._thread.join(timeout=30)

    def _on_children(self, _event: object) -> None:
        self._event.set()

    def _run(self) -> None:
        for path in (layout.STORAGE_REQUESTS, layout.STORAGE_CLAIMS):
            try:
                self._zk.ensure_path(path)
            except KazooException as exc:
                log.warning("storage requests: %s", exc)
        while not self._stop.is_set() and self._leading():
            self._event.clear()
            try:
                children = self._zk.get_children(layout.STORAGE_REQUESTS,
                                                 watch=self._on_children)
                for request_id, data, stat in self._read_all(children):
                    if self._stop.is_set() or not self._leading():
                        break
                    self._handle(request_id, data, stat)
            except KazooException as exc:  # ZooKeeper away: the next pass reads afresh
                log.warning("storage requests: %s", exc)
            self._event.wait(self._interval)

    def _read_all(self, children: list[str]) -> list[tuple[str, bytes, Any]]:
        found = []
        for request_id in children:
            try:
                data, stat = self._zk.get(layout.storage_request_path(request_id))
            except NoNodeError:
                continue
            found.append((request_id, data, stat))
        return sorted(found, key=lambda item: item[2].czxid)

    def _handle(self, request_id: str, data: bytes, stat: Any) -> None:
        path = layout.storage_request_path(request_id)
        try:
            request = layout.decode(data, layout.STORAGE_REQUEST_FIELDS, layout.MAX_RESULT_BYTES)
        except RecordError as exc:
            self._answer(path, stat.version, None, CommandError("invalid", f"unreadable "
                                                                 f"request: {exc}"))
            return
        state = request["state"]
        if state == RequestState.PENDING:
            age = time.time() - stat.ctime / 1000
            if age > float(request["claim_timeout"]) + STALE_GRACE:
                self._delete(path, stat.version)  # its client gave up long ago
            else:
                self._claim_and_execute(request_id, request, stat.version)
        elif state == RequestState.CLAIMED:
            claim = layout.storage_claim_path(request_id)
            owner = self._zk.exists(claim)
            if owner is None:
                self._answer(path, stat.version, None, CommandError(
                    "failed", f"the storage primary {request['claimed_by']} stopped while "
                    "running it; Ceph may or may not have applied it: check before retrying"),
                    request)
            elif owner.ephemeralOwner == self._zk.client_id[0]:
                # ours, yet not running (one at a time): its answer was lost with the
                # connection; say so rather than leave the client waiting
                self._answer(path, stat.version, None, CommandError(
                    "failed", "the storage primary lost its answer to a ZooKeeper "
                    "connection failure; Ceph may or may not have applied it: check before "
                    "retrying"), request, claim)
        elif time.time() - stat.mtime / 1000 > ANSWERED_TTL:
            self._delete(path, stat.version)  # answered, never collected

    def _claim_and_execute(self, request_id: str, request: dict[str, Any],
                           version: int) -> None:
        path = layout.storage_request_path(request_id)
        claim = layout.storage_claim_path(request_id)
        claimed = {**request, "state": RequestState.CLAIMED.value, "claimed_by": self._node}

        def claim_it() -> list[Any]:
            transaction = self._zk.transaction()
            transaction.set_data(path, layout.encode(claimed), version=version)
            transaction.create(claim, self._node.encode(), ephemeral=True)
            results: list[Any] = transaction.commit()
            return results

        results = _RETRY.copy()(claim_it)
        if any(isinstance(r, Exception) for r in results):
            owner = self._zk.exists(claim)  # a commit that a connection loss hid?
            if owner is None or owner.ephemeralOwner != self._zk.client_id[0]:
                return  # withdrawn by its client, or claimed by another primary: not ours
        claimed_version = self._zk.exists(path)
        if claimed_version is None:
            return
        command = str(request["command"])
        started = time.monotonic()
        error: CommandError | None = None
        result: Any = None
        try:
            result = execute(self._cluster, command, dict(request["args"]))
            if command in ("status", "util"):
                result = {**result, "primary": self._node, "updated_at": time.time()}
        except CommandError as exc:
            error = exc
        except Exception as exc:  # a bug must not leave the client waiting
            log.exception("storage request %s failed", command)
            error = CommandError("failed", f"internal error: {type(exc).__name__}: {exc}")
        log.info("storage request %s %s in %.0f ms: %s", request_id, command,
                 (time.monotonic() - started) * 1000, "ok" if error is None else error)
        self._answer(path, claimed_version.version, result, error, claimed, claim)
        if command not in READ_ONLY:
            self._changed(dict(request["args"]))

    def _answer(self, path: str, version: int, result: Any, error: CommandError | None,
                request: dict[str, Any] | None = None, claim: str | None = None) -> None:
        """Write the outcome (and drop the claim) in one transaction."""
        done = {**(request or layout.STORAGE_REQUEST_FIELDS), "state": RequestState.DONE.value,
                "ok": error is None, "result": result, "finished_at": time.time(),
                "error": str(error) if error else "", "error_kind": error.kind if error else ""}
        try:
            data = layout.encode(done, limit=layout.MAX_RESULT_BYTES)
        except RecordError:
            done.update(ok=False, result=None, error_kind="failed",
                        error="the result is too large for ZooKeeper (more than "
                        f"{layout.MAX_RESULT_BYTES // 1024} KiB)")
            data = layout.encode(done, limit=layout.MAX_RESULT_BYTES)
        def answer_it() -> list[Any]:
            transaction = self._zk.transaction()
            transaction.set_data(path, data, version=version)
            if claim is not None:
                transaction.delete(claim)
            results: list[Any] = transaction.commit()
            return results

        # a lost connection must not lose the answer: retried until the leader is back
        if any(isinstance(r, Exception) for r in _RETRY.copy()(answer_it)) and \
                claim is not None:
            # the client withdrew meanwhile (or a hidden commit went through): the claim
            # must go either way
            with contextlib.suppress(NoNodeError):
                _RETRY.copy()(self._zk.delete, claim)

    def _delete(self, path: str, version: int) -> None:
        with contextlib.suppress(NoNodeError, BadVersionError, NodeExistsError):
            self._zk.delete(path, version=version)
