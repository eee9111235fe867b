"""run.py: ``plan`` gathers and decides and changes nothing; ``act`` carries out the intent,
idempotently - resumed, it re-reads the owner tags first - and calls nothing in dry run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore.stub import Stubber

from autopilot import aws, runner
from autopilot.recorder import CallRecorder
from owner_tagger import run

pytestmark = pytest.mark.integration
Load = Callable[[str], dict[str, Any]]


def _pending(instance_id: str, enis: list[str] | None = None) -> dict[str, Any]:
    return {
        "InstanceId": instance_id,
        "State": {"Name": "pending"},
        "RootDeviceType": "ebs",
        "BlockDeviceMappings": [],
        "NetworkInterfaces": [{"NetworkInterfaceId": n} for n in enis or []],
        "LaunchTime": runner.clock(),  # launched by the event's call (the samples are dated now)
    }


def test_volumes_not_yet_attached_are_waited_for(
    owner_env: dict[str, str], load_event: Load, helpers: Any
) -> None:
    """Moto attaches volumes at once, so the pending state is stubbed: first answer without the
    root volume, the second with it. The wait is bounded and uses the injected sleep."""
    the_run = helpers.make_run(load_event("owner_tagger/cloudtrail.run_instances.iam_user"))
    instance_id = the_run.trigger.resource_ids[0]
    eni = the_run.trigger.instances[0].network_interface_ids[0]
    pending = _pending(instance_id, [eni])
    attached = {
        **pending,
        "State": {"Name": "running"},
        "BlockDeviceMappings": [{"DeviceName": "/dev/xvda", "Ebs": {"VolumeId": "vol-0123456789abcdef0"}}],
    }
    slept: list[float] = []
    with Stubber(aws.client("ec2")) as stub:
        for instance in (pending, attached):
            stub.add_response("describe_instances", {"Reservations": [{"Instances": [instance]}]})
        stub.add_response(
            "create_tags",
            {},
            {
                "Resources": [instance_id, "vol-0123456789abcdef0", eni],
                "Tags": [{"Key": "Owner", "Value": "bob"}],
            },
        )
        planned = run.plan(the_run, sleep=slept.append)
        assert planned.intent is not None
        result = run.act(helpers.make_context(), planned.intent)
        stub.assert_no_pending_responses()
    assert slept == [2.0]
    assert planned.intent["volumes_missing"] == [] and result["failed"] == []
    assert result["tagged"] == dict.fromkeys([instance_id, "vol-0123456789abcdef0", eni], "bob")


def test_volumes_never_attached_are_in_the_intent(
    owner_env: dict[str, str], load_event: Load, helpers: Any
) -> None:
    the_run = helpers.make_run(load_event("owner_tagger/cloudtrail.run_instances.iam_user"))
    instance_id = the_run.trigger.resource_ids[0]
    slept: list[float] = []
    with Stubber(aws.client("ec2")) as stub:
        for _ in range(4):
            stub.add_response(
                "describe_instances", {"Reservations": [{"Instances": [_pending(instance_id)]}]}
            )
        planned = run.plan(the_run, sleep=slept.append)
        stub.assert_no_pending_responses()
    assert slept == [2.0, 4.0, 8.0]  # bounded: 14 s in all
    assert planned.intent is not None
    assert [t["id"] for t in planned.intent["volumes_missing"]] == [instance_id]
    assert planned.intent["waited_seconds"] == 14.0


def test_wait_respects_the_deadline(owner_env: dict[str, str], load_event: Load, helpers: Any) -> None:
    the_run = helpers.make_run(load_event("owner_tagger/cloudtrail.run_instances.iam_user"), remaining=21.0)
    with Stubber(aws.client("ec2")) as stub:
        stub.add_response(
            "describe_instances",
            {"Reservations": [{"Instances": [_pending(the_run.trigger.resource_ids[0])]}]},
        )
        slept: list[float] = []
        run.plan(the_run, sleep=slept.append)
        stub.assert_no_pending_responses()
    assert slept == []


def test_plan_changes_nothing(
    owner_env: dict[str, str], load_event: Load, launch: Any, helpers: Any, calls: CallRecorder
) -> None:
    instances = launch(2)
    the_run = helpers.make_run(
        helpers.retarget(load_event("owner_tagger/cloudtrail.run_instances.iam_user"), instances)
    )
    planned = run.plan(the_run)
    assert calls.mutating() == []
    assert planned.intent is not None and len(planned.intent["tag"]) == 6
    assert (planned.counts.checked, planned.counts.skipped) == (6, 0)
    assert [d["action"] for d in planned.decisions] == ["tag"] * 6
    assert {d["value"] for d in planned.decisions} == {"bob"}


def test_act_in_dry_run_calls_nothing(
    owner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, helpers: Any, calls: CallRecorder
) -> None:
    monkeypatch.setenv("DRY_RUN", "true")
    intent = {"tag": [{"id": "i-0123456789abcdef0", "value": "bob"}], "unresolved": [], "volumes_missing": []}
    for resumed in (False, True):
        assert run.act(helpers.make_context(resumed=resumed), intent) == {
            "tagged": {},
            "failed": [],
            "found": {},
            "kept": {},
        }
    assert calls.calls == []


def test_act_resumed_reads_the_owner_tags_first_and_keeps_what_it_finds(
    owner_env: dict[str, str], launch: Any, ec2: Any, helpers: Any, calls: CallRecorder
) -> None:
    instance = launch(1)[0]["InstanceId"]
    volumes, enis = helpers.attachments(ec2, instance)
    ec2.create_tags(Resources=[instance], Tags=[{"Key": "Owner", "Value": "bob"}])  # the earlier attempt
    ec2.create_tags(Resources=[volumes[0]], Tags=[{"Key": "Owner", "Value": "alice"}])  # someone, meanwhile
    intent = {"tag": [{"id": r, "value": "bob"} for r in (instance, volumes[0], enis[0])]}
    result = run.act(helpers.make_context(resumed=True), intent)
    assert result == {
        "tagged": {enis[0]: "bob"},
        "failed": [],
        "found": {instance: "bob", volumes[0]: "alice"},
        "kept": {},
    }
    assert helpers.tags_of(ec2, volumes[0])["Owner"] == "alice"
    assert calls.by_operation() == {"ec2.DescribeTags": 1, "ec2.CreateTags": 1}
    assert calls.of("ec2", "CreateTags")[0]["Resources"] == [enis[0]]


def test_act_not_resumed_writes_without_reading(
    owner_env: dict[str, str], launch: Any, helpers: Any, calls: CallRecorder
) -> None:
    instance = launch(1)[0]["InstanceId"]
    result = run.act(helpers.make_context(), {"tag": [{"id": instance, "value": "bob"}]})
    assert result["tagged"] == {instance: "bob"}
    assert calls.by_operation() == {"ec2.CreateTags": 1}


def test_act_groups_writes_by_owner_value(
    owner_env: dict[str, str], launch: Any, helpers: Any, calls: CallRecorder
) -> None:
    first, second = (i["InstanceId"] for i in launch(2))
    run.act(helpers.make_context(), {"tag": [{"id": first, "value": "a"}, {"id": second, "value": "b"}]})
    assert [(p["Resources"], p["Tags"][0]["Value"]) for p in calls.of("ec2", "CreateTags")] == [
        ([first], "a"),
        ([second], "b"),
    ]


def test_act_with_nothing_to_write_calls_nothing(
    owner_env: dict[str, str], helpers: Any, calls: CallRecorder
) -> None:
    assert (
        run.act(helpers.make_context(resumed=True), {"tag": [], "unresolved": [{"id": "i-1"}]})["tagged"]
        == {}
    )
    assert calls.calls == []
