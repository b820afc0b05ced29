"""Watching the other nodes: declare a dead one, fence it, recover its VMs.

Every agent looks at its peers each keepalive interval. A peer silent for
`keepalive_interval x fence_intervals` is declared dead by a compare-and-set of its
record: its liveness znode vanishes one session timeout after its last heartbeat, and
the rest of that time is counted from then on this agent's monotonic clock (so no clocks
are compared);
the one agent that wins acts on the `recovery` policy (pvc_tui/cluster/recovery.py).
The fence command is an argument list run without a shell; `{node}` in an argument is
replaced by the dead node's name.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoNodeError

from pvc_tui.cluster import layout
from pvc_tui.cluster.client import ClusterClient
from pvc_tui.cluster.errors import PvcError
from pvc_tui.cluster.recovery import FenceState, declare_dead, recover_node, set_fence
from pvc_tui.cluster.text import printable

log = logging.getLogger(__name__)
FENCE_TIMEOUT = 120.0  # seconds a fence command may take


def fence_environment() -> dict[str, str]:
    """The agent's environment without its ZooKeeper credentials (the fence command is
    someone else's program)."""
    return {key: value for key, value in os.environ.items()
            if not key.startswith("PVC_ZK_AUTH")}


def agent_session_timeout(interval: float) -> float:
    """An agent's ZooKeeper session timeout: 2 keepalive intervals, at least 4 s (a
    session must outlive a ZooKeeper leader election)."""
    return max(2 * interval, 4.0)


class DeadNodeWatch:
    """Declares dead peers and, with the `fence` policy, fences and recovers them."""

    def __init__(self, zk: KazooClient, node: str, interval: float, fence_intervals: int,
                 policy: str, fence_command: list[str], session_timeout: float) -> None:
        self._client = ClusterClient(zk)
        self._node = node
        self._interval = interval
        # counted from the liveness znode's end, itself a session timeout after the peer
        # fell silent: dead `interval x fence_intervals` after its last heartbeat
        # (at least one interval: a restarting agent replaces its liveness znode)
        self._grace = max(interval, interval * fence_intervals - session_timeout)
        self._policy = policy
        self._command = list(fence_command)
        self._missing: dict[str, float] = {}  # peer -> monotonic time first seen gone
        self._stop = threading.Event()
        self._woken = threading.Event()  # set by a watch: look now
        self._thread = threading.Thread(target=self._run, name="dead-nodes", daemon=True)

    def start(self) -> None:
        """Watch in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (a fence command under way is waited for)."""
        self._stop.set()
        self._woken.set()
        self._thread.join(timeout=FENCE_TIMEOUT + 5)

    def _wake(self, event: object) -> None:  # kazoo's thread: a liveness znode changed
        self._woken.set()

    def _next_wait(self) -> float:
        """Until the next look: an interval, or sooner when a missing peer falls due."""
        now = time.monotonic()
        due = [first + self._grace - now for first in self._missing.values()]
        return min([self._interval, *(d for d in due if d > 0)])

    def _run(self) -> None:
        while not self._stop.is_set():
            self._woken.wait(self._next_wait())
            self._woken.clear()
            if self._stop.is_set():
                return
            try:
                self.check()
            except (KazooException, PvcError) as exc:  # ZooKeeper away: look again later
                log.warning("dead-node check: %s", exc)
                self._missing.clear()  # what we saw may be stale: start timing afresh

    def check(self) -> None:
        """One look at every peer."""
        zk = self._client.zk
        now = time.monotonic()
        for name in zk.get_children(layout.NODES, watch=self._wake):
            if name == self._node:
                continue
            # the watch wakes this loop the moment a peer's liveness znode ends
            if zk.exists(layout.node_alive_path(name), watch=self._wake) is not None:
                self._missing.pop(name, None)
                continue
            try:
                data, _ = zk.get(layout.node_path(name))
                record = layout.decode(data, layout.NODE_FIELDS)
            except (NoNodeError, layout.RecordError):
                continue
            fence_state = (record["fence"] or {}).get("state", "")
            if record["daemon_state"] not in ("init", "run"):
                self._missing.pop(name, None)
                if fence_state == FenceState.FENCED and self._policy == "fence":
                    self._recover(name)  # the fencer died before recovering: finish it
                continue
            first = self._missing.setdefault(name, now)
            if now - first < self._grace:
                continue
            if declare_dead(self._client, name, self._node, self._policy):
                log.warning("node %s declared dead (gone for %.0f s); recovery policy %s",
                            name, now - first, self._policy)
                if self._policy == "fence":
                    self._fence(name)

    def _fence(self, name: str) -> None:
        if not set_fence(self._client, name, only_from=(FenceState.DECLARED.value,),
                         state=FenceState.FENCING.value, by=self._node):
            log.warning("node %s came back before it was fenced: not fencing it", name)
            return
        argv = [arg.replace("{node}", name) for arg in self._command]
        try:
            done = subprocess.run(argv, capture_output=True, timeout=FENCE_TIMEOUT,
                                  check=False, env=fence_environment())
        except (OSError, subprocess.TimeoutExpired) as exc:
            reason = f"fence command failed: {exc}"
        else:
            last = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
            reason = "" if done.returncode == 0 else (
                f"fence command exited {done.returncode}: {printable(last[0], 200)}")
        if reason:
            log.error("node %s: %s; its VMs stay where they are", name, reason)
            set_fence(self._client, name, state=FenceState.FAILED.value, reason=reason)
            return
        log.warning("node %s fenced; starting its VMs elsewhere", name)
        set_fence(self._client, name, state=FenceState.FENCED.value)
        self._recover(name)

    def _recover(self, name: str) -> None:
        for vm, where in recover_node(self._client, name, fenced=True):
            log.warning("recovered %s from dead node %s: %s", vm, name, where)
