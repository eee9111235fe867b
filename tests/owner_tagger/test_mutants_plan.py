"""owner_tagger.decide.plan where `make mutate` (tools/mutate.py) found behaviour no test pinned
down: each test names the mutants it kills (mutmut's names; docs/mutation-survivors.md lists the
survivors explained instead). Pure decisions, no AWS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from owner_tagger.decide.identity import resolve_owner
from owner_tagger.decide.plan import Decision, InstanceView, Target, decide, intent, launch
from owner_tagger.event import CreationEvent, LaunchedInstance

pytestmark = pytest.mark.unit

CALLED = datetime(2024, 5, 14, 9, 17, tzinfo=UTC)


def run_instances(*instances: LaunchedInstance) -> CreationEvent:
    return CreationEvent(
        event_id="evt-1",
        event_name="RunInstances",
        resource_type="instance",
        resource_ids=tuple(i.id for i in instances),
        identity={"type": "IAMUser", "userName": "bob"},
        region="eu-west-1",
        instances=instances,
        event_time=CALLED,
    )


def view(instance_id: str, created: datetime = CALLED, **changes: object) -> InstanceView:
    fields: dict[str, object] = {
        "id": instance_id,
        "state": "running",
        "root_device_type": "ebs",
        "volume_ids": (f"vol-{instance_id[2:]}",),
        "created_at": created,
        **changes,
    }
    return InstanceView(**fields)  # type: ignore[arg-type]


def test_an_old_instance_named_by_the_event_does_not_stop_the_new_ones_after_it() -> None:
    # x_launch__mutmut_37 (continue -> break: every instance listed after an old one - safety
    # rule 7, not this call's - went untagged).
    event = run_instances(LaunchedInstance("i-0old"), LaunchedInstance("i-1new"))
    views = {"i-0old": view("i-0old", created=CALLED - timedelta(days=30)), "i-1new": view("i-1new")}
    found = launch(event, views, "Owner")
    assert [t.id for t in found.not_new] == ["i-0old"]
    assert [(t.id, t.type) for t in found.targets] == [("i-1new", "instance"), ("vol-1new", "volume")]


def test_the_events_network_interfaces_are_tagged_too_and_an_unnamed_instance_has_no_name() -> None:
    # x_launch__mutmut_44 (the network interfaces of the event's launch data were dropped), _15,
    # _17, _21 (no Name tag: the targets were named None or "XXXX").
    event = run_instances(LaunchedInstance("i-1new", network_interface_ids=("eni-1",)))
    found = launch(event, {"i-1new": view("i-1new")}, "Owner")
    assert [(t.id, t.type, t.parent, t.name) for t in found.targets] == [
        ("i-1new", "instance", None, ""),
        ("vol-1new", "volume", "i-1new", ""),
        ("eni-1", "network-interface", "i-1new", ""),
    ]


def test_the_intent_records_when_the_call_was_made_and_no_wait_unless_told() -> None:
    # x_intent__mutmut_1 (waited 1 s by default), _38, _39 (the call's time under another key).
    owner = resolve_owner({"type": "IAMUser", "userName": "bob"})
    decided = decide([Target("i-1new", "instance")], {}, owner)
    recorded = intent(run_instances(LaunchedInstance("i-1new")), owner, decided, None)
    assert recorded is not None
    assert (recorded["waited_seconds"], recorded["event_time"]) == (0.0, "2024-05-14T09:17:00+00:00")
    assert recorded["tag"] == [
        {"id": "i-1new", "type": "instance", "parent": None, "name": "", "value": "bob", "source": "identity"}
    ]


def test_a_resource_nobody_can_be_named_for_is_unresolved_from_no_source() -> None:
    # x_decide__mutmut_54, _61, _62 (the source of an unresolved decision None or "XXnoneXX").
    owner = resolve_owner({"type": "Unknown"})
    assert owner.value is None
    target = Target("i-1new", "instance")
    assert decide([target], {}, owner).decisions == (Decision(target, "unresolved", None, "none"),)
