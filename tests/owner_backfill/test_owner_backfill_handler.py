"""owner_backfill end to end on moto, with a simulated CloudTrail history: who gets which owner,
what is never touched, the calls (LookupEvents counted at the API's 50 a page), a pass carried
over several runs, one mail per pass, dry run, and the function switched off."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import boto3
import pytest

from autopilot import runtime
from autopilot.recorder import CallRecorder
from conftest import EVENTS, FakeContext
from demo.cloudtrail import History, iam_user, record
from owner_backfill import app
from tests.owner_backfill.conftest import created, tags_of

pytestmark = pytest.mark.integration

Event = Callable[[], dict[str, Any]]
Mailbox = Callable[[], list[dict[str, Any]]]
AMI = "ami-12c6146b"


def launch(ec2: Any, count: int = 1, **kwargs: Any) -> list[str]:
    answer = ec2.run_instances(ImageId=AMI, MinCount=count, MaxCount=count, InstanceType="t3.micro", **kwargs)
    return [i["InstanceId"] for i in answer["Instances"]]


def volumes_of(ec2: Any, instance_id: str) -> list[str]:
    item = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return [m["Ebs"]["VolumeId"] for m in item["BlockDeviceMappings"]]


def made(history: History, ec2: Any, name: str, ids: list[str], who: str, delay: float = 2.0) -> None:
    """The creation call of ``ids`` in the history, ``delay`` seconds after they were created."""
    when = created(ec2, ids[0]) + timedelta(seconds=delay)
    history.add(record(name, ids, iam_user(who), when))


def run(event: dict[str, Any], remaining_ms: int = 300_000) -> dict[str, Any]:
    return app.lambda_handler(event, FakeContext(remaining_ms))


def lookups(calls: CallRecorder) -> int:
    return calls.by_operation().get("cloudtrail.LookupEvents", 0)


def test_every_kind_gets_its_creator_and_nothing_owned_is_touched(
    history: History, scheduled: Event, ec2: Any, calls: CallRecorder, mailbox: Mailbox
) -> None:
    bobs = launch(ec2, 2)
    made(history, ec2, "RunInstances", bobs, "bob")
    owned = launch(
        ec2, TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Owner", "Value": "team-x"}]}]
    )
    made(history, ec2, "RunInstances", owned, "mallory")  # its owner stays team-x
    (orphan,) = launch(ec2)  # no event in the history
    volume = ec2.create_volume(AvailabilityZone="eu-west-1a", Size=8)["VolumeId"]
    made(history, ec2, "CreateVolume", [volume], "carol")
    snapshot = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    made(history, ec2, "CreateSnapshot", [snapshot], "dave")
    image = ec2.create_image(InstanceId=orphan, Name="golden")["ImageId"]
    made(history, ec2, "CreateImage", [image], "erin")

    result = run(scheduled())

    for instance in bobs:
        assert tags_of(ec2, instance)["Owner"] == "bob"
        assert all(tags_of(ec2, v)["Owner"] == "bob" for v in volumes_of(ec2, instance))  # launched with it
    assert tags_of(ec2, owned[0])["Owner"] == "team-x"
    assert all(tags_of(ec2, v).get("Owner") != "mallory" for v in volumes_of(ec2, owned[0]))
    assert tags_of(ec2, volume)["Owner"] == "carol"
    assert tags_of(ec2, snapshot)["Owner"] == "dave"
    assert tags_of(ec2, image)["Owner"] == "erin"
    assert "Owner" not in tags_of(ec2, orphan)
    (mail,) = mailbox()
    assert "got an owner" in mail["subject"]
    assert orphan in mail["body"] and "no creation event in CloudTrail" in mail["body"]
    assert result["Failed"] == 0
    # again: the orphan is remembered, nothing is looked up, nothing said
    before = lookups(calls)
    run(scheduled())
    assert lookups(calls) == before and len(mailbox()) == 1


def test_an_owner_set_while_the_run_looks_is_kept(
    history: History, scheduled: Event, ec2: Any, calls: CallRecorder
) -> None:
    instances = launch(ec2)
    made(history, ec2, "RunInstances", instances, "bob")
    original = history.lookup

    def someone_tags_it_meanwhile(params: dict[str, Any]) -> dict[str, Any]:
        ec2.create_tags(Resources=instances, Tags=[{"Key": "Owner", "Value": "alice"}])
        return original(params)

    history.lookup = someone_tags_it_meanwhile  # type: ignore[method-assign]
    result = run(scheduled())
    assert tags_of(ec2, instances[0])["Owner"] == "alice"
    assert result["Skipped"] >= 1


def test_an_event_far_from_the_creation_time_gives_no_owner(
    history: History, scheduled: Event, ec2: Any
) -> None:
    """An event that names a resource but was not the call that made it (hours away from its
    creation) proves nothing: owner_tagger's own rule."""
    instances = launch(ec2)
    made(history, ec2, "RunInstances", instances, "mallory", delay=-3 * 3600)
    run(scheduled())
    assert "Owner" not in tags_of(ec2, instances[0])


