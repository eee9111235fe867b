"""The tagging decision: table-driven cases and the "never overwrites" invariant."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autopilot.tags import clean_value
from owner_tagger.identity import Resolution
from owner_tagger.plan import Target, decide

pytestmark = pytest.mark.unit

BOB = Resolution("bob", "person", "IAM user name")
NOBODY = Resolution(None, "unresolved", "unknown-type")
INSTANCE = Target("i-1", "instance")
VOLUME = Target("vol-1", "volume", parent="i-1")
ENI = Target("eni-1", "network-interface", parent="i-1")


def test_fresh_launch_tags_everything_with_the_caller() -> None:
    plan = decide([INSTANCE, VOLUME, ENI], {}, BOB)
    assert plan.writes() == {"bob": ["i-1", "vol-1", "eni-1"]}


def test_existing_owner_is_kept_and_attachments_inherit_it() -> None:
    plan = decide([INSTANCE, VOLUME, ENI], {"i-1": "team-data"}, BOB)
    assert [(d.target.id, d.action, d.value, d.source) for d in plan.decisions] == [
        ("i-1", "keep", "team-data", "existing"),
        ("vol-1", "tag", "team-data", "instance"),
        ("eni-1", "tag", "team-data", "instance"),
    ]


def test_attachment_with_own_owner_is_kept() -> None:
    plan = decide([INSTANCE, VOLUME], {"vol-1": "someone"}, BOB)
    assert plan.writes() == {"bob": ["i-1"]}
    assert plan.of("keep")[0].value == "someone"


def test_empty_existing_value_still_counts_as_existing() -> None:
    plan = decide([INSTANCE, VOLUME], {"i-1": ""}, BOB)
    assert plan.of("keep")[0].target == INSTANCE
    assert plan.writes() == {"bob": ["vol-1"]}  # nothing usable to inherit: the caller


def test_unresolved_owner_tags_nothing_unless_inherited() -> None:
    assert decide([INSTANCE, VOLUME], {}, NOBODY).writes() == {}
    assert [d.target.id for d in decide([INSTANCE, VOLUME], {}, NOBODY).of("unresolved")] == ["i-1", "vol-1"]
    assert decide([INSTANCE, VOLUME], {"i-1": "ops"}, NOBODY).writes() == {"ops": ["vol-1"]}


def test_duplicate_targets_are_decided_once() -> None:
    assert len(decide([INSTANCE, INSTANCE, VOLUME], {}, BOB).decisions) == 2


ids = st.sampled_from(
    [f"i-{n}" for n in range(4)] + [f"vol-{n}" for n in range(4)] + [f"eni-{n}" for n in range(4)]
)
values = st.text(max_size=300)


@st.composite
def targets(draw: st.DrawFn) -> Target:
    resource_id = draw(ids)
    kind = {"i": "instance", "vol": "volume", "eni": "network-interface"}[resource_id.split("-")[0]]
    parent = None if kind == "instance" else draw(st.none() | st.sampled_from([f"i-{n}" for n in range(4)]))
    return Target(resource_id, kind, parent)


owners = st.one_of(
    st.just(NOBODY),
    values.map(lambda v: Resolution(clean_value(v).strip() or None, "person", "x")),
)


@settings(max_examples=500)
@given(st.lists(targets(), max_size=12), st.dictionaries(ids, values, max_size=8), owners)
def test_never_overwrites_and_always_writes_valid_values(
    target_list: list[Target], current: dict[str, str], owner: Resolution
) -> None:
    plan = decide(target_list, current, owner)
    decided = [d.target.id for d in plan.decisions]
    assert sorted(decided) == sorted({t.id for t in target_list})  # each exactly once
    for value, resource_ids in plan.writes().items():
        assert not set(resource_ids) & set(current)  # never a resource that has the tag
        assert value and clean_value(value) == value  # a valid, non-empty tag value
    for decision in plan.of("keep"):
        assert decision.value == current[decision.target.id]
