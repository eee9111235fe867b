"""Disaster-recovery copies against moto in two regions: a policy with ``copy=<region>`` copies
each volume's newest completed backup there, tagged and recorded in the ledger, at most 20 in
flight per destination; the copies are rotated there by the same policy, only recorded ones."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends

from autopilot.recorder import CallRecorder

pytestmark = pytest.mark.integration

STACK = "ops-autopilot-test"
NOW = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
DAY = timedelta(days=1)
DR = "eu-central-1"
POLICIES = "dr: newest=2 copy=eu-central-1"
Rotate = Callable[..., Any]


def dest() -> Any:
    return ec2_backends[DEFAULT_ACCOUNT_ID][DR]


def copies() -> dict[str, Any]:
    """The snapshots tagged ManagedBy=<stack> in the destination region, by id (moto's backend
    objects; the region also holds moto's own AMI snapshots)."""
    found = boto3.client("ec2", region_name=DR).describe_snapshots(
        OwnerIds=["self"], Filters=[{"Name": "tag:ManagedBy", "Values": [STACK]}]
    )["Snapshots"]
    return {s["SnapshotId"]: dest().snapshots[s["SnapshotId"]] for s in found}


@pytest.fixture
def rotate(rotate: Rotate, fleet: Any) -> Rotate:
    """conftest's rotate with the copy policy; then every snapshot the run made, here and in the
    destination, started at the run's clock (moto stamps the real one)."""

    def rotation(now: datetime = NOW, **kwargs: Any) -> Any:
        before = set(fleet.backend.snapshots) | set(dest().snapshots)
        done = rotate(now=now, **{"policies": POLICIES, "keep_newest": 3, "summary_mail": False, **kwargs})
        for backend in (fleet.backend, dest()):
            for snap_id in set(backend.snapshots) - before:
                backend.snapshots[snap_id].start_time = now
        return done

    return rotation


def test_the_newest_backup_is_copied_tagged_and_recorded_and_copies_rotate_there(
    fleet: Any, rotate: Rotate, calls: CallRecorder
) -> None:
    vol = fleet.volume({"Backup": "dr", "Name": "db", "Owner": "alice"})
    history = [
        fleet.snapshot(vol, NOW - d * DAY, policy="dr", Name="db backup", Owner="alice") for d in (1, 2)
    ]
    forged = boto3.client("ec2", region_name=DR).create_snapshot(
        VolumeId=boto3.client("ec2", region_name=DR).create_volume(AvailabilityZone=f"{DR}a", Size=1)[
            "VolumeId"
        ],
        TagSpecifications=[{"ResourceType": "snapshot", "Tags": [{"Key": "ManagedBy", "Value": STACK}]}],
    )["SnapshotId"]
    dest().snapshots[forged].start_time = NOW - 90 * DAY
    calls.calls.clear()
    first = rotate()
    (copy_id,) = set(copies()) - {forged}
    copy = dest().snapshots[copy_id]
    tags = {t["key"]: t["value"] for t in dest().describe_tags(filters={"resource-id": [copy_id]})}
    assert tags["ManagedBy"] == STACK and tags["SourceSnapshotId"] == history[0]
    assert tags["SourceVolumeId"] == vol and tags["SourceRegion"] == "eu-west-1" and tags["Owner"] == "alice"
    record = fleet.ledger()[copy_id]
    assert (record.region, record.volume_id, record.source, record.policy) == (DR, vol, history[0], "dr")
    assert copy.description.startswith(f"{STACK}: copy of {history[0]}")
    counted = calls.by_operation()
    assert counted["ec2.CopySnapshot"] == 1 and counted["ec2.DescribeImages"] == 2
    assert counted["ec2.DescribeSnapshots"] == 2, "one listing here, one in the destination"
    assert first.metrics["SnapshotsCopied"] == 1
    # a week of daily runs: each copies the backup the previous one made; the destination keeps
    # the newest 2 copies (and this period's), deletes the rest; the forged one is never touched
    for day in range(1, 7):
        rotate(now=NOW + day * DAY)
    ours = {s for s in copies() if s in fleet.ledger()}
    assert len(ours) == 2 + 1, f"the destination keeps the policy's newest 2 and today's: {len(ours)}"
    assert forged in copies(), "a snapshot the stack did not copy was deleted in the destination"
    assert all(fleet.ledger()[s].region == DR for s in ours)
    assert len(fleet.snapshots(vol)) == 2 + 1, "the source region keeps its own newest 2 and today's"


def test_at_most_twenty_copies_are_in_flight_per_destination(fleet: Any, rotate: Rotate) -> None:
    vols = [fleet.volume({"Backup": "dr"}) for _ in range(25)]
    for vol in vols:
        fleet.snapshot(vol, NOW - DAY, policy="dr")
    first = rotate()
    assert first.metrics["SnapshotsCopied"] == 20
    assert first.intent["copies_waiting"] == {DR: 5}
    copied_first = {fleet.ledger()[s].volume_id for s in copies()}
    for snap_id in sorted(copies())[:10]:  # the destination is still copying ten of them
        dest().snapshots[snap_id].status = "pending"
    second = rotate(now=NOW + DAY)
    assert second.metrics["SnapshotsCopied"] == 20 - 10, "more than 20 copies in flight"
    assert second.intent["copies_waiting"] == {DR: 25 - 10}
    copied_second = {fleet.ledger()[s].volume_id for s in copies()} - copied_first
    assert copied_second == set(vols) - copied_first, "the volumes never copied did not go first"
    sources = [r.source for r in fleet.ledger().values() if r.source]
    assert len(sources) == len(set(sources)) == 30, "a backup was copied twice"


def test_a_copy_is_encrypted_with_the_policys_key(fleet: Any, rotate: Rotate, api: Any) -> None:
    key = "arn:aws:kms:eu-central-1:123456789012:key/0f5bbd7e-6b1f-4c4e-9c9d-2f1a3b4c5d6e"
    vol = fleet.volume({"Backup": "dr"})
    fleet.snapshot(vol, NOW - DAY, policy="dr")
    rotate(policies=f"dr: newest=2 copy=eu-central-1 copy_key={key}")
    (params,) = api.of_region("CopySnapshot", DR)
    assert params["Encrypted"] is True and params["KmsKeyId"] == key and params["SourceRegion"] == "eu-west-1"


def test_a_dry_run_copies_nothing_records_nothing_and_starts_no_rounds(
    fleet: Any, rotate: Rotate, calls: CallRecorder
) -> None:
    """PRODUCT.md rule 3 on the new paths: the copy is decided and mailed, never made; the ledger
    is not written; a dry run never continues in rounds."""
    from snapshot_rotator import report

    vol = fleet.volume({"Backup": "dr"})
    fleet.snapshot(vol, NOW - DAY, policy="dr")
    before = dict(fleet.ledger())
    calls.calls.clear()
    dry = rotate(dry_run=True)
    assert [c.operation for c in calls.mutating() if c.service == "ec2"] == []
    assert calls.count("dynamodb", "BatchWriteItem") == 0 and fleet.ledger() == before
    assert copies() == {} and dry.result["copied"] == [{"job": 0, "snapshot": None}]
    assert dry.metrics["SnapshotsCopied"] == 0 and not report.continues(dry.intent, dry.result)
    assert dry.mail is not None and "would be copied" in dry.mail.body