def test_a_thousand_resources_in_the_fewest_lookups_the_api_allows(
    history: History, scheduled: Event, ec2: Any, calls: CallRecorder, mailbox: Mailbox
) -> None:
    """1,000 volumes, 1,000 CreateVolume events: ceil(1000 / 50) = 20 pages of the event name
    (plus 1 page per other event name the family has: none for volumes), not 1,000 calls."""
    volumes = [ec2.create_volume(AvailabilityZone="eu-west-1a", Size=1)["VolumeId"] for _ in range(1000)]
    for n, volume in enumerate(volumes):
        made(history, ec2, "CreateVolume", [volume], f"user{n % 7}")
    result = run(scheduled())
    assert result["ResourcesTagged"] == 1000
    assert all(tags_of(ec2, v)["Owner"] == f"user{n % 7}" for n, v in enumerate(volumes[:50]))
    assert lookups(calls) == 20
    assert len(mailbox()) == 1


def test_a_few_resources_in_a_loud_history_are_asked_for_by_id(
    history: History, scheduled: Event, ec2: Any, calls: CallRecorder
) -> None:
    """3 untagged volumes, then 5,000 CreateVolume events of volumes that are gone: paging
    (newest first) would cost 101 calls; after 3 pages (as many as there are volumes left) each
    is asked for by its id - at most three times the cheaper way."""
    volumes = [ec2.create_volume(AvailabilityZone="eu-west-1a", Size=1)["VolumeId"] for _ in range(3)]
    for volume in volumes:
        made(history, ec2, "CreateVolume", [volume], "carol")
    when = created(ec2, volumes[-1])
    noise = [f"vol-{n:017x}" for n in range(5000)]
    history.add(
        *(
            record("CreateVolume", [v], iam_user("x"), when + timedelta(seconds=10 + n))
            for n, v in enumerate(noise)
        )
    )
    run(scheduled())
    assert all(tags_of(ec2, v)["Owner"] == "carol" for v in volumes)
    assert lookups(calls) <= 3 * 3


