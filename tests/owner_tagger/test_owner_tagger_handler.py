"""The handler against moto, through the shared runner: what ends up tagged, what is kept, what
is mailed, exact call counts (the runner's DynamoDB calls included), and the failure sequences:
a run killed between two CreateTags, a mail SNS refused."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.core import DEFAULT_ACCOUNT_ID as ACCOUNT_ID
from moto.ec2.models import ec2_backends

from autopilot import aws, runner
from autopilot.outbox import Outbox, OutboxError
from autopilot.recorder import CallRecorder
from owner_tagger import app, service
from tests.owner_tagger.conftest import AMI_ID

pytestmark = pytest.mark.integration
Load = Callable[[str], dict[str, Any]]

# The runner's own calls per invocation: the Query for earlier runs' unfinished work and the
# claim (Powertools Idempotency: a conditional PutItem, then an UpdateItem with the result) ...
RUNNER = {"dynamodb.Query": 1, "dynamodb.PutItem": 1, "dynamodb.UpdateItem": 1}
# ... and, when the plan has an intent, the outbox entry: PutItem (recorded before acting),
# UpdateItem (acted: result and mail), DeleteItem (sent).
RUNNER_WITH_INTENT = {
    "dynamodb.Query": 1,
    "dynamodb.PutItem": 2,
    "dynamodb.UpdateItem": 2,
    "dynamodb.DeleteItem": 1,
}


def run(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app.lambda_handler(event, context)


def ops(calls: CallRecorder) -> dict[str, int]:
    return dict(calls.by_operation())


def ec2_ops(calls: CallRecorder) -> dict[str, int]:
    return {k: v for k, v in calls.by_operation().items() if k.startswith("ec2.")}


def outbox() -> list[Any]:
    return list(Outbox(os.environ["OUTBOX_TABLE"], "owner_tagger").unfinished())


def decisions(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    keys = ("resource", "type", "action", "value", "source", "dry_run")
    return [{k: getattr(r, k, None) for k in keys} for r in caplog.records if r.getMessage() == "decision"]


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
def test_instance_volumes_and_enis_tagged_in_two_ec2_calls(
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
    # The common case: 2 EC2 calls + the runner's 6 DynamoDB calls, no mail.
    assert ops(calls) == {**RUNNER_WITH_INTENT, "ec2.DescribeInstances": 1, "ec2.CreateTags": 1}
    assert calls.count("sns") == 0 and mailbox() == []  # nothing needs a human
    resources = 1 + len(volumes) + len(enis)
    assert (result["Checked"], result["Changed"], result["ResourcesTagged"]) == (resources,) * 3
    assert (result["Skipped"], result["Failed"], result["OwnersUnresolved"]) == (0, 0, 0)
    assert outbox() == []


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
    assert ops(calls) == {**RUNNER_WITH_INTENT, "ec2.DescribeInstances": 1, "ec2.CreateTags": 1}
    assert sorted(helpers.create_tags_resources(calls.of("ec2", "CreateTags")[0])) == sorted(expected)


def test_owner_set_at_launch_is_kept_and_copied_to_attachments(
    owner_env: dict[str, str],
    load_event: Load,
    launch: Any,
    ec2: Any,
    helpers: Any,
    calls: CallRecorder,
    lambda_context: Any,
    caplog: pytest.LogCaptureFixture,
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
    kept = [d for d in decisions(caplog) if d["action"] == "keep"]
    assert kept == [
        {"resource": instance_id, "type": "instance", "action": "keep", "value": "team-data"}
        | {"source": "existing", "dry_run": False}
    ]
    assert result["Skipped"] == 1 and result["Changed"] == len(volumes + enis)
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
    mailbox: Any,
) -> None:
    instances = launch(2)
    event = helpers.retarget(load_event("owner_tagger/cloudtrail.run_instances.sso_user"), instances)
    run(event, lambda_context)
    # The same event again (same id): the runner's claim attempt recognises it, and it only
    # looks for a held mail to send (none); nothing else.
    with CallRecorder() as second:
        again = run(event, lambda_context)
    assert again["status"] == "duplicate"
    assert ops(second) == {"dynamodb.PutItem": 1, "dynamodb.Query": 1}
    # The same call delivered as another event (another id): read, all kept, nothing written.
    with CallRecorder() as third:
        other = run(helpers.fresh(event), lambda_context)
    assert ops(third) == {**RUNNER, "ec2.DescribeInstances": 1, "ec2.DescribeTags": 1}
    assert other["Changed"] == 0 and other["Skipped"] == other["Checked"] == 6
    assert mailbox() == [] and outbox() == []


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
    assert ops(calls) == {
        **RUNNER_WITH_INTENT,
        "ec2.DescribeInstances": 1,
        "ec2.DescribeTags": 1,
        "ec2.CreateTags": 1,
    }


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
    describe = {"volumeId": "DescribeVolumes", "snapshotId": "DescribeSnapshots", "imageId": "DescribeImages"}
    # an image's backing snapshots come with it: one DescribeSnapshots more, the same CreateTags
    backing = {"ec2.DescribeSnapshots": 1} if field == "imageId" else {}
    assert ops(calls) == {**RUNNER_WITH_INTENT, f"ec2.{describe[field]}": 1, **backing, "ec2.CreateTags": 1}


def test_an_images_backing_snapshots_get_its_owner_and_an_old_one_is_refused(
    owner_env: dict[str, str],
    load_event: Load,
    launch: Any,
    ec2: Any,
    helpers: Any,
    calls: CallRecorder,
    lambda_context: Any,
) -> None:
    """Their storage is the image's cost: the snapshots behind a new image are tagged in the
    same CreateTags; one created long before the call (an image registered from an old
    snapshot) is not this call's and keeps no owner from it; a hand-set owner on one stays."""
    instance = launch(1)[0]["InstanceId"]
    image = ec2.create_image(InstanceId=instance, Name="web-image")["ImageId"]
    (snapshot,) = [
        m["Ebs"]["SnapshotId"]
        for m in ec2.describe_images(ImageIds=[image])["Images"][0]["BlockDeviceMappings"]
    ]
    event = helpers.set_resource_id(
        load_event("owner_tagger/cloudtrail.create_image.sso_user"), "imageId", image
    )
    run(event, lambda_context)
    assert (
        helpers.tags_of(ec2, image)["Owner"]
        == helpers.tags_of(ec2, snapshot)["Owner"]
        == "jane.doe@example.com"
    )
    (write,) = calls.of("ec2", "CreateTags")
    assert sorted(write["Resources"]) == sorted([image, snapshot])

    other = ec2.create_image(InstanceId=instance, Name="other-image")["ImageId"]
    (kept,) = [
        m["Ebs"]["SnapshotId"]
        for m in ec2.describe_images(ImageIds=[other])["Images"][0]["BlockDeviceMappings"]
    ]
    ec2.create_tags(Resources=[kept], Tags=[{"Key": "Owner", "Value": "storage-team"}])
    run(
        helpers.set_resource_id(
            load_event("owner_tagger/cloudtrail.copy_image.federated_user"), "imageId", other
        ),
        lambda_context,
    )
    assert helpers.tags_of(ec2, kept)["Owner"] == "storage-team"  # never overwritten
    assert helpers.tags_of(ec2, other)["Owner"] == "carol"

    registered = ec2.create_image(InstanceId=instance, Name="registered-image")["ImageId"]
    (old,) = [
        m["Ebs"]["SnapshotId"]
        for m in ec2.describe_images(ImageIds=[registered])["Images"][0]["BlockDeviceMappings"]
    ]
    backend = ec2_backends[ACCOUNT_ID]["eu-west-1"]
    backend.snapshots[old].start_time = backend.snapshots[old].start_time - timedelta(days=30)
    event = load_event("owner_tagger/cloudtrail.create_image.sso_user")
    run(helpers.set_resource_id(event, "imageId", registered), lambda_context)
    assert helpers.tags_of(ec2, registered)["Owner"] == "jane.doe@example.com"
    assert "Owner" not in helpers.tags_of(ec2, old)  # a month old: not made by this call


