"""event.py: parsing CloudTrail creation events by lookup table; malformed events, and calls
that failed, are BadEvent."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from autopilot.events import BadEvent, EmptyEvent
from owner_tagger.event import CREATION_CALLS, parse

pytestmark = pytest.mark.unit
Load = Callable[[str], dict[str, Any]]

EXPECTED_IDS = {
    "cloudtrail.run_instances.sso_user": ("instance", ("i-0a1b2c3d4e5f60718",)),
    "cloudtrail.run_instances.multi_instance": (
        "instance",
        ("i-0d4e5f60718293a40", "i-0d4e5f60718293a41", "i-0d4e5f60718293a42"),
    ),
    "cloudtrail.create_volume.iam_user": ("volume", ("vol-0a1b2c3d4e5f60718",)),
    "cloudtrail.create_snapshot.saml_user": ("snapshot", ("snap-0a1b2c3d4e5f60718",)),
    "cloudtrail.create_snapshots.aws_service": (
        "snapshot",
        ("snap-0b2c3d4e5f6071829", "snap-0c3d4e5f607182930"),
    ),
    "cloudtrail.create_image.sso_user": ("image", ("ami-0a1b2c3d4e5f60718",)),
    "cloudtrail.copy_image.federated_user": ("image", ("ami-0b2c3d4e5f6071829",)),
    "cloudtrail.create_fleet.karpenter": ("instance", ("i-0d1e2f3a4b5c60718", "i-0e1f2a3b4c5d60719")),
}


@pytest.mark.parametrize(("name", "expected"), EXPECTED_IDS.items())
def test_resource_ids_come_from_the_lookup_table(load_event: Load, name: str, expected: Any) -> None:
    parsed = parse(load_event(f"owner_tagger/{name}"))
    assert (parsed.resource_type, parsed.resource_ids) == expected


def test_run_instances_launch_data(load_event: Load) -> None:
    parsed = parse(load_event("owner_tagger/cloudtrail.run_instances.multi_instance"))
    assert [i.network_interface_ids for i in parsed.instances] == [
        ("eni-0d4e5f60718293a40",),
        ("eni-0d4e5f60718293a41",),
        ("eni-0d4e5f60718293a42",),
    ]
    assert parsed.creation_tags_known


def test_tags_set_at_launch_are_known(load_event: Load) -> None:
    parsed = parse(load_event("owner_tagger/cloudtrail.run_instances.tagged_at_launch"))
    assert parsed.creation_tags["instance"]["Owner"] == "team-data"
    assert parsed.instances[0].tags["Owner"] == "team-data"


@pytest.mark.parametrize(
    ("fleet_set", "expected"),
    [
        ({"item": [{"instanceIds": {"item": ["i-0aaaaaaaaaaaaaaa1", "i-0aaaaaaaaaaaaaaa2"]}},
                   {"instanceIds": {"item": "i-0aaaaaaaaaaaaaaa3"}}]},
         ("i-0aaaaaaaaaaaaaaa1", "i-0aaaaaaaaaaaaaaa2", "i-0aaaaaaaaaaaaaaa3")),
        ({"item": {"instanceIds": {"item": ["i-0aaaaaaaaaaaaaaa1", "i-0aaaaaaaaaaaaaaa2"]}}},
         ("i-0aaaaaaaaaaaaaaa1", "i-0aaaaaaaaaaaaaaa2")),
        ({"item": {"instanceIds": {"item": "i-0aaaaaaaaaaaaaaa1"}}}, ("i-0aaaaaaaaaaaaaaa1",)),
    ],
)  # fmt: skip
def test_create_fleet_names_every_instance_in_each_logged_shape(
    load_event: Load, fleet_set: dict[str, Any], expected: tuple[str, ...]
) -> None:
    """One item per launch-template override, instanceIds.item a list or one id, the set one
    object for one item; a fleet launches from a template, so its tags are read, not assumed."""
    event = load_event("owner_tagger/cloudtrail.create_fleet.karpenter")
    event["detail"]["responseElements"]["CreateFleetResponse"]["fleetInstanceSet"] = fleet_set
    parsed = parse(event)
    assert parsed.resource_ids == expected and not parsed.creation_tags_known


def test_a_fleet_that_launched_nothing_names_no_instance(load_event: Load) -> None:
    event = load_event("owner_tagger/cloudtrail.create_fleet.karpenter")
    response = event["detail"]["responseElements"]["CreateFleetResponse"]
    response["fleetInstanceSet"] = ""
    response["errorSet"] = {"item": {"errorCode": "InsufficientInstanceCapacity", "lifecycle": "on-demand"}}
    # nothing was created, so nothing was missed: not a malformed event (no alarm), an empty one
    with pytest.raises(EmptyEvent, match=r"launched no instance \(InsufficientInstanceCapacity\)"):
        parse(event)
    response["errorSet"] = {
        "item": [{"errorCode": "InsufficientInstanceCapacity"}, {"errorCode": "Unsupported"}]
    }
    with pytest.raises(EmptyEvent, match=r"\(InsufficientInstanceCapacity, Unsupported\)"):
        parse(event)
    response["errorSet"] = ""  # no instance and no error: a shape not understood
    with pytest.raises(BadEvent, match="no resource ids") as raised:
        parse(event)
    assert not isinstance(raised.value, EmptyEvent)


def test_launch_template_makes_creation_tags_unknown(load_event: Load) -> None:
    parsed = parse(load_event("owner_tagger/cloudtrail.run_instances.autoscaling"))
    assert not parsed.creation_tags_known


def test_single_item_create_snapshots_response(load_event: Load) -> None:
    event = load_event("owner_tagger/cloudtrail.create_snapshots.aws_service")
    snapshot_set = event["detail"]["responseElements"]["CreateSnapshotsResponse"]["snapshotSet"]
    snapshot_set["item"] = snapshot_set["item"][0]
    assert parse(event).resource_ids == ("snap-0b2c3d4e5f6071829",)


@pytest.mark.parametrize("single", [False, True])
def test_create_snapshots_item_list_without_the_response_wrapper(load_event: Load, single: bool) -> None:
    """``responseElements.snapshotSet.item[]`` (singular ``item``, a list; one snapshot may come
    as an object), as issue 15 saw it: both snapshots named, none dropped as malformed."""
    event = load_event("owner_tagger/cloudtrail.create_snapshots.aws_service")
    response = event["detail"]["responseElements"]
    snapshot_set = response.pop("CreateSnapshotsResponse")["snapshotSet"]
    response["snapshotSet"] = {"item": snapshot_set["item"][0] if single else snapshot_set["item"]}
    expected = ("snap-0b2c3d4e5f6071829",) if single else ("snap-0b2c3d4e5f6071829", "snap-0c3d4e5f607182930")
    assert parse(event).resource_ids == expected


def test_failed_call_is_a_bad_event_naming_the_error(load_event: Load) -> None:
    """A failed call created nothing; the rule filters them out, so one that arrives anyway is
    turned down before the runner claims it (no AWS call at all)."""
    with pytest.raises(BadEvent, match=r"RunInstances failed \(Client.UnauthorizedOperation\)"):
        parse(load_event("owner_tagger/cloudtrail.run_instances.failed"))


def test_the_event_id_is_required(load_event: Load) -> None:
    """The runner claims the event by its id: without one it could not tell a duplicate."""
    event = load_event("owner_tagger/cloudtrail.run_instances.sso_user")
    event["id"] = "  "
    with pytest.raises(BadEvent, match=r"event\.id is empty"):
        parse(event)
    del event["id"]
    with pytest.raises(BadEvent, match="'id'"):
        parse(event)


def test_the_cloudtrail_event_id_is_kept_for_the_mail(load_event: Load) -> None:
    event = load_event("owner_tagger/cloudtrail.run_instances.sso_user")
    assert parse(event).event_id == event["detail"]["eventID"] != event["id"]


def test_a_huge_malformed_id_is_not_repeated_in_full(load_event: Load) -> None:
    event = load_event("owner_tagger/cloudtrail.run_instances.sso_user")
    event["detail"]["responseElements"]["instancesSet"]["items"][0]["instanceId"] = "x" * 100_000
    with pytest.raises(BadEvent) as raised:
        parse(event)
    assert len(str(raised.value)) < 200


def test_duplicate_ids_are_collapsed(load_event: Load) -> None:
    event = load_event("owner_tagger/cloudtrail.run_instances.sso_user")
    items = event["detail"]["responseElements"]["instancesSet"]["items"]
    items.append(copy.deepcopy(items[0]))
    assert parse(event).resource_ids == ("i-0a1b2c3d4e5f60718",)


def test_unreadable_launch_data_makes_creation_tags_unknown(load_event: Load) -> None:
    event = load_event("owner_tagger/cloudtrail.run_instances.iam_user")
    event["detail"]["requestParameters"]["tagSpecificationSet"] = "garbage"
    assert not parse(event).creation_tags_known


def _mutations() -> list[tuple[str, Callable[[dict[str, Any]], Any]]]:
    def drop(path: list[str]) -> Callable[[dict[str, Any]], Any]:
        def apply(event: dict[str, Any]) -> Any:
            target = event
            for key in path[:-1]:
                target = target[key]
            del target[path[-1]]

        return apply

    def put(path: list[str], value: Any) -> Callable[[dict[str, Any]], Any]:
        def apply(event: dict[str, Any]) -> Any:
            target = event
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value

        return apply

    return [
        ("no detail", drop(["detail"])),
        ("detail not an object", put(["detail"], ["x"])),
        ("other source", put(["source"], "aws.s3")),
        ("other detail-type", put(["detail-type"], "EC2 Instance State-change Notification")),
        ("other event name", put(["detail", "eventName"], "TerminateInstances")),
        ("other event source", put(["detail", "eventSource"], "s3.amazonaws.com")),
        ("no event name", drop(["detail", "eventName"])),
        ("no response", put(["detail", "responseElements"], None)),
        ("empty instances", put(["detail", "responseElements", "instancesSet", "items"], [])),
        (
            "bad instance id",
            put(["detail", "responseElements", "instancesSet", "items", 0, "instanceId"], "vol-1"),
        ),
        ("bad time", put(["time"], "yesterday")),
        ("no id", drop(["id"])),
        ("id not a string", put(["id"], 42)),
        ("failed call", put(["detail", "errorCode"], "Client.InstanceLimitExceeded")),
    ]


@pytest.mark.parametrize(("case", "mutate"), _mutations(), ids=[m[0] for m in _mutations()])
def test_malformed_events_are_bad_events(
    load_event: Load, case: str, mutate: Callable[[dict[str, Any]], Any]
) -> None:
    event = load_event("owner_tagger/cloudtrail.run_instances.sso_user")
    mutate(event)
    with pytest.raises(BadEvent):
        parse(event)


@pytest.mark.parametrize("event", [None, [], "RunInstances", 42, {}])
def test_not_an_event_at_all(event: Any) -> None:
    with pytest.raises(BadEvent):
        parse(event)


def test_every_call_in_the_table_has_a_sample_or_a_documented_id_path() -> None:
    assert set(CREATION_CALLS) >= {
        "RunInstances",
        "CreateVolume",
        "CreateSnapshot",
        "CreateSnapshots",
        "CreateImage",
        "CopyImage",
    }
    assert all(call.ids.startswith("responseElements.") for call in CREATION_CALLS.values())