def test_a_pass_longer_than_a_run_goes_on_in_the_next_run_and_mails_once(
    history: History,
    scheduled: Event,
    ec2: Any,
    calls: CallRecorder,
    mailbox: Mailbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Only the simulated pacing spends the run's time: moto's wall time (long on a busy
    # machine) must not, or a run could be left with no time for a single lookup.
    monkeypatch.setattr(runtime.Deadline, "remaining", lambda self: self.remaining_at_start - self.reserve)
    volumes = [ec2.create_volume(AvailabilityZone="eu-west-1a", Size=1)["VolumeId"] for _ in range(300)]
    for volume in volumes:
        made(history, ec2, "CreateVolume", [volume], "carol")
    # 51 s left, of which the runner keeps 20 and the writes 30: 1 s of lookups at 2 a second
    first = run(scheduled(), remaining_ms=51_000)
    assert 1 <= first["LookupCalls"] <= 2 and first["ResourcesTagged"] == 50 * first["LookupCalls"]
    assert mailbox() == []  # the pass is not over
    runs = 1
    while any("Owner" not in tags_of(ec2, v) for v in volumes):
        run(scheduled(), remaining_ms=51_000)
        runs += 1
        assert runs < 10
    assert runs > 1
    assert all(tags_of(ec2, v)["Owner"] == "carol" for v in volumes)
    assert lookups(calls) == 6  # ceil(300 / 50): the cursor carried, no page read twice
    (mail,) = mailbox()
    assert "300 resources got an owner" in mail["subject"]


def test_dry_run_writes_nothing_and_hides_nothing_from_the_real_run(
    history: History, scheduled: Event, ec2: Any, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    instances = launch(ec2, 2)
    made(history, ec2, "RunInstances", instances, "bob")
    monkeypatch.setenv("DRY_RUN", "true")
    run(scheduled())
    assert all("Owner" not in tags_of(ec2, i) for i in instances)
    (dry,) = mailbox()
    assert "DRY RUN" in dry["subject"] or "DRY RUN" in dry["body"]
    monkeypatch.setenv("DRY_RUN", "false")
    run(scheduled())
    assert all(tags_of(ec2, i)["Owner"] == "bob" for i in instances)
    assert len(mailbox()) == 2


def test_switched_off_it_looks_at_nothing(
    history: History, scheduled: Event, ec2: Any, calls: CallRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    instances = launch(ec2)
    made(history, ec2, "RunInstances", instances, "bob")
    monkeypatch.setenv("OWNER_BACKFILL", "false")
    run(scheduled())
    assert "Owner" not in tags_of(ec2, instances[0])
    assert not [op for op in calls.by_operation() if op.startswith(("ec2.", "cloudtrail."))]


def test_an_auto_scaling_launch_gets_the_groups_owner(
    history: History, scheduled: Event, ec2: Any, calls: CallRecorder
) -> None:
    """Auto Scaling launched it, which names nobody: the group's own owner tag does (as
    owner_tagger decides), one DescribeAutoScalingGroups for the run."""
    autoscaling = boto3.client("autoscaling", region_name="eu-west-1")
    autoscaling.create_launch_configuration(
        LaunchConfigurationName="web", ImageId=AMI, InstanceType="t3.micro"
    )
    owner = {"Key": "Owner", "Value": "web-team", "PropagateAtLaunch": False}
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="web",
        LaunchConfigurationName="web",
        MinSize=0,
        MaxSize=2,
        DesiredCapacity=0,
        AvailabilityZones=["eu-west-1a"],
        Tags=[{**owner, "ResourceId": "web", "ResourceType": "auto-scaling-group"}],
    )
    group_tag = [{"ResourceType": "instance", "Tags": [{"Key": "aws:autoscaling:groupName", "Value": "web"}]}]
    members = launch(ec2, 2, TagSpecifications=group_tag)
    service_identity = json.loads(
        (EVENTS / "owner_tagger/cloudtrail.run_instances.autoscaling.json").read_text()
    )
    when = created(ec2, members[0]) + timedelta(seconds=2)
    history.add(record("RunInstances", members, service_identity["detail"]["userIdentity"], when))
    run(scheduled())
    for member in members:
        assert tags_of(ec2, member)["Owner"] == "web-team"
        assert all(tags_of(ec2, v)["Owner"] == "web-team" for v in volumes_of(ec2, member))
    assert calls.count("autoscaling", "DescribeAutoScalingGroups") == 1


def test_an_owner_key_in_another_case_is_an_owner(
    history: History, scheduled: Event, ec2: Any, calls: CallRecorder
) -> None:
    """``owner=alice`` is alice's (IAM's Deny compares the key case-insensitively too): the
    instance is not looked for, and no ``Owner`` tag is added beside it."""
    instances = launch(
        ec2, TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "owner", "Value": "alice"}]}]
    )
    made(history, ec2, "RunInstances", instances, "mallory")
    run(scheduled())
    assert tags_of(ec2, instances[0]) == {"owner": "alice"}
    assert calls.by_operation().get("ec2.CreateTags", 0) == 1  # only the root volume (alice's)
    assert all(tags_of(ec2, v) == {"Owner": "alice"} for v in volumes_of(ec2, instances[0]))


