"""The handler against moto: what ends up tagged, what is kept, budgets by call count."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from autopilot import aws
from autopilot.recorder import CallRecorder
from autopilot.runtime import Deadline
from owner_tagger import app
from owner_tagger import ec2 as ec2_layer
from owner_tagger.config import OwnerTaggerConfig
from owner_tagger.service import digest, execute
from owner_tagger.trail import parse_creation_event

pytestmark = pytest.mark.integration
Load = Callable[[str], dict[str, Any]]


def run(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app.lambda_handler(event, context)


def ec2_ops(calls: CallRecorder) -> dict[str, int]:
    return {k: v for k, v in calls.by_operation().items() if k.startswith("ec2.")}


@pytest.mark.parametrize(
    ("sample", "owner"),
    [
        ("cloudtrail.run_instances.sso_user", "jane.doe@example.com"),
        ("cloudtrail.run_instances.iam_user", "bob"),
        ("cloudtrail.run_instances.root", "root"),
        ("cloudtrail.run_instances.instance_profile", "ci-runner/i-0fedcba9876543210"),
        ("cloudtrail.run_instances.federated_user", "carol"),
    ],
)
def test_instance_volumes_and_enis_tagged_in_two_calls(
    owner_env: dict[str, str],
    load_event: Load,
    launch: Any,
    ec2: Any,
    helpers: Any,
    calls: CallRecorder,
    lambda_context: Any,
    mailbox: Any,
    sample: str,
    owner: str,
) -> None:
    instances = launch(1)
    event = helpers.retarget(load_event(f"owner_tagger/{sample}"), instances)
    result = run(event, lambda_context)
    instance_id = instances[0]["InstanceId"]
    volumes, enis = helpers.attachments(ec2, instance_id)
    assert volumes and enis
    for resource in [instance_id, *volumes, *enis]:
        assert helpers.tags_of(ec2, resource)["Owner"] == owner
    assert ec2_ops(calls) == {"ec2.DescribeInstances": 1, "ec2.CreateTags": 1}
    assert calls.count("sns") == 0 and mailbox() == []  # nothing needs a human
    assert result["owner"] == owner and len(result["tagged"]) == 1 + len(volumes) + len(enis)


def test_multi_instance_launch_is_one_create_tags(
    owner_env: dict[str, str],
    load_event: Load,
    launch: Any,
    ec2: Any,
    helpers: Any,
    calls: CallRecorder,
    lambda_context: Any,
) -> None:
    instances = launch(3)
    run(
        helpers.retarget(load_event("owner_tagger/cloudtrail.run_instances.multi_instance"), instances),
        lambda_context,
    )
    expected: list[str] = []
    for instance in instances:
        volumes, enis = helpers.attachments(ec2, instance["InstanceId"])
        expected += [instance["InstanceId"], *volumes, *enis]
    assert all(helpers.tags_of(ec2, r)["Owner"] == "maria.garcia" for r in expected)
    assert ec2_ops(calls) == {"ec2.DescribeInstances": 1, "ec2.CreateTags": 1}
    assert sorted(helpers.create_tags_resources(calls.of("ec2", "CreateTags")[0])) == sorted(expected)


def test_owner_set_at_launch_is_kept_and_copied_to_attachments(
    owner_env: dict[str, str],
    load_event: Load,
    launch: Any,
    ec2: Any,
    helpers: Any,
    calls: CallRecorder,
    lambda_context: Any,
) -> None:
    tags = [{"Key": "Owner", "Value": "team-data"}, {"Key": "Name", "Value": "build-box"}]
    instances = launch(1, TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
    event = helpers.retarget(load_event("owner_tagger/cloudtrail.run_instances.tagged_at_launch"), instances)
    result = run(event, lambda_context)
    instance_id = instances[0]["InstanceId"]
    volumes, enis = helpers.attachments(ec2, instance_id)
    assert helpers.tags_of(ec2, instance_id)["Owner"] == "team-data"
    assert all(helpers.tags_of(ec2, r)["Owner"] == "team-data" for r in volumes + enis)
    assert instance_id not in helpers.create_tags_resources(calls.of("ec2", "CreateTags")[0])
    assert result["kept"] == {instance_id: "team-data"}
    # The instance already had an owner: the attachments' tags are read, not assumed.
    assert ec2_ops(calls) == {"ec2.DescribeInstances": 1, "ec2.DescribeTags": 1, "ec2.CreateTags": 1}


def test_volume_owner_set_at_launch_is_kept(
    owner_env: dict[str, str],
    load_event: Load,
    launch: Any,
    ec2: Any,
    helpers: Any,
    calls: CallRecorder,
    lambda_context: Any,
) -> None:
    spec = [{"ResourceType": "volume", "Tags": [{"Key": "Owner", "Value": "storage-team"}]}]
    instances = launch(1, TagSpecifications=spec)
    event = helpers.retarget(load_event("owner_tagger/cloudtrail.run_instances.iam_user"), instances)
    event["detail"]["requestParameters"]["tagSpecificationSet"] = {
        "items": [{"resourceType": "volume", "tags": [{"key": "Owner", "value": "storage-team"}]}]
    }
    run(event, lambda_context)
    volumes, enis = helpers.attachments(ec2, instances[0]["InstanceId"])
    assert all(helpers.tags_of(ec2, v)["Owner"] == "storage-team" for v in volumes)
    assert helpers.tags_of(ec2, instances[0]["InstanceId"])["Owner"] == "bob"
    assert all(helpers.tags_of(ec2, n)["Owner"] == "bob" for n in enis)
    assert not set(volumes) & set(helpers.create_tags_resources(calls.of("ec2", "CreateTags")[0]))
    assert ec2_ops(calls) == {"ec2.DescribeInstances": 1, "ec2.CreateTags": 1}


def test_owner_added_after_launch_is_never_overwritten(
    owner_env: dict[str, str],
    load_event: Load,
    launch: Any,
    ec2: Any,
    helpers: Any,
    calls: CallRecorder,
    lambda_context: Any,
) -> None:
    instances = launch(1)
    instance_id = instances[0]["InstanceId"]
    volumes, enis = helpers.attachments(ec2, instance_id)
    ec2.create_tags(Resources=[instance_id], Tags=[{"Key": "Owner", "Value": "alice"}])
    ec2.create_tags(Resources=[volumes[0]], Tags=[{"Key": "Owner", "Value": "carol"}])
    run(
        helpers.retarget(load_event("owner_tagger/cloudtrail.run_instances.iam_user"), instances),
        lambda_context,
    )
    assert helpers.tags_of(ec2, instance_id)["Owner"] == "alice"
    assert helpers.tags_of(ec2, volumes[0])["Owner"] == "carol"
    assert helpers.tags_of(ec2, enis[0])["Owner"] == "alice"  # inherited from the instance
    written = [r for c in calls.of("ec2", "CreateTags") for r in helpers.create_tags_resources(c)]
    assert instance_id not in written and volumes[0] not in written


def test_duplicate_delivery_is_harmless(
    owner_env: dict[str, str],
    load_event: Load,
    launch: Any,
    ec2: Any,
    helpers: Any,
    lambda_context: Any,
) -> None:
    instances = launch(2)
    event = helpers.retarget(load_event("owner_tagger/cloudtrail.run_instances.sso_user"), instances)
    run(event, lambda_context)
    with CallRecorder() as second:
        result = run(event, lambda_context)
    assert second.count("ec2", "CreateTags") == 0
    assert ec2_ops(second) == {"ec2.DescribeInstances": 1, "ec2.DescribeTags": 1}
    assert result["tagged"] == {} and len(result["kept"]) >= 4


def test_autoscaling_launch_reads_attachment_tags(
    owner_env: dict[str, str],
    load_event: Load,
    launch: Any,
    ec2: Any,
    helpers: Any,
    calls: CallRecorder,
    lambda_context: Any,
) -> None:
    instances = launch(1)
    run(
        helpers.retarget(load_event("owner_tagger/cloudtrail.run_instances.autoscaling"), instances),
        lambda_context,
    )
    volumes, enis = helpers.attachments(ec2, instances[0]["InstanceId"])
    for resource in [instances[0]["InstanceId"], *volumes, *enis]:
        assert helpers.tags_of(ec2, resource)["Owner"] == "autoscaling.amazonaws.com"
    # A launch template may tag volumes unseen in the event: one DescribeTags to be sure.
    assert ec2_ops(calls) == {"ec2.DescribeInstances": 1, "ec2.DescribeTags": 1, "ec2.CreateTags": 1}


@pytest.mark.parametrize(
    ("sample", "field", "owner"),
    [
        ("cloudtrail.create_volume.iam_user", "volumeId", "bob"),
        (
            "cloudtrail.create_volume.web_identity_user",
            "volumeId",
            "accounts.google.com/110234567890123456789",
        ),
        ("cloudtrail.create_snapshot.saml_user", "snapshotId", "dave@example.com"),
        ("cloudtrail.create_image.sso_user", "imageId", "jane.doe@example.com"),
        ("cloudtrail.copy_image.federated_user", "imageId", "carol"),
    ],
)
def test_other_creation_calls(
    owner_env: dict[str, str],
    load_event: Load,
    launch: Any,
    ec2: Any,
    helpers: Any,
    calls: CallRecorder,
    lambda_context: Any,
    sample: str,
    field: str,
    owner: str,
) -> None:
    instance = launch(1)[0]
    volume_id = helpers.attachments(ec2, instance["InstanceId"])[0][0]
    created = {
        "volumeId": lambda: ec2.create_volume(Size=8, AvailabilityZone="eu-west-1a")["VolumeId"],
        "snapshotId": lambda: ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"],
        "imageId": lambda: ec2.create_image(InstanceId=instance["InstanceId"], Name="web-image")["ImageId"],
    }[field]()
    run(helpers.set_resource_id(load_event(f"owner_tagger/{sample}"), field, created), lambda_context)
    assert helpers.tags_of(ec2, created)["Owner"] == owner
    assert ec2_ops(calls) == {"ec2.DescribeTags": 1, "ec2.CreateTags": 1}


def test_create_snapshots_tags_every_snapshot(
    owner_env: dict[str, str],
    load_event: Load,
    launch: Any,
    ec2: Any,
    helpers: Any,
    calls: CallRecorder,
    lambda_context: Any,
) -> None:
    volume_id = helpers.attachments(ec2, launch(1)[0]["InstanceId"])[0][0]
    snapshots = [ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"] for _ in range(2)]
    event = load_event("owner_tagger/cloudtrail.create_snapshots.aws_service")
    items = event["detail"]["responseElements"]["CreateSnapshotsResponse"]["snapshotSet"]["item"]
    for item, snapshot_id in zip(items, snapshots, strict=True):
        item["snapshotId"] = snapshot_id
    run(event, lambda_context)
    assert all(helpers.tags_of(ec2, s)["Owner"] == "dlm.amazonaws.com" for s in snapshots)
    assert ec2_ops(calls) == {"ec2.DescribeTags": 1, "ec2.CreateTags": 1}


def test_failed_call_changes_nothing(
    owner_env: dict[str, str], load_event: Load, calls: CallRecorder, lambda_context: Any, mailbox: Any
) -> None:
    result = run(load_event("owner_tagger/cloudtrail.run_instances.failed"), lambda_context)
    assert result["status"] == "skipped"
    assert calls.calls == [] and mailbox() == []


@pytest.mark.parametrize(
    "event", [{}, {"source": "aws.ec2"}, {"detail-type": "Scheduled Event", "source": "aws.events"}]
)
def test_malformed_event_logged_nothing_changed_not_retried(
    owner_env: dict[str, str],
    calls: CallRecorder,
    lambda_context: Any,
    event: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    result = run(event, lambda_context)
    assert result["status"] == "ignored"
    assert calls.calls == []
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert [r.getMessage() for r in errors] == ["ignored malformed event"]


def test_dry_run_decides_but_does_not_tag(
    owner_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    load_event: Load,
    launch: Any,
    ec2: Any,
    helpers: Any,
    calls: CallRecorder,
    lambda_context: Any,
) -> None:
    monkeypatch.setenv("DRY_RUN", "true")
    instances = launch(2)
    result = run(
        helpers.retarget(load_event("owner_tagger/cloudtrail.run_instances.iam_user"), instances),
        lambda_context,
    )
    assert calls.mutating() == []
    assert all("Owner" not in helpers.tags_of(ec2, i["InstanceId"]) for i in instances)
    assert set(result["would_tag"].values()) == {"bob"} and result["tagged"] == {}
    assert {i["InstanceId"] for i in instances} <= set(result["would_tag"])


def test_dry_run_still_mails_an_unresolved_owner(
    owner_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    load_event: Load,
    launch: Any,
    helpers: Any,
    calls: CallRecorder,
    lambda_context: Any,
    mailbox: Any,
) -> None:
    monkeypatch.setenv("DRY_RUN", "true")
    event = helpers.retarget(load_event("owner_tagger/cloudtrail.run_instances.iam_user"), launch(1))
    event["detail"]["userIdentity"] = {"type": "Unknown"}
    run(event, lambda_context)
    assert [c.operation for c in calls.mutating()] == ["Publish"]
    (mail,) = mailbox()
    assert mail["subject"].startswith(
        "[ops-autopilot-test] DRY RUN: Owner tag: owner unknown for 3 resources"
    )


def test_unresolved_owner_leaves_untagged_and_mails(
    owner_env: dict[str, str],
    load_event: Load,
    launch: Any,
    ec2: Any,
    helpers: Any,
    calls: CallRecorder,
    lambda_context: Any,
    mailbox: Any,
) -> None:
    instances = launch(1)
    event = helpers.retarget(load_event("owner_tagger/cloudtrail.run_instances.iam_user"), instances)
    event["detail"]["userIdentity"] = {"type": "Unknown", "principalId": "x"}
    result = run(event, lambda_context)
    assert calls.count("ec2", "CreateTags") == 0
    assert "Owner" not in helpers.tags_of(ec2, instances[0]["InstanceId"])
    assert len(result["unresolved"]) == 3
    (mail,) = mailbox()
    assert mail["attributes"] == {"automation": "owner_tagger", "severity": "warning"}
    assert instances[0]["InstanceId"] in mail["body"] and "create-tags" in mail["body"]
    assert len(mail["subject"]) < 100


def test_terminated_instance_is_skipped(
    owner_env: dict[str, str],
    load_event: Load,
    launch: Any,
    ec2: Any,
    helpers: Any,
    calls: CallRecorder,
    lambda_context: Any,
    mailbox: Any,
) -> None:
    instances = launch(2)
    ec2.terminate_instances(InstanceIds=[instances[1]["InstanceId"]])
    result = run(
        helpers.retarget(load_event("owner_tagger/cloudtrail.run_instances.iam_user"), instances),
        lambda_context,
    )
    assert result["gone"] == [instances[1]["InstanceId"]]
    assert helpers.tags_of(ec2, instances[0]["InstanceId"])["Owner"] == "bob"
    assert instances[1]["InstanceId"] not in helpers.create_tags_resources(calls.of("ec2", "CreateTags")[0])
    assert mailbox() == []


def test_custom_owner_tag_key(
    owner_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    load_event: Load,
    launch: Any,
    ec2: Any,
    helpers: Any,
    lambda_context: Any,
) -> None:
    monkeypatch.setenv("OWNER_TAG_KEY", "CreatedBy")
    instances = launch(1)
    run(
        helpers.retarget(load_event("owner_tagger/cloudtrail.run_instances.iam_user"), instances),
        lambda_context,
    )
    tags = helpers.tags_of(ec2, instances[0]["InstanceId"])
    assert tags.get("CreatedBy") == "bob" and "Owner" not in tags


def _config() -> OwnerTaggerConfig:
    return OwnerTaggerConfig.from_env()


def test_volumes_not_yet_attached_are_waited_for(
    owner_env: dict[str, str], load_event: Load, calls: CallRecorder, lambda_context: Any
) -> None:
    """Moto attaches volumes at once, so the pending state is stubbed: first answer without the
    root volume, the second with it. The wait is bounded and uses the injected sleep."""
    event = parse_creation_event(load_event("owner_tagger/cloudtrail.run_instances.iam_user"))
    instance_id = event.resource_ids[0]
    eni = event.instances[0].network_interface_ids[0]
    pending = {
        "InstanceId": instance_id,
        "State": {"Name": "pending"},
        "RootDeviceType": "ebs",
        "BlockDeviceMappings": [],
        "NetworkInterfaces": [{"NetworkInterfaceId": eni}],
    }
    attached = {
        **pending,
        "State": {"Name": "running"},
        "BlockDeviceMappings": [{"DeviceName": "/dev/xvda", "Ebs": {"VolumeId": "vol-0123456789abcdef0"}}],
    }
    client = aws.client("ec2")
    slept: list[float] = []
    with Stubber(client) as stub:
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
        outcome = execute(_config(), event, Deadline.from_context(lambda_context), sleep=slept.append)
        stub.assert_no_pending_responses()
    assert slept == [2.0]
    assert outcome.volumes_missing == [] and outcome.failures == []


def test_volumes_never_attached_are_reported(
    owner_env: dict[str, str], load_event: Load, lambda_context: Any
) -> None:
    event = parse_creation_event(load_event("owner_tagger/cloudtrail.run_instances.iam_user"))
    instance_id = event.resource_ids[0]
    pending = {
        "InstanceId": instance_id,
        "State": {"Name": "pending"},
        "RootDeviceType": "ebs",
        "BlockDeviceMappings": [],
        "NetworkInterfaces": [],
    }
    client = aws.client("ec2")
    slept: list[float] = []
    with Stubber(client) as stub:
        for _ in range(4):
            stub.add_response("describe_instances", {"Reservations": [{"Instances": [pending]}]})
        stub.add_response("create_tags", {})
        outcome = execute(_config(), event, Deadline.from_context(lambda_context), sleep=slept.append)
        stub.assert_no_pending_responses()
    assert slept == [2.0, 4.0, 8.0]  # bounded: 14 s in all
    assert [t.id for t in outcome.volumes_missing] == [instance_id]
    mail = digest(_config(), outcome)
    assert mail is not None
    message, subject, _ = mail
    assert subject == "Owner tag: volumes not tagged on 1 instance"
    assert instance_id in message.body("summary") and "14 s" in message.body("summary")


def test_wait_respects_the_deadline(owner_env: dict[str, str], load_event: Load) -> None:
    event = parse_creation_event(load_event("owner_tagger/cloudtrail.run_instances.iam_user"))
    pending = {
        "InstanceId": event.resource_ids[0],
        "State": {"Name": "pending"},
        "RootDeviceType": "ebs",
        "BlockDeviceMappings": [],
        "NetworkInterfaces": [],
    }
    with Stubber(aws.client("ec2")) as stub:
        stub.add_response("describe_instances", {"Reservations": [{"Instances": [pending]}]})
        stub.add_response("create_tags", {})
        slept: list[float] = []
        execute(_config(), event, Deadline(remaining_at_start=21.0), sleep=slept.append)
        stub.assert_no_pending_responses()
    assert slept == []


def test_tagging_failure_is_per_resource_reported_and_mailed(
    owner_env: dict[str, str],
    load_event: Load,
    launch: Any,
    ec2: Any,
    helpers: Any,
    calls: CallRecorder,
    lambda_context: Any,
    mailbox: Any,
) -> None:
    """The snapshot is deleted between the event and the tagging: that one fails (by error
    code), the batch is retried one by one, the others still get their tag."""
    volume_id = helpers.attachments(ec2, launch(1)[0]["InstanceId"])[0][0]
    snapshots = [ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"] for _ in range(2)]
    event = load_event("owner_tagger/cloudtrail.create_snapshots.aws_service")
    items = event["detail"]["responseElements"]["CreateSnapshotsResponse"]["snapshotSet"]["item"]
    for item, snapshot_id in zip(items, snapshots, strict=True):
        item["snapshotId"] = snapshot_id
    ec2.delete_snapshot(SnapshotId=snapshots[1])
    result = run(event, lambda_context)
    assert helpers.tags_of(ec2, snapshots[0])["Owner"] == "dlm.amazonaws.com"
    assert result["failed"] == {snapshots[1]: "InvalidSnapshot.NotFound"}
    assert calls.count("ec2", "CreateTags") == 3  # the batch, then one by one
    (mail,) = mailbox()
    assert "tagging failed for 1 resource" in mail["subject"] and snapshots[1] in mail["body"]


def test_create_tags_batches_at_the_api_maximum(owner_env: dict[str, str]) -> None:
    ids = [f"snap-{n:017x}" for n in range(2500)]
    with Stubber(aws.client("ec2")) as stub:
        for start, end in ((0, 1000), (1000, 2000), (2000, 2500)):
            expected = {"Resources": ids[start:end], "Tags": [{"Key": "Owner", "Value": "x"}]}
            stub.add_response("create_tags", {}, expected)
        assert ec2_layer.create_tags(ids, "Owner", "x") == []
        stub.assert_no_pending_responses()


def test_transient_errors_propagate_for_a_retry(owner_env: dict[str, str]) -> None:
    with Stubber(aws.client("ec2")) as stub:
        # The Stubber answers before the client's own retries: this is the error that is
        # left once they are exhausted. It must fail the invocation (so it is retried whole),
        # not be reported as a per-resource failure.
        stub.add_client_error("create_tags", service_error_code="RequestLimitExceeded", http_status_code=503)
        with pytest.raises(ClientError, match="RequestLimitExceeded"):
            ec2_layer.create_tags(["i-0123456789abcdef0", "vol-0123456789abcdef0"], "Owner", "x")
        stub.assert_no_pending_responses()
