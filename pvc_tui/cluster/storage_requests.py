"""Storage requests, the client's side: submit one, wait on watches for its result.

A request is a znode under STORAGE_REQUESTS (layout.py describes the protocol). The
client waits on two watches, the request's data and the primary's ephemeral claim, and
re-reads both after every event, so it never sleeps and never misses an outcome:

- nobody claims it within `claim_timeout`: it is withdrawn by a compare-and-set delete
  (a claim that wins the race is waited for instead) and the call fails, nothing done;
- the primary writes a result: returned, or raised as the matching PvcError;
- the claim vanishes without a result (the primary's session ended mid-request): the
  call fails saying Ceph may or may not have applied it;
- no result within `timeout` after the claim: WaitTimeout (the request stands).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from kazoo.client import KazooClient
from kazoo.exceptions import (
    BadVersionError,
    KazooException,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
)
from kazoo.retry import KazooRetry

from pvc_tui.cluster import layout
from pvc_tui.cluster.errors import (
    AlreadyExists,
    InvalidRequest,
    NotFound,
    OperationFailed,
    PvcError,
    WaitTimeout,
)
from pvc_tui.cluster.layout import RequestState

DEFAULT_CLAIM_TIMEOUT = 5.0
DEFAULT_RESULT_TIMEOUT = 120.0
RETRY_SECONDS = 30.0
MAX_WAIT = 5.0  # re-read at least this often: a belt to the watches' braces
T = TypeVar("T")
_ERRORS: dict[str, type[PvcError]] = {"invalid": InvalidRequest, "not_found": NotFound,
                                      "exists": AlreadyExists}


class StorageUnavailable(OperationFailed):
    """No storage primary took the request: nothing was done."""


def _retry(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`func` again through a lost connection (a leader election takes about a second),
    for up to RETRY_SECONDS; a session that ended is not retried."""
    retry = KazooRetry(max_tries=-1, delay=0.05, max_delay=1.0, deadline=RETRY_SECONDS)
    result: T = retry(func, *args, **kwargs)
    return result


def _describe(command: str) -> str:
    return "storage " + command.replace(".", " ")


def submit(zk: KazooClient, command: str, args: dict[str, Any],
           claim_timeout: float = DEFAULT_CLAIM_TIMEOUT,
           timeout: float = DEFAULT_RESULT_TIMEOUT) -> Any:
    """Have the storage primary run `command` with `args`; its result, or a PvcError."""
    request_id = uuid.uuid4().hex
    path = layout.storage_request_path(request_id)
    record = {**layout.STORAGE_REQUEST_FIELDS, "id": request_id, "command": command,
              "args": args, "requested_by": f"{socket.gethostname()} {os.getpid()}",
              "claim_timeout": claim_timeout}
    # NodeExists: created before a connection loss hid the reply (the id is ours alone)
    with contextlib.suppress(NodeExistsError):
        _retry(zk.create, path, layout.encode(record), makepath=True)
    try:
        return _wait(zk, request_id, command, claim_timeout, timeout)
    finally:
        # a request left behind (ZooKeeper gone now) is collected by the primary
        with contextlib.suppress(NoNodeError, NotEmptyError, KazooException):
            _retry(zk.delete, path)


def _wait(zk: KazooClient, request_id: str, command: str, claim_timeout: float,
          timeout: float) -> Any:
    path = layout.storage_request_path(request_id)
    claim = layout.storage_claim_path(request_id)
    changed = threading.Event()

    def on_event(_event: object) -> None:
        changed.set()

    # kazoo drops watches with a lost connection: any change of connection state means
    # "read again" (which sets them again)
    zk.add_listener(on_event)
    try:
        return _wait_events(zk, path, claim, command, claim_timeout, timeout, changed,
                            on_event)
    finally:
        zk.remove_listener(on_event)


def _wait_events(zk: KazooClient, path: str, claim: str, command: str, claim_timeout: float,
                 timeout: float, changed: threading.Event,
                 on_event: Callable[[object], None]) -> Any:
    """The loop of `_wait`: re-read after every event (or MAX_WAIT), act on the state."""
    claim_deadline = time.monotonic() + claim_timeout
    result_deadline: float | None = None
    while True:
        changed.clear()
        try:
            data, stat = _retry(zk.get, path, watch=on_event)
        except NoNodeError:
            raise OperationFailed(f"{_describe(command)}: the request was removed before "
                                  "it finished (by another client?)") from None
        request = layout.decode(data, layout.STORAGE_REQUEST_FIELDS, layout.MAX_RESULT_BYTES)
        state = request["state"]
        if state == RequestState.DONE:
            return _outcome(command, request)
        now = time.monotonic()
        if state == RequestState.PENDING:
            if now >= claim_deadline:
                try:
                    _retry(zk.delete, path, version=stat.version)
                except BadVersionError:
                    continue  # claimed just now: wait for it
                raise StorageUnavailable(
                    f"{_describe(command)}: no storage primary took the request within "
                    f"{claim_timeout:g} s (is an agent with a Ceph config running?); "
                    "it was withdrawn, nothing changed")
            changed.wait(min(claim_deadline - now, MAX_WAIT))
            continue
        if result_deadline is None:
            result_deadline = now + timeout
        if _retry(zk.exists, claim, watch=on_event) is None:
            # the result and the claim's removal are one transaction: re-read once
            data, _ = _retry(zk.get, path)
            request = layout.decode(data, layout.STORAGE_REQUEST_FIELDS,
                                    layout.MAX_RESULT_BYTES)
            if request["state"] == RequestState.DONE:
                return _outcome(command, request)
            raise OperationFailed(
                f"{_describe(command)}: the storage primary {request['claimed_by']} stopped "
                "while running it; Ceph may or may not have applied it: check before "
                "retrying")
        if now >= result_deadline:
            raise WaitTimeout(f"{_describe(command)}: no result from the storage primary "
                              f"{request['claimed_by']} after {timeout:g} s; it may still "
                              "finish")
        changed.wait(min(result_deadline - now, MAX_WAIT))


def _outcome(command: str, request: dict[str, Any]) -> Any:
    if request["ok"]:
        return request["result"]
    error = _ERRORS.get(request["error_kind"], OperationFailed)
    raise error(f"{_describe(command)}: {request['error']}")
