"""Handlers of `pvc-tui acl` (ZooKeeper access control: see pvc_tui/cluster/auth.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pvc_tui.cli.commands import connect, resolve_zk
from pvc_tui.cluster import layout
from pvc_tui.cluster.auth import (
    ROLES,
    Credentials,
    acl_for,
    acl_ids,
    apply_acls,
    enable_acls,
    read_credentials_file,
)
from pvc_tui.cluster.client import ClusterClient
from pvc_tui.cluster.connection import ensure_schema
from pvc_tui.cluster.errors import InvalidRequest, Refused


def acl_status(args: argparse.Namespace) -> int:
    """`acl status`: whether ACLs are on, and the user name of each role."""
    with connect(args) as client:
        ids = acl_ids(client.zk)
    if ids is None:
        print("ACLs: off (anyone who can reach ZooKeeper may read and change everything)")
        return 0
    users = ", ".join(f"{role} = {ids[role].partition(':')[0]}" for role in ROLES)
    print(f"ACLs: on ({users})")
    return 0


def read_roles(directory: Path) -> dict[str, Credentials]:
    """The three roles' credentials from `directory`/agent, /operator and /viewer."""
    roles = {role: read_credentials_file(directory / role) for role in ROLES}
    users = [c.user for c in roles.values()]
    if len(set(users)) != len(users):
        raise InvalidRequest("the three roles need three different user names")
    return roles


def acl_enable(args: argparse.Namespace) -> int:
    """`acl enable --roles-dir DIR --yes`: switch ACLs on, for a new or a running
    cluster, connected as the agent role; run again, it re-applies them (finishing an
    interrupted run, or bringing an older cluster's ACLs up to date)."""
    roles = read_roles(args.roles_dir)
    if not args.yes:
        raise InvalidRequest("every agent needs zk_auth_file with the agent credentials "
                             "before this (without them it can no longer write): then "
                             "add --yes")
    hosts = resolve_zk(args.zk)
    with ClusterClient.connect(hosts, timeout=args.connect_timeout,
                               credentials=roles["agent"]) as client:
        wanted = {role: roles[role].digest_id for role in ROLES}
        current = acl_ids(client.zk)
        if current is None:
            enable_acls(client.zk, roles)
        elif current != wanted:
            raise Refused("ACLs are already on in this cluster, with other credentials")
        # Twice: what a client created during the first sweep, before it learnt the ids,
        # gets its ACL in the second. Running the command again repeats both (safe).
        apply_acls(client.zk, wanted)
        count = apply_acls(client.zk, wanted)
        if "/" in hosts:  # a chroot: its node is this cluster's too (never the real root)
            client.zk.set_acls("/", acl_for(layout.ROOT, wanted))
        ensure_schema(client.zk)
    print(f"ACLs on: {count} znodes under /pvc carry their role's ACL")
    return 0