def test_a_throttled_history_ends_the_runs_lookups_and_the_pass_goes_on(
    history: History, scheduled: Event, ec2: Any, mailbox: Mailbox
) -> None:
    """LookupEvents' quota is the account's: another tool paging the history makes the calls
    throttled beyond the client's retries. The run writes what it found and ends well; the next
    run goes on from its cursor, and the pass is mailed once."""
    volumes = [ec2.create_volume(AvailabilityZone="eu-west-1a", Size=1)["VolumeId"] for _ in range(300)]
    for volume in volumes:
        made(history, ec2, "CreateVolume", [volume], "carol")
    original, answered = history.lookup, []

    def throttled_after_one_page(params: dict[str, Any]) -> dict[str, Any]:
        if answered:
            raise ValueError("ThrottlingException")
        answered.append(params)
        return original(params)

    history.lookup = throttled_after_one_page  # type: ignore[method-assign]
    first = run(scheduled())
    assert first["status"] == "done" and first["ResourcesTagged"] == 50
    assert mailbox() == []
    history.lookup = original  # type: ignore[method-assign]
    run(scheduled())
    assert all(tags_of(ec2, v)["Owner"] == "carol" for v in volumes)
    (mail,) = mailbox()
    assert "300 resources got an owner" in mail["subject"]


def test_a_run_killed_between_two_writes_is_finished_by_the_retry_and_mailed_once(
    history: History, scheduled: Event, ec2: Any, mailbox: Mailbox
) -> None:
    """Two owners, so two CreateTags; the function dies before the second. The retry of the same
    event finishes from the recorded intent (the runner's outbox), writes nothing twice, keeps an
    owner set in between, and the pass is mailed once."""
    from autopilot import aws

    bobs = [ec2.create_volume(AvailabilityZone="eu-west-1a", Size=1)["VolumeId"] for _ in range(2)]
    carols = [ec2.create_volume(AvailabilityZone="eu-west-1a", Size=1)["VolumeId"] for _ in range(2)]
    for volume in bobs:
        made(history, ec2, "CreateVolume", [volume], "bob")
    for volume in carols:
        made(history, ec2, "CreateVolume", [volume], "carol")
    seen = []

    def die_at_the_second_write(**_: Any) -> None:
        seen.append(1)
        if len(seen) == 2:
            raise RuntimeError("killed")

    client = aws.client("ec2")
    client.meta.events.register("before-call.ec2.CreateTags", die_at_the_second_write)
    event = scheduled()
    with pytest.raises(RuntimeError, match="killed"):
        run(event)
    written = [v for v in bobs + carols if "Owner" in tags_of(ec2, v)]
    assert len(written) == 2 and mailbox() == []
    unwritten = [v for v in bobs + carols if v not in written]
    ec2.create_tags(Resources=[unwritten[0]], Tags=[{"Key": "Owner", "Value": "alice"}])  # meanwhile
    client.meta.events.unregister("before-call.ec2.CreateTags", die_at_the_second_write)
    run(event)  # Lambda's retry of the same event
    assert tags_of(ec2, unwritten[0])["Owner"] == "alice"
    assert {tags_of(ec2, v)["Owner"] for v in bobs if v != unwritten[0]} <= {"bob"}
    assert {tags_of(ec2, v)["Owner"] for v in carols if v != unwritten[0]} <= {"carol"}
    assert all("Owner" in tags_of(ec2, v) for v in bobs + carols)
    (mail,) = mailbox()
    assert "got an owner" in mail["subject"]
    run(scheduled())  # the next run: nothing left, no second mail
    assert len(mailbox()) == 1
