"""Target ranking rules (pure: no cluster needed)."""

from __future__ import annotations

import pytest

from pvc_tui.cluster import InvalidRequest
from pvc_tui.cluster.models import VM, Node
from pvc_tui.cluster.placement import Planned, rank


def node(name: str, **figures: object) -> Node:
    values: dict[str, object] = {"daemon_state": "run", "domain_state": "ready", "alive": True,
                                 "mem_total_mib": 8192}
    values.update(figures)
    return Node(name=name, **values)  # type: ignore[arg-type]


VM1 = VM(uuid="u", name="web1", state="start", node="hv1", memory_mib=1024, vcpus=2)


def test_each_selector_and_name_ties() -> None:
    nodes = [node("hv1"), node("hv2", mem_allocated_mib=4096, load=0.5, vcpus_allocated=1,
                               vm_count=3),
             node("hv3", mem_allocated_mib=1024, load=0.5, vcpus_allocated=6, vm_count=1),
             node("hv4", mem_allocated_mib=1024, load=2.0, vcpus_allocated=1, vm_count=1)]
    best = {s: rank(nodes, VM1, s).best.name for s in ("mem", "load", "vcpus", "vms")}  # type: ignore[union-attr]
    assert best == {"mem": "hv3", "load": "hv2", "vcpus": "hv2", "vms": "hv3"}


def test_rejections_say_why_and_nothing_falls_back() -> None:
    nodes = [node("hv1"), node("hv2", daemon_state="dead", alive=False),
             node("hv3", domain_state="flushed"), node("hv4", mem_allocated_mib=7680)]
    choice = rank(nodes, VM1)
    assert choice.best is None
    assert choice.why_none() == ("hv1: the VM's current node; hv2: agent is dead; "
                                 "hv3: node is flushed; hv4: 512 MiB free, needs 1024 MiB")


def test_planned_placements_count() -> None:
    nodes = [node("hv2"), node("hv3")]
    planned = {"hv2": Planned(memory_mib=2048, vcpus=4, vms=2)}
    assert rank(nodes, VM1, "mem", planned).best.name == "hv3"  # type: ignore[union-attr]
    assert rank(nodes, VM1, "vms", planned).best.name == "hv3"  # type: ignore[union-attr]


def test_unknown_selector() -> None:
    with pytest.raises(InvalidRequest, match="unknown selector 'cheapest'"):
        rank([], VM1, "cheapest")
