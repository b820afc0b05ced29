"""The ZooKeeper layout: every path and record format, defined once.

Both `pvc-tui` and `pvc-node-agent` import this module; no other module spells a
key path. All records are UTF-8 JSON objects. Small, frequently-read fields live in
one document per node and per VM, so that one watch covers a record and one
compare-and-set on the znode version updates it atomically; large blobs (the domain
XML) live in child znodes.

    /pvc/schema/version            "1"
    /pvc/schema/cluster_id         random hex id of this cluster
    /pvc/nodes/<name>              node record (NODE_FIELDS)
    /pvc/nodes/<name>/alive        ephemeral: exists while the node's agent is connected
    /pvc/vms/<uuid>                VM record (VM_FIELDS)
    /pvc/vms/<uuid>/xml            libvirt domain XML
    /pvc/vm_names/<name>           the VM's uuid (unique-name index, written in the same
                                   transaction as the VM record)
    /pvc/consoles/<uuid>           console buffer meta, with chunks of lines as children
    /pvc/storage/primary           ephemeral, holding the storage primary's node name
    /pvc/storage/status            what Ceph reports (STORAGE_STATUS_FIELDS)
    /pvc/storage/volumes/<p>@<v>   one RBD volume (STORAGE_VOLUME_FIELDS)
    /pvc/storage/requests/<id>     a storage request and, once answered, its result
    /pvc/storage/claims/<id>       ephemeral: the primary is running request <id>
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from typing import Any
from urllib.parse import quote, unquote

from pvc_tui.cluster.errors import PvcError

SCHEMA_VERSION = 1
ROOT = "/pvc"
SCHEMA_VERSION_PATH = f"{ROOT}/schema/version"
# A random id made with the schema: agents stamp it into the domains they define and
# only ever remove domains that carry it (a wrong or empty ZooKeeper removes nothing).
CLUSTER_ID_PATH = f"{ROOT}/schema/cluster_id"
NODES = f"{ROOT}/nodes"
VMS = f"{ROOT}/vms"
VM_NAMES = f"{ROOT}/vm_names"
CONSOLES = f"{ROOT}/consoles"  # console buffers (format: pvc_tui/cluster/console.py)

# Largest record we ever write; ZooKeeper's own limit is 1 MiB per znode.
MAX_RECORD_BYTES = 64 * 1024
MAX_XML_BYTES = 512 * 1024

# Names become znode path components and appear in terminals: keep them plain.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
UUID_PATTERN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class DaemonState(StrEnum):
    """Life of a node's agent."""

    INIT = "init"
    RUN = "run"
    STOP = "stop"
    DEAD = "dead"


class DomainState(StrEnum):
    """Whether a node accepts VMs (ready) or is being emptied (flush)."""

    READY = "ready"
    FLUSH = "flush"
    FLUSHED = "flushed"
    UNFLUSH = "unflush"


class VMState(StrEnum):
    """The desired state of a VM, written by operators; `fail` is set by agents."""

    START = "start"
    STOP = "stop"  # power off
    SHUTDOWN = "shutdown"  # graceful, then power off after the agent's shutdown_timeout
    RESTART = "restart"  # graceful shutdown, then start; the agent sets `start` when done
    FAIL = "fail"


class MigrationPhase(StrEnum):
    """Steps of a move. The target agent acts only once the source is done with it."""

    REQUESTED = "requested"  # written by the client with the new `node`
    MIGRATING = "migrating"  # the source agent started a live migration
    DONE = "done"  # the live migration landed: the domain runs on the target
    RELEASED = "released"  # the source powered it off: the target defines and starts it


MIGRATION_METHODS = ("", "live", "shutdown")


class PowerState(StrEnum):
    """What libvirt reports for a domain on its node (written by the agent)."""

    RUNNING = "running"
    SHUTOFF = "shutoff"
    PAUSED = "paused"
    CRASHED = "crashed"
    SHUTTING_DOWN = "shutting-down"
    UNDEFINED = "undefined"  # not (yet) defined on its node
    UNKNOWN = "unknown"