@pytest.mark.parametrize("wrapped", [True, False])
def test_create_snapshots_tags_every_snapshot(
    owner_env: dict[str, str],
    load_event: Load,
    launch: Any,
    ec2: Any,
    helpers: Any,
    calls: CallRecorder,
    lambda_context: Any,
    wrapped: bool,
) -> None:
    """In both logged shapes: with CreateSnapshotsResponse around snapshotSet.item[], and without."""
    volume_id = helpers.attachments(ec2, launch(1)[0]["InstanceId"])[0][0]
    snapshots = [ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"] for _ in range(2)]
    event = helpers.fresh(load_event("owner_tagger/cloudtrail.create_snapshots.aws_service"))
    response = event["detail"]["responseElements"]
    items = response["CreateSnapshotsResponse"]["snapshotSet"]["item"]
    for item, snapshot_id in zip(items, snapshots, strict=True):
        item["snapshotId"] = snapshot_id
    if not wrapped:
        response["snapshotSet"] = response.pop("CreateSnapshotsResponse")["snapshotSet"]
    run(event, lambda_context)
    assert all(helpers.tags_of(ec2, s)["Owner"] == "dlm.amazonaws.com" for s in snapshots)
    assert ec2_ops(calls) == {"ec2.DescribeSnapshots": 1, "ec2.CreateTags": 1}


def test_failed_call_changes_nothing(
    owner_env: dict[str, str], load_event: Load, calls: CallRecorder, lambda_context: Any, mailbox: Any
) -> None:
    """Turned down before the runner claims it: not a single AWS call."""
    result = run(load_event("owner_tagger/cloudtrail.run_instances.failed"), lambda_context)
    assert result["status"] == "ignored" and "Client.UnauthorizedOperation" in result["reason"]
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
    mailbox: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("DRY_RUN", "true")
    instances = launch(2)
    result = run(
        helpers.retarget(load_event("owner_tagger/cloudtrail.run_instances.iam_user"), instances),
        lambda_context,
    )
    # The runner records the intent (and forgets it); EC2 gets no write at all.
    assert ops(calls) == {**RUNNER_WITH_INTENT, "ec2.DescribeInstances": 1}
    assert all("Owner" not in helpers.tags_of(ec2, i["InstanceId"]) for i in instances)
    would_tag = {d["resource"]: d["value"] for d in decisions(caplog) if d["action"] == "tag"}
    everything: set[str] = set()  # each instance, its volume and its network interface
    for instance in instances:
        volumes, enis = helpers.attachments(ec2, instance["InstanceId"])
        everything |= {instance["InstanceId"], *volumes, *enis}
    assert len(everything) == 6 and would_tag == dict.fromkeys(everything, "bob")
    assert all(d["dry_run"] is True for d in decisions(caplog))
    assert result["dry_run"] is True and result["Changed"] == 0 and result["Checked"] == 6
    assert mailbox() == []  # the same mail rules as a real run: nothing needs a person


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
    assert [c.operation for c in calls.mutating() if c.service != "dynamodb"] == ["Publish"]
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
    assert result["OwnersUnresolved"] == 3 and result["Changed"] == 0
    assert ops(calls) == {**RUNNER_WITH_INTENT, "ec2.DescribeInstances": 1, "sns.Publish": 1}
    (mail,) = mailbox()
    assert mail["attributes"] == {"automation": "owner_tagger", "severity": "warning"}
    assert instances[0]["InstanceId"] in mail["body"] and "create-tags" in mail["body"]
    assert "caller: Unknown x" in mail["body"]
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
    caplog: pytest.LogCaptureFixture,
) -> None:
    instances = launch(2)
    ec2.terminate_instances(InstanceIds=[instances[1]["InstanceId"]])
    result = run(
        helpers.retarget(load_event("owner_tagger/cloudtrail.run_instances.iam_user"), instances),
        lambda_context,
    )
    gone = [d["resource"] for d in decisions(caplog) if d["action"] == "gone"]
    assert gone == [instances[1]["InstanceId"]] and result["Skipped"] == 1
    assert helpers.tags_of(ec2, instances[0]["InstanceId"])["Owner"] == "bob"
    assert instances[1]["InstanceId"] not in helpers.create_tags_resources(calls.of("ec2", "CreateTags")[0])
    assert mailbox() == []


