"""decide/plan.py: the tagging decision (table-driven cases and the "never overwrites"
invariant), what a RunInstances launch looks like, and the intent."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from owner_tagger.decide import (
    CREATED_WITHIN,
    InstanceView,
    Resolution,
    Target,
    caller,
    created_by_the_call,
    decide,
    intent,
    launch,
    waiting,
)
from owner_tagger.decide.identity import owner_value
from owner_tagger.event import parse

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
    values.map(lambda v: Resolution(owner_value(v), "person", "x")),
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
        assert value and owner_value(value) == value  # a valid tag value, naming something
    for decision in plan.of("keep"):
        assert decision.value == current[decision.target.id]


# -- a RunInstances launch, from DescribeInstances and the event ---------------------------------

Load = Callable[[str], dict[str, Any]]


def _views(event: Any, **changes: Any) -> dict[str, InstanceView]:
    return {
        i.id: InstanceView(
            **{
                "id": i.id,
                "state": "running",
                "root_device_type": "ebs",
                "volume_ids": (f"vol-{n:017x}",),
                "network_interface_ids": i.network_interface_ids,
                "created_at": event.event_time,  # created by the call (the usual case)
                **changes,
            }
        )
        for n, i in enumerate(event.instances)
    }


def test_fresh_launch_knows_every_owner_tag_without_reading(load_event: Load) -> None:
    event = parse(load_event("owner_tagger/cloudtrail.run_instances.multi_instance"))
    found = launch(event, _views(event), "Owner")
    assert [t.type for t in found.targets] == ["instance", "volume", "network-interface"] * 3
    assert found.current == {} and found.to_read == () and found.gone == ()
    assert all(t.parent == event.resource_ids[n // 3] for n, t in enumerate(found.targets) if t.parent)


def test_an_owner_on_the_instance_means_the_attachments_are_read(load_event: Load) -> None:
    event = parse(load_event("owner_tagger/cloudtrail.run_instances.sso_user"))
    found = launch(event, _views(event, tags={"Owner": "team-data", "Name": "web"}), "Owner")
    assert found.current == {event.resource_ids[0]: "team-data"}
    assert sorted(found.to_read) == sorted(t.id for t in found.targets if t.parent)
    assert {t.name for t in found.targets} == {"web"}


def test_a_launch_template_means_the_attachments_are_read(load_event: Load) -> None:
    event = parse(load_event("owner_tagger/cloudtrail.run_instances.autoscaling"))
    assert launch(event, _views(event), "Owner").to_read


def test_volume_tagged_at_launch_is_known_from_the_event(load_event: Load) -> None:
    raw = load_event("owner_tagger/cloudtrail.run_instances.iam_user")
    raw["detail"]["requestParameters"]["tagSpecificationSet"] = {
        "items": [{"resourceType": "volume", "tags": [{"key": "Owner", "value": "storage-team"}]}]
    }
    event = parse(raw)
    found = launch(event, _views(event), "Owner")
    assert found.current == {"vol-00000000000000000": "storage-team"} and found.to_read == ()
    assert launch(event, _views(event), "CreatedBy").current == {}  # another key: not an owner


def test_gone_and_volumeless_instances(load_event: Load) -> None:
    event = parse(load_event("owner_tagger/cloudtrail.run_instances.multi_instance"))
    first, second, third = event.resource_ids
    views = _views(event)
    views[second] = InstanceView(second, "terminated", "ebs")
    views[third] = InstanceView(third, "pending", "ebs", created_at=event.event_time)
    del views[first]
    found = launch(event, views, "Owner")
    assert found.gone == (first, second)
    assert [t.id for t in found.volumes_missing] == [third]
    assert waiting(event.resource_ids, views) == [first, third]  # not found, or no volume yet


def test_instance_store_instances_have_no_volume_to_wait_for() -> None:
    assert waiting(["i-1"], {"i-1": InstanceView("i-1", "running", "instance-store")}) == []


# -- the intent ----------------------------------------------------------------------------------


def test_intent_is_plain_json_with_what_act_and_report_need(load_event: Load) -> None:
    raw = load_event("owner_tagger/cloudtrail.run_instances.iam_user")
    event = parse(raw)
    decided = decide([INSTANCE, VOLUME], {}, BOB)
    found = intent(event, BOB, decided, caller(raw["detail"]["userIdentity"]), (INSTANCE,), 14.0)
    assert found is not None
    assert json.loads(json.dumps(found)) == found
    assert found["tag"] == [
        {"id": "i-1", "type": "instance", "parent": None, "name": "", "value": "bob", "source": "identity"},
        {"id": "vol-1", "type": "volume", "parent": "i-1", "name": "", "value": "bob", "source": "identity"},
    ]
    assert found["event"] == {
        "id": event.event_id,
        "name": "RunInstances",
        "caller": {"type": "IAMUser", "name": raw["detail"]["userIdentity"]["arn"]},
    }
    assert found["owner"] == {"value": "bob", "kind": "person", "reason": "IAM user name"}
    assert found["volumes_missing"] == [INSTANCE.as_dict()] and found["waited_seconds"] == 14.0


def test_nothing_to_write_or_tell_is_no_intent(load_event: Load) -> None:
    event = parse(load_event("owner_tagger/cloudtrail.run_instances.iam_user"))
    kept = decide([INSTANCE, VOLUME], {"i-1": "a", "vol-1": "b"}, BOB)
    assert intent(event, BOB, kept, None) is None
    unresolved = intent(event, NOBODY, decide([INSTANCE], {}, NOBODY), None)
    assert unresolved is not None and unresolved["tag"] == [] and len(unresolved["unresolved"]) == 1


@pytest.mark.unit
def test_created_by_the_call_means_within_15_minutes_of_it_and_known() -> None:
    call = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    assert created_by_the_call(call + timedelta(seconds=2), call)
    assert created_by_the_call(call - CREATED_WITHIN, call)
    assert not created_by_the_call(call - CREATED_WITHIN - timedelta(seconds=1), call)
    assert not created_by_the_call(call + CREATED_WITHIN + timedelta(seconds=1), call)
    assert not created_by_the_call(None, call) and not created_by_the_call(call, None)