# The fields of each record, with their defaults. Agents own `runtime` in VM records
# and the resource figures in node records; operators own the rest.
VM_FIELDS: dict[str, Any] = {
    "name": "",
    "uuid": "",
    "state": VMState.STOP.value,
    "node": "",
    "previous_node": "",
    "failed_reason": "",
    "memory_mib": 0,
    "vcpus": 0,
    "runtime": {},
    "migration_method": "",  # "" (live where possible), "live" or "shutdown"
    "migration": {},  # the move in progress (MIGRATION_FIELDS), {} when none
    "last_migration": {},  # the last finished move: source, target, method, seconds
    "resume_on_ready": "",  # shut down by this node's flush: started again on its ready
}
MIGRATION_FIELDS: dict[str, Any] = {
    "id": "",
    "source": "",
    "target": "",
    "method": "",  # requested method; "" = live where possible, else shutdown
    "phase": "requested",  # MigrationPhase
    "used": "",  # the method the source used: live or shutdown
    "requested_at": 0.0,
    "previous_node": "",  # the VM's previous node before this move (for a withdrawal)
}
VM_RUNTIME_FIELDS: dict[str, Any] = {
    "power_state": PowerState.UNKNOWN.value,
    "node": "",
    "memory_mib": 0,
    "vcpus": 0,
    "cpu_time_ns": 0,
    "updated_at": 0.0,
    "reporter": "",  # the agent that wrote it: the content of its liveness znode
}
NODE_FIELDS: dict[str, Any] = {
    "name": "",
    "daemon_state": DaemonState.INIT.value,
    "domain_state": DomainState.READY.value,
    "agent_version": "",
    "libvirt_uri": "",
    "console_log_dir": "",
    "cpu_count": 0,
    "load": 0.0,
    "mem_total_mib": 0,
    "mem_used_mib": 0,
    "mem_free_mib": 0,
    "mem_allocated_mib": 0,
    "vcpus_allocated": 0,
    "vm_count": 0,
    "running_vms": [],
    "domains": [],  # uuids of the pvc-managed domains defined on this node's libvirt
    "keepalive_at": 0.0,
    "migration_uri": "",  # libvirt URI peers use to live-migrate onto this node
    "migration_address": "",  # migration data URI, e.g. tcp://10.0.0.2
    "domain_progress": {},  # the running or last flush/ready: action, items, finished
    "fence": {},  # a dead node's fencing and recovery: state, by, policy, at, reason, vms
}


# Storage (Ceph): the primary agent, the holder of the ephemeral STORAGE_PRIMARY, publishes what
# Ceph reports into STORAGE_STATUS and one record per RBD volume under STORAGE_VOLUMES,
# and executes the requests clients create under STORAGE_REQUESTS: it claims one by a
# compare-and-set of the request together with an ephemeral STORAGE_CLAIMS/<id> (gone
# if the primary dies), and writes the result and deletes the claim in one transaction.
STORAGE = f"{ROOT}/storage"
STORAGE_PRIMARY = f"{STORAGE}/primary"  # ephemeral: its holder is the storage primary
STORAGE_STATUS = f"{STORAGE}/status"
STORAGE_VOLUMES = f"{STORAGE}/volumes"  # children: <pool>@<volume>, percent-encoded
STORAGE_REQUESTS = f"{STORAGE}/requests"
STORAGE_CLAIMS = f"{STORAGE}/claims"
MAX_RESULT_BYTES = 900 * 1024  # a request's record with its result (znode limit 1 MiB)


class RequestState(StrEnum):
    """Life of a storage request."""

    PENDING = "pending"  # written by the client
    CLAIMED = "claimed"  # the primary is executing it
    DONE = "done"  # `ok` says whether it succeeded; `result` or `error` says what came


STORAGE_REQUEST_FIELDS: dict[str, Any] = {
    "id": "",
    "command": "",  # e.g. "volume.add" (pvc_tui/cluster/storage_commands.py)
    "args": {},
    "requested_by": "",  # host and pid of the client
    "claim_timeout": 0.0,  # seconds the client waits for a claim before withdrawing
    "state": RequestState.PENDING.value,
    "claimed_by": "",  # the primary's node
    "ok": False,
    "error_kind": "",  # "invalid", "not_found", "exists" or "failed"
    "error": "",
    "result": None,
    "finished_at": 0.0,
}
STORAGE_VOLUME_FIELDS: dict[str, Any] = {
    "pool": "",
    "name": "",
    "size": 0,  # bytes
    "used": 0,  # bytes allocated (whole objects), -1 if unknown
    "parent": "",  # pool/volume@snapshot of a copy-on-write clone
    "snapshots": [],  # {name, size, timestamp}
}
STORAGE_STATUS_FIELDS: dict[str, Any] = {
    "primary": "",  # the node whose agent wrote this
    "health": "",  # HEALTH_OK / HEALTH_WARN / HEALTH_ERR, or "" when Ceph is unreachable
    "health_checks": {},  # check name -> summary message
    "error": "",  # why Ceph could not be read, if it could not
    "usage": {},  # total_bytes, total_avail_bytes, total_used_raw_bytes, num_osds
    "osds": [],  # {id, host, up, in_cluster, weight, reweight, utilization, pgs, kb,
    #              kb_used}
    "flags": [],  # OSD map flags set (noout, ...)
    "pools": [],  # {name, id, stored, objects, percent_used, max_avail, size, min_size,
    #               pg_num, read_bytes_sec, write_bytes_sec}
    "updated_at": 0.0,
}


