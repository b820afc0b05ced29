"""The cluster library: models, the ZooKeeper layout, a client and a live store.

It never imports Textual (enforced by the import-linter contract in pyproject.toml);
the dashboard, the CLI and the node agent all sit on it.
"""

from pvc_tui.cluster.client import ClusterClient
from pvc_tui.cluster.errors import (
    AlreadyExists,
    ClusterUnavailable,
    ConflictError,
    InvalidRequest,
    NotAllowed,
    NotFound,
    OperationFailed,
    PvcError,
    WaitTimeout,
)
from pvc_tui.cluster.models import VM, Node, VMRuntime
from pvc_tui.cluster.store import ClusterSnapshot, ClusterStore, StoreChange

__all__ = [
    "VM",
    "AlreadyExists",
    "ClusterClient",
    "ClusterSnapshot",
    "ClusterStore",
    "ClusterUnavailable",
    "ConflictError",
    "InvalidRequest",
    "Node",
    "NotAllowed",
    "NotFound",
    "OperationFailed",
    "PvcError",
    "StoreChange",
    "VMRuntime",
    "WaitTimeout",
]