def test_custom_owner_tag_key_is_written_and_mailed(
    owner_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    load_event: Load,
    launch: Any,
    ec2: Any,
    helpers: Any,
    calls: CallRecorder,
    lambda_context: Any,
    mailbox: Any,
) -> None:
    """OWNER_TAG_KEY (template Globals, the product-wide OwnerTagKey) is the key read, written
    and named in the mail; an ``Owner`` tag then means nothing to owner_tagger."""
    monkeypatch.setenv("OWNER_TAG_KEY", "CreatedBy")
    instances = launch(
        1, TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": "Owner", "Value": "x"}]}]
    )
    run(
        helpers.retarget(load_event("owner_tagger/cloudtrail.run_instances.iam_user"), instances),
        lambda_context,
    )
    instance_id = instances[0]["InstanceId"]
    volumes, enis = helpers.attachments(ec2, instance_id)
    tags = helpers.tags_of(ec2, instance_id)
    assert tags.get("CreatedBy") == "bob" and "Owner" not in tags
    assert all(helpers.tags_of(ec2, r)["CreatedBy"] == "bob" for r in volumes + enis)
    assert helpers.tags_of(ec2, volumes[0])["Owner"] == "x"  # another key: left alone
    assert {t["Key"] for c in calls.of("ec2", "CreateTags") for t in c["Tags"]} == {"CreatedBy"}
    # A mail names the key too (its advice and summary).
    unknown = helpers.retarget(load_event("owner_tagger/cloudtrail.run_instances.iam_user"), launch(1))
    unknown["detail"]["userIdentity"] = {"type": "Unknown"}
    run(unknown, lambda_context)
    (mail,) = mailbox()
    assert "Key=CreatedBy,Value=<owner>" in mail["body"] and "existing CreatedBy tag" in mail["body"]
    assert "owner tag (CreatedBy)" in mail["body"] and "Key=Owner" not in mail["body"]


