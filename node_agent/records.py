"""The agent's reads and compare-and-set writes of cluster records."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError

from pvc_tui.cluster import layout
from pvc_tui.cluster.client import ClusterClient
from pvc_tui.cluster.models import Node

log = logging.getLogger(__name__)
CAS_ATTEMPTS = 20


class AgentRecords:
    """ZooKeeper access for one node's agent (implements reconciler.ClusterIO)."""

    def __init__(self, zk: KazooClient, node_name: str) -> None:
        self.zk = zk
        self.name = node_name
        self.client = ClusterClient(zk)

    def fetch_xml(self, uuid: str) -> str:
        """A VM's domain XML."""
        data, _ = self.zk.get(layout.vm_xml_path(uuid))
        return bytes(data).decode()

    def get_node(self, name: str) -> Node:
        """Another node's record."""
        return self.client.get_node(name)

    def update_vm(self, uuid: str, mutate: Callable[[dict[str, Any]], bool]) -> bool:
        """Compare-and-set a VM record; `mutate` returns False to leave it. True if written.

        A missing or unreadable VM record is left alone (False)."""
        return self._compare_and_set(layout.vm_path(uuid), layout.VM_FIELDS, mutate, None)

    def update_node(self, mutate: Callable[[dict[str, Any]], bool]) -> bool:
        """Compare-and-set this node's record, creating (or rewriting an invalid) one."""
        return self._compare_and_set(layout.node_path(self.name), layout.NODE_FIELDS, mutate,
                                     lambda: layout.new_node_record(name=self.name))

    def _compare_and_set(self, path: str, fields: dict[str, Any],
                         mutate: Callable[[dict[str, Any]], bool],
                         fresh: Callable[[], dict[str, Any]] | None) -> bool:
        for _ in range(CAS_ATTEMPTS):
            try:
                data, stat = self.zk.get(path)
            except NoNodeError:
                if fresh is None:
                    return False
                data, stat = None, None
            try:
                record = fresh() if data is None and fresh else layout.decode(data, fields)
            except layout.NewerRecord as exc:  # a newer agent's: keep it as it is
                log.error("record %s: %s; not updating it", path, exc)
                return False
            except layout.RecordError as exc:
                if fresh is None:
                    return False
                log.warning("record %s was invalid (%s); rewriting it", path, exc)
                record = fresh()
            if not mutate(record):
                return False
            try:
                if stat is None:
                    self.zk.create(path, layout.encode(record))
                else:
                    self.zk.set(path, layout.encode(record), version=stat.version)
                return True
            except (BadVersionError, NodeExistsError):
                continue
            except NoNodeError:
                if fresh is None:
                    return False
        log.warning("record %s kept changing; update skipped", path)
        return False

    def write_node(self, fields: dict[str, Any]) -> None:
        """Update this node's agent-owned fields."""
        self.update_node(lambda record: record.update(fields) is None)
