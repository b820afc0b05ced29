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
        """Compare-and-set a VM record; `mutate` returns False to leave it. True if written."""
        path = layout.vm_path(uuid)
        for _ in range(CAS_ATTEMPTS):
            try:
                data, stat = self.zk.get(path)
                record = layout.decode(data, layout.VM_FIELDS)
            except (NoNodeError, layout.RecordError):
                return False
            if not mutate(record):
                return False
            try:
                self.zk.set(path, layout.encode(record), version=stat.version)
                return True
            except BadVersionError:
                continue
            except NoNodeError:
                return False
        log.warning("VM record %s kept changing; update skipped", uuid)
        return False

    def update_node(self, mutate: Callable[[dict[str, Any]], bool]) -> bool:
        """Compare-and-set this node's record, creating it if needed."""
        path = layout.node_path(self.name)
        for _ in range(CAS_ATTEMPTS):
            try:
                data, stat = self.zk.get(path)
            except NoNodeError:
                record = layout.new_node_record(name=self.name)
                if not mutate(record):
                    return False
                try:
                    self.zk.create(path, layout.encode(record))
                    return True
                except NodeExistsError:
                    continue
            try:
                record = layout.decode(data, layout.NODE_FIELDS)
            except layout.RecordError as exc:
                log.warning("node record was invalid (%s); rewriting it", exc)
                record = layout.new_node_record(name=self.name)
            if not mutate(record):
                return False
            try:
                self.zk.set(path, layout.encode(record), version=stat.version)
                return True
            except BadVersionError:
                continue
        log.warning("node record kept changing; update skipped")
        return False

    def write_node(self, fields: dict[str, Any]) -> None:
        """Update this node's agent-owned fields."""
        self.update_node(lambda record: record.update(fields) is None)
