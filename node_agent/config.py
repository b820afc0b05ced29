"""Agent configuration: a TOML file holds the same keys as the flags; flags override."""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from pvc_tui.cluster.auth import read_credentials_file
from pvc_tui.cluster.connection import check_hosts
from pvc_tui.cluster.domain_xml import check_name
from pvc_tui.cluster.errors import InvalidRequest
from pvc_tui.cluster.placement import check_selector
from pvc_tui.cluster.recovery import POLICIES

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True)
class AgentConfig:
    """Everything a node agent needs to know; see pvc-node-agent.sample.toml."""

    name: str = ""
    zk: str = "127.0.0.1:2181"
    libvirt_uri: str = "qemu:///system"
    console_log_dir: str = "/var/log/pvc/console"
    keepalive_interval: float = 5.0
    shutdown_timeout: float = 180.0
    zk_connect_timeout: float = 10.0
    reconcile_workers: int = 4
    migration_uri: str = ""  # how peers' libvirt reaches this node's, e.g. qemu+tcp://hv1/system
    migration_address: str = ""  # migration data URI, e.g. tcp://10.0.0.1
    flush_concurrency: int = 4  # VMs moved at once by a flush or ready
    target_selector: str = "mem"  # how a flush picks targets: mem, load, vcpus, vms
    console_log_lines: int = 1000  # lines of each VM's console kept in ZooKeeper
    console_log_interval: float = 0.5  # poll interval where inotify is not available
    console_publish_interval: float = 0.05  # at most one console publish per VM per this
    ceph_conf: str = ""  # ceph.conf of the cluster's Ceph: stand for storage primary
    zk_auth_file: str = ""  # 0600 file with the agent role's user:password (ACLs on)
    fence_intervals: int = 6  # a peer gone this many keepalive intervals is declared dead
    recovery: str = "none"  # none: the operator recovers; fence: fence, then recover
    fence_command: list[str] = field(default_factory=list)  # argv; {node} = the dead node
    log_level: str = "INFO"

    def validated(self) -> AgentConfig:
        """Return self if every value is usable, else raise InvalidRequest."""
        if not self.name:
            raise InvalidRequest("the node name is required (--name or `name` in the config)")
        check_name(self.name, "node name")
        if not self.libvirt_uri:
            raise InvalidRequest("a libvirt URI is required")
        check_hosts(self.zk)
        for key in ("keepalive_interval", "shutdown_timeout", "zk_connect_timeout"):
            value = getattr(self, key)
            if not math.isfinite(value) or not 0 < value <= 86400:
                raise InvalidRequest(f"{key} must be between 0 and 86400 seconds")
        if self.log_level not in LOG_LEVELS:
            raise InvalidRequest(f"log_level must be one of {', '.join(LOG_LEVELS)}")
        if not 1 <= self.reconcile_workers <= 64:
            raise InvalidRequest("reconcile_workers must be between 1 and 64")
        if not 1 <= self.flush_concurrency <= 64:
            raise InvalidRequest("flush_concurrency must be between 1 and 64")
        check_selector(self.target_selector)
        if not 10 <= self.console_log_lines <= 100_000:
            raise InvalidRequest("console_log_lines must be between 10 and 100000")
        for key in ("console_log_interval", "console_publish_interval"):
            value = getattr(self, key)
            if not math.isfinite(value) or not 0.01 <= value <= 60:
                raise InvalidRequest(f"{key} must be between 0.01 and 60 seconds")
        if not 1 <= self.fence_intervals <= 1000:
            raise InvalidRequest("fence_intervals must be between 1 and 1000")
        if self.recovery not in POLICIES:
            raise InvalidRequest(f"recovery must be one of {', '.join(POLICIES)}")
        if not all(isinstance(a, str) for a in self.fence_command):
            raise InvalidRequest("fence_command must be a list of strings (an argument list)")
        if self.recovery == "fence" and not self.fence_command:
            raise InvalidRequest("recovery = fence needs a fence_command (an argument list, "
                                 "e.g. [\"ipmitool\", \"-H\", \"{node}-ipmi\", ...])")
        if self.zk_auth_file:
            read_credentials_file(Path(self.zk_auth_file))  # readable, 0600, well-formed
        if self.ceph_conf and not Path(self.ceph_conf).is_file():
            raise InvalidRequest(f"ceph_conf {self.ceph_conf} is not a readable file")
        return self


def load_config(path: Path | None, overrides: dict[str, Any]) -> AgentConfig:
    """Read the TOML file at `path` (if given), then apply non-None `overrides`."""
    known = {f.name: f.type for f in fields(AgentConfig)}
    values: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text())
        except OSError as exc:
            raise InvalidRequest(f"cannot read config {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise InvalidRequest(f"config {path} is not valid TOML: {exc}") from None
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise InvalidRequest(f"config {path}: unknown key(s) {', '.join(unknown)}")
        values.update(raw)
    values.update({k: v for k, v in overrides.items() if v is not None})
    config = AgentConfig()
    for key, value in values.items():
        default = getattr(config, key)
        if isinstance(default, float) and isinstance(value, int):
            value = float(value)
        if type(value) is not type(default):
            raise InvalidRequest(f"config key {key} must be a {type(default).__name__}")
        config = replace(config, **{key: value})
    return config.validated()