class RecordError(PvcError, ValueError):
    """A znode's content is not a valid record of this schema."""


class NewerRecord(RecordError):
    """A record written by a newer pvc: valid there, not to be overwritten here."""


def node_path(name: str) -> str:
    """Path of a node's record."""
    return f"{NODES}/{name}"


def node_alive_path(name: str) -> str:
    """Path of a node's ephemeral liveness znode."""
    return f"{NODES}/{name}/alive"


def alive_data(host: str, pid: int) -> bytes:
    """Content of a liveness znode: which agent process holds the node."""
    return f"{host} {pid}".encode()


def parse_alive(data: bytes | None) -> tuple[str, int]:
    """(host, pid) from a liveness znode; ("", 0) if unreadable."""
    try:
        host, pid = bytes(data or b"").decode().rsplit(" ", 1)
        return host, int(pid)
    except (UnicodeDecodeError, ValueError):
        return "", 0


def volume_key(pool: str, volume: str) -> str:
    """Znode name of a volume's record: `pool@volume`, each part percent-encoded."""
    return f"{quote(pool, safe='')}@{quote(volume, safe='')}"


def parse_volume_key(key: str) -> tuple[str, str]:
    """(pool, volume) from a volume record's znode name."""
    pool, _, volume = key.partition("@")
    return unquote(pool), unquote(volume)


def volume_path(pool: str, volume: str) -> str:
    """Path of a published volume record."""
    return volume_key_path(volume_key(pool, volume))


def volume_key_path(key: str) -> str:
    """Path of the volume record whose znode name (volume_key) is `key`."""
    return f"{STORAGE_VOLUMES}/{key}"


def storage_request_path(request_id: str) -> str:
    """Path of a storage request."""
    return f"{STORAGE_REQUESTS}/{request_id}"


def storage_claim_path(request_id: str) -> str:
    """Path of the ephemeral claim of a storage request by the primary."""
    return f"{STORAGE_CLAIMS}/{request_id}"


def vm_path(uuid: str) -> str:
    """Path of a VM's record."""
    return f"{VMS}/{uuid}"


def vm_xml_path(uuid: str) -> str:
    """Path of a VM's libvirt domain XML."""
    return f"{VMS}/{uuid}/xml"


def vm_name_path(name: str) -> str:
    """Path of the unique-name index entry for a VM name."""
    return f"{VM_NAMES}/{name}"


def encode(record: dict[str, Any], sort_keys: bool = True,
           limit: int = MAX_RECORD_BYTES) -> bytes:
    """Serialise a record; refuses anything over `limit` bytes.

    Keys are sorted (stable bytes for comparisons) unless `sort_keys` is False, for
    records written many times a second."""
    data = json.dumps(record, sort_keys=sort_keys, separators=(",", ":")).encode()
    if len(data) > limit:
        raise RecordError(f"record of {len(data)} bytes exceeds {limit}")
    return data


def decode(data: bytes | None, fields: dict[str, Any],
           limit: int = MAX_RECORD_BYTES) -> dict[str, Any]:
    """Parse a record, filling defaults for absent fields and checking types."""
    if data is None or data == b"":
        raise RecordError("empty record")
    if len(data) > limit:
        raise RecordError(f"record of {len(data)} bytes exceeds {limit}")
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordError(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise RecordError("not a JSON object")
    schema = raw.get("schema", SCHEMA_VERSION)
    if not isinstance(schema, int) or isinstance(schema, bool):
        raise RecordError(f"record schema {schema!r} is not a number")
    if schema > SCHEMA_VERSION:
        raise NewerRecord(f"written by a newer pvc (record schema {schema!r}; this one "
                          f"reads {SCHEMA_VERSION}): upgrade pvc-tui")
    record: dict[str, Any] = {}
    for key, default in fields.items():
        value = raw.get(key, default)
        if isinstance(default, bool) or not isinstance(default, (int, float, str, list, dict)):
            record[key] = value
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            record[key] = float(value)
        elif type(value) is not type(default):
            raise RecordError(f"field {key!r} should be {type(default).__name__}")
        else:
            record[key] = value
    return record


def new_vm_record(**values: Any) -> dict[str, Any]:
    """A complete VM record from defaults and the given values."""
    record: dict[str, Any] = json.loads(json.dumps(VM_FIELDS))
    record.update(values)
    return record


def new_node_record(**values: Any) -> dict[str, Any]:
    """A complete node record from defaults and the given values."""
    record: dict[str, Any] = json.loads(json.dumps(NODE_FIELDS))
    record.update(values)
    return record