def test_tagging_failure_is_per_resource_reported_and_mailed(
    monkeypatch: pytest.MonkeyPatch,
    owner_env: dict[str, str],
    load_event: Load,
    launch: Any,
    ec2: Any,
    helpers: Any,
    calls: CallRecorder,
    lambda_context: Any,
    mailbox: Any,
) -> None:
    """The snapshot is deleted between the plan (which found it) and the tagging: that one
    fails (by error code), the batch is retried one by one, the others still get their tag."""
    volume_id = helpers.attachments(ec2, launch(1)[0]["InstanceId"])[0][0]
    snapshots = [ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"] for _ in range(2)]
    event = helpers.fresh(load_event("owner_tagger/cloudtrail.create_snapshots.aws_service"))
    items = event["detail"]["responseElements"]["CreateSnapshotsResponse"]["snapshotSet"]["item"]
    for item, snapshot_id in zip(items, snapshots, strict=True):
        item["snapshotId"] = snapshot_id
    real = service.created

    def created_then_deleted(*args: Any) -> Any:
        found = real(*args)
        ec2.delete_snapshot(SnapshotId=snapshots[1])
        return found

    monkeypatch.setattr(service, "created", created_then_deleted)
    result = run(event, lambda_context)
    assert helpers.tags_of(ec2, snapshots[0])["Owner"] == "dlm.amazonaws.com"
    assert (result["Failed"], result["Changed"]) == (1, 1)
    assert calls.count("ec2", "CreateTags") == 3  # the batch, then one by one
    (mail,) = mailbox()
    assert "tagging failed for 1 resource" in mail["subject"] and snapshots[1] in mail["body"]
    assert "InvalidSnapshot.NotFound" in mail["body"]


# -- failure sequences: what the runner and act promise together -----------------------------


class Kill:
    """A botocore hook that "kills" the function at the ``at``-th call of one operation: it
    raises before the call reaches EC2, as a timeout or a crash would leave it."""

    def __init__(self, at: int) -> None:
        self.at, self.seen, self.armed = at, 0, True

    def __call__(self, **_: Any) -> None:
        self.seen += 1
        if self.armed and self.seen == self.at:
            raise RuntimeError("killed")


def test_a_run_killed_between_two_create_tags_is_finished_by_the_retry_and_overwrites_nothing(
    owner_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    load_event: Load,
    launch: Any,
    ec2: Any,
    helpers: Any,
    lambda_context: Any,
    mailbox: Any,
) -> None:
    """Killed after the instance's CreateTags, before its volume's and ENI's: the retry of the
    same event finishes from the recorded intent. Resumed, act re-reads the owner tags first,
    so the owner someone set on the volume in between stays, and nothing is written twice."""
    monkeypatch.setattr(service, "CREATE_TAGS_MAX", 1)  # one CreateTags each: instance, volume, ENI
    instances = launch(1)
    instance_id = instances[0]["InstanceId"]
    (volume,), (eni,) = helpers.attachments(ec2, instance_id)
    event = helpers.retarget(load_event("owner_tagger/cloudtrail.run_instances.iam_user"), instances)
    kill = Kill(at=2)
    aws.client("ec2").meta.events.register("before-call.ec2.CreateTags", kill)
    with pytest.raises(RuntimeError, match="killed"):
        run(event, lambda_context)
    assert helpers.tags_of(ec2, instance_id)["Owner"] == "bob"
    assert "Owner" not in helpers.tags_of(ec2, volume) and "Owner" not in helpers.tags_of(ec2, eni)
    (entry,) = outbox()  # the intent was recorded before acting
    assert entry.status == "acting" and [t["id"] for t in entry.intent["tag"]] == [instance_id, volume, eni]

    ec2.create_tags(Resources=[volume], Tags=[{"Key": "Owner", "Value": "alice"}])  # someone, meanwhile
    kill.armed = False
    with CallRecorder() as retry:
        result = run(event, lambda_context)  # Lambda's retry of the same event

    assert helpers.tags_of(ec2, instance_id)["Owner"] == "bob"
    assert helpers.tags_of(ec2, volume)["Owner"] == "alice"  # never overwritten, on resume too
    assert helpers.tags_of(ec2, eni)["Owner"] == "bob"  # nothing lost
    assert [c["Resources"] for c in retry.of("ec2", "CreateTags")] == [[eni]]  # nothing done twice
    assert ops(retry) == {
        # the claim, the Query that finds the entry, taking it over, acted, sent (deleted)
        "dynamodb.Query": 1,
        "dynamodb.PutItem": 1,
        "dynamodb.UpdateItem": 3,
        "dynamodb.DeleteItem": 1,
        # resumed act: the owner tags of the intended resources, then the one still missing
        "ec2.DescribeTags": 2,
        "ec2.CreateTags": 1,
        # this run's own plan: everything has an owner now (no intent)
        "ec2.DescribeInstances": 1,
    }
    assert result["Changed"] == 2  # the instance (the killed attempt's write) and the ENI, once
    assert result["Checked"] == 3 and result["Skipped"] == 1 + 3  # alice's, then all kept
    assert mailbox() == [] and outbox() == []


def test_a_mail_sns_refused_is_sent_once_by_the_next_invocation(
    owner_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    load_event: Load,
    launch: Any,
    ec2: Any,
    helpers: Any,
    lambda_context: Any,
    mailbox: Any,
) -> None:
    """The owner is unknown, the mail about it is refused by SNS: it stays in the outbox and
    the next owner_tagger invocation (another event) sends it, once, doing nothing twice."""
    sns_down = [True]
    real_publish = runner.publish

    def publish(*args: Any, **kwargs: Any) -> str:
        if sns_down[0]:
            raise ClientError({"Error": {"Code": "KMSDisabledException", "Message": "no"}}, "Publish")
        return real_publish(*args, **kwargs)

    monkeypatch.setattr(runner, "publish", publish)
    mystery = launch(1)
    unknown = helpers.retarget(load_event("owner_tagger/cloudtrail.run_instances.iam_user"), mystery)
    unknown["detail"]["userIdentity"] = {"type": "Unknown", "principalId": "AIDAEXAMPLEUNKNOWN"}
    with pytest.raises(OutboxError):
        run(unknown, lambda_context)
    assert mailbox() == []
    assert [e.status for e in outbox()] == ["acted"]  # its mail is kept

    sns_down[0] = False
    bobs = launch(1)
    with CallRecorder() as following:
        run(
            helpers.retarget(load_event("owner_tagger/cloudtrail.run_instances.iam_user"), bobs),
            lambda_context,
        )
    (mail,) = mailbox()
    assert mail["subject"] == "[ops-autopilot-test] Owner tag: owner unknown for 3 resources"
    assert mystery[0]["InstanceId"] in mail["body"] and "Unknown AIDAEXAMPLEUNKNOWN" in mail["body"]
    assert helpers.tags_of(ec2, bobs[0]["InstanceId"])["Owner"] == "bob"  # its own work, done
    assert "Owner" not in helpers.tags_of(ec2, mystery[0]["InstanceId"])
    assert ops(following) == {
        "dynamodb.Query": 1,
        "dynamodb.PutItem": 2,  # the claim, its own entry
        "dynamodb.UpdateItem": 3,  # the claim, taking the held entry over, its own entry acted
        "dynamodb.DeleteItem": 2,  # the held entry (sent), its own entry (done)
        "sns.Publish": 1,  # the held mail; its own run needs none
        "ec2.DescribeInstances": 1,  # its own event only: the held entry is not acted on again
        "ec2.CreateTags": 1,
    }
    assert outbox() == []
    run(
        helpers.retarget(load_event("owner_tagger/cloudtrail.run_instances.iam_user"), launch(1)),
        lambda_context,
    )
    assert len(mailbox()) == 1  # sent once


def test_the_retry_of_the_same_event_after_sns_refused_mails_once(
    owner_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    load_event: Load,
    launch: Any,
    helpers: Any,
    lambda_context: Any,
    mailbox: Any,
) -> None:
    sns_down = [True]
    real_publish = runner.publish

    def publish(*args: Any, **kwargs: Any) -> str:
        if sns_down[0]:
            raise ClientError({"Error": {"Code": "KMSDisabledException", "Message": "no"}}, "Publish")
        return real_publish(*args, **kwargs)

    monkeypatch.setattr(runner, "publish", publish)
    unknown = helpers.retarget(load_event("owner_tagger/cloudtrail.run_instances.iam_user"), launch(1))
    unknown["detail"]["userIdentity"] = {"type": "Unknown"}
    with pytest.raises(OutboxError):
        run(unknown, lambda_context)
    sns_down[0] = False
    run(unknown, lambda_context)  # Lambda's retry of the same event
    assert len(mailbox()) == 1


# -- issue 13: a forged or replayed event cannot give an old resource an owner -----------------


def _backend() -> Any:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ec2.models import ec2_backends

    return ec2_backends[DEFAULT_ACCOUNT_ID]["eu-west-1"]


def test_a_forged_launch_event_naming_an_old_instance_writes_no_owner(
    owner_env: dict[str, str],
    load_event: Load,
    launch: Any,
    ec2: Any,
    helpers: Any,
    calls: CallRecorder,
    lambda_context: Any,
    mailbox: Any,
) -> None:
    """Someone who may invoke the function hands it a RunInstances event, dated now, naming an
    untagged instance created a month ago (stopped and started since: its LaunchTime is recent).
    Its primary interface's attach time says when it was created: nothing is written, the
    refusal is counted and mailed."""
    old = launch(1)[0]
    instance = _backend().get_instance(old["InstanceId"])
    month_ago = runner.clock().replace(tzinfo=None) - timedelta(days=30)
    for nic in instance.nics.values():
        nic.attach_time = month_ago  # created then; launch_time stays recent (a restart)
    result = run(
        helpers.retarget(load_event("owner_tagger/cloudtrail.run_instances.sso_user"), [old]), lambda_context
    )
    assert "Owner" not in helpers.tags_of(ec2, old["InstanceId"])
    assert calls.count("ec2", "CreateTags") == 0
    assert (result["ResourcesNotNew"], result["Changed"], result["Skipped"]) == (1, 0, 1)
    (mail,) = mailbox()
    assert "1 old resource named by the event, not tagged" in mail["subject"]
    assert old["InstanceId"] in mail["body"] and "created long before the event" in mail["body"]


@pytest.mark.parametrize("age", [timedelta(minutes=14), timedelta(minutes=16), timedelta(days=400)])
def test_a_volume_is_tagged_only_if_the_call_created_it(
    owner_env: dict[str, str], load_event: Load, ec2: Any, helpers: Any, lambda_context: Any, age: timedelta
) -> None:
    """CreateVolume naming a volume created ``age`` before the call: within 15 minutes it is
    the call's own (tagged), beyond that it is not (left alone)."""
    volume_id = ec2.create_volume(Size=8, AvailabilityZone="eu-west-1a")["VolumeId"]
    _backend().volumes[volume_id].create_time = runner.clock().replace(tzinfo=None) - age
    event = helpers.set_resource_id(
        load_event("owner_tagger/cloudtrail.create_volume.iam_user"), "volumeId", volume_id
    )
    run(event, lambda_context)
    assert ("Owner" in helpers.tags_of(ec2, volume_id)) is (age <= timedelta(minutes=15))


def test_another_regions_event_makes_no_ec2_call_and_is_counted(
    owner_env: dict[str, str],
    load_event: Load,
    launch: Any,
    helpers: Any,
    calls: CallRecorder,
    lambda_context: Any,
) -> None:
    """Its ids name nothing in this region: no read, no 14-second wait for them, no tag - one
    log line with the reason and OtherRegionEvents=1."""
    instances = launch(1)
    event = helpers.retarget(load_event("owner_tagger/cloudtrail.run_instances.iam_user"), instances)
    event["detail"]["awsRegion"] = "ap-southeast-2"
    result = run(event, lambda_context)
    assert (result["status"], result["OtherRegionEvents"], result["Changed"]) == ("done", 1, 0)
    assert ec2_ops(calls) == {}


def test_an_instance_that_is_not_found_is_counted_and_logged_with_the_reason(
    owner_env: dict[str, str],
    load_event: Load,
    launch: Any,
    helpers: Any,
    lambda_context: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from owner_tagger import run as owner_run

    monkeypatch.setattr(owner_run.decide, "ATTACH_WAITS", (0.0,))  # the bounded wait, not slept here
    instances = launch(1)
    event = helpers.retarget(load_event("owner_tagger/cloudtrail.run_instances.iam_user"), instances)
    # an instance this account does not have (a forged event, or one gone before we looked)
    event["detail"]["responseElements"]["instancesSet"]["items"][0]["instanceId"] = "i-0123456789abcdef0"
    result = run(event, lambda_context)
    assert (result["status"], result["ResourcesNotFound"], result["Changed"]) == ("done", 1, 0)


def test_a_create_fleet_launch_is_tagged_with_its_volumes_and_interfaces(
    owner_env: dict[str, str],
    load_event: Load,
    launch: Any,
    ec2: Any,
    helpers: Any,
    calls: CallRecorder,
    lambda_context: Any,
) -> None:
    """EC2 Fleet (instant) and Karpenter launch through CreateFleet: its instances, their volumes
    and interfaces get the owner (Karpenter's numeric session names nobody: the role's name)."""
    instances = launch(2)
    event = helpers.fresh(load_event("owner_tagger/cloudtrail.create_fleet.karpenter"))
    fleet = event["detail"]["responseElements"]["CreateFleetResponse"]["fleetInstanceSet"]
    fleet["item"][0]["instanceIds"]["item"] = [i["InstanceId"] for i in instances]
    result = run(event, lambda_context)
    assert result["status"] == "done"
    for instance in instances:
        volumes, enis = helpers.attachments(ec2, instance["InstanceId"])
        for resource in [instance["InstanceId"], *volumes, *enis]:
            assert helpers.tags_of(ec2, resource)["Owner"] == "KarpenterController-prod", resource
    # a fleet launches from a template, which may have tagged the attachments: they are read
    assert ec2_ops(calls) == {"ec2.DescribeInstances": 1, "ec2.DescribeTags": 1, "ec2.CreateTags": 1}


def test_an_auto_scaling_launch_gets_the_groups_own_owner_tag(
    owner_env: dict[str, str],
    load_event: Load,
    launch: Any,
    ec2: Any,
    helpers: Any,
    calls: CallRecorder,
    lambda_context: Any,
) -> None:
    """The service launched it, which names nobody to ask: the group's owner tag does (one
    DescribeAutoScalingGroups); a group without one leaves the service as before."""
    autoscaling = boto3.client("autoscaling", region_name="eu-west-1")
    for group, tags in (
        ("web", [{"Key": "Owner", "Value": "web-team", "PropagateAtLaunch": False}]),
        ("batch", []),
    ):
        autoscaling.create_launch_configuration(
            LaunchConfigurationName=group, ImageId=AMI_ID, InstanceType="t3.micro"
        )
        autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=group, LaunchConfigurationName=group, MinSize=0, MaxSize=2,
            DesiredCapacity=0, AvailabilityZones=["eu-west-1a"], Tags=[{**t, "ResourceId": group,
            "ResourceType": "auto-scaling-group"} for t in tags],
        )  # fmt: skip

    def member(group: str) -> list[dict[str, Any]]:  # EC2 tags an Auto Scaling launch with its group
        tags = [{"Key": "aws:autoscaling:groupName", "Value": group}]
        return list(launch(1, TagSpecifications=[{"ResourceType": "instance", "Tags": tags}]))

    web, batch = member("web"), member("batch")
    event = helpers.retarget(load_event("owner_tagger/cloudtrail.run_instances.autoscaling"), [*web, *batch])
    run(event, lambda_context)
    web_volumes, web_enis = helpers.attachments(ec2, web[0]["InstanceId"])
    for resource in [web[0]["InstanceId"], *web_volumes, *web_enis]:
        assert helpers.tags_of(ec2, resource)["Owner"] == "web-team", resource
    assert helpers.tags_of(ec2, batch[0]["InstanceId"])["Owner"] == "autoscaling.amazonaws.com"
    assert calls.count("autoscaling", "DescribeAutoScalingGroups") == 1
