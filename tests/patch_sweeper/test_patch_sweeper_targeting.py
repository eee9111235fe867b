"""Targeting and batching: pure decisions, table-driven plus hypothesis invariants."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patch_sweeper.targeting import (
    FIX_CONNECTION,
    FIX_REGISTER,
    Instance,
    ManagedNode,
    decide_targets,
    opted_out,
    plan_batches,
)

pytestmark = pytest.mark.unit


def test_managed_unmanaged_opted_out_stopped() -> None:
    instances = [
        Instance("i-managed", tags={"Name": "web"}),
        Instance("i-unmanaged", tags={"Name": "legacy"}),
        Instance("i-lost"),
        Instance("i-inactive"),
        Instance("i-optout", tags={"AutoPatch": "false"}),
        Instance("i-optout-unmanaged", tags={"AutoPatch": "FALSE"}),
        Instance("i-stopped", state="stopped"),
    ]
    nodes = [
        ManagedNode("i-managed", "Online"),
        ManagedNode("i-lost", "ConnectionLost", last_ping="2026-11-01 10:00 UTC"),
        ManagedNode("i-inactive", "Inactive"),
        ManagedNode("i-optout", "Online"),
        ManagedNode("i-stopped", "Online"),
        ManagedNode("i-gone", "Online"),  # managed but not a running instance
    ]
    plan = decide_targets(instances, nodes)
    assert [t.id for t in plan.targets] == ["i-managed"]
    assert {i.id for i in plan.opted_out} == {"i-optout", "i-optout-unmanaged"}
    reasons = {n.instance.id: (n.reason, n.fix) for n in plan.not_patchable}
    assert reasons == {
        "i-unmanaged": ("not managed by Systems Manager", FIX_REGISTER),
        "i-lost": ("SSM Agent ConnectionLost since 2026-11-01 10:00 UTC", FIX_CONNECTION),
        "i-inactive": ("SSM Agent Inactive", FIX_CONNECTION),
    }
    assert "AmazonSSMManagedInstanceCore" in FIX_REGISTER


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({"AutoPatch": "false"}, True),
        ({"AutoPatch": " False "}, True),
        ({"AutoPatch": "never"}, True),
        ({"AutoPatch": "true"}, False),
        ({"AutoPatch": ""}, False),
        ({"autopatch": "false"}, False),  # tag keys are case-sensitive in EC2
        ({}, False),
    ],
)
def test_opt_out_values(tags: dict[str, str], expected: bool) -> None:
    assert opted_out(Instance("i-1", tags=tags)) is expected


def test_custom_opt_out_tag_key() -> None:
    plan = decide_targets(
        [Instance("i-1", tags={"Patching": "no"})], [ManagedNode("i-1", "Online")], opt_out_tag="Patching"
    )
    assert not plan.targets and len(plan.opted_out) == 1


def test_batches_of_fifty() -> None:
    ids = [f"i-{n:017x}" for n in range(120)]
    batches = plan_batches(ids)
    assert [len(b) for b in batches] == [50, 50, 20]
    assert [i for b in batches for i in b] == ids
    assert plan_batches([]) == []
    with pytest.raises(ValueError):
        plan_batches(ids, 51)


instance_ids = st.from_regex(r"i-[0-9a-f]{8}", fullmatch=True)
tag_values = st.sampled_from(["false", "False", "true", "", "never", "yes", "no"])
states = st.sampled_from(["running", "running", "stopped", "pending", "stopping"])
pings = st.sampled_from(["Online", "Online", "ConnectionLost", "Inactive"])


@st.composite
def fleets(draw: st.DrawFn) -> tuple[list[Instance], list[ManagedNode]]:
    ids = draw(st.lists(instance_ids, unique=True, max_size=150))
    instances = []
    nodes = []
    for instance_id in ids:
        tags = {"AutoPatch": draw(tag_values)} if draw(st.booleans()) else {}
        instances.append(Instance(instance_id, state=draw(states), tags=tags))
        if draw(st.booleans()):
            nodes.append(ManagedNode(instance_id, draw(pings)))
    return instances, nodes


@given(fleets())
def test_every_running_instance_lands_in_exactly_one_list(
    fleet: tuple[list[Instance], list[ManagedNode]],
) -> None:
    instances, nodes = fleet
    plan = decide_targets(instances, nodes)
    targets = [t.id for t in plan.targets]
    broken = [n.instance.id for n in plan.not_patchable]
    skipped = [i.id for i in plan.opted_out]
    running = sorted(i.id for i in instances if i.state == "running")
    assert sorted(targets + broken + skipped) == running


@given(fleets())
def test_opted_out_or_offline_instances_are_never_targeted(
    fleet: tuple[list[Instance], list[ManagedNode]],
) -> None:
    instances, nodes = fleet
    online = {n.instance_id for n in nodes if n.ping_status == "Online"}
    plan = decide_targets(instances, nodes)
    for target in plan.targets:
        assert not opted_out(target)
        assert target.state == "running"
        assert target.id in online


@given(fleets())
def test_batches_cover_targets_once_and_stay_within_the_api_limit(
    fleet: tuple[list[Instance], list[ManagedNode]],
) -> None:
    plan = decide_targets(*fleet)
    batches = plan.batches()
    assert all(1 <= len(b) <= 50 for b in batches)
    flat = [i for b in batches for i in b]
    assert flat == [t.id for t in plan.targets]
    assert len(batches) == -(-len(plan.targets) // 50)
