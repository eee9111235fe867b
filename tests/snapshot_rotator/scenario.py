"""The reliability scenario of snapshot_rotator: a small fleet, the real handler on its real sample
event, and a check that all of the work got done (used by tests/reliability: faults,
idempotency, bad input). Discovered by tests/reliability/scenarios.py; every automation has one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import boto3

from conftest import REGION, STACK, FakeContext
from reliability.scenarios import Ctx, Scenario, backend, ec2, event

# Environment of the bad-input tests (besides the stack's own): the least the handler needs
# (every variable of the function is required).
BAD_INPUT_ENV: dict[str, str] = {
    "POWERTOOLS_SERVICE_NAME": "snapshot_rotator",
    "SCHEDULE": "rate(1 day)",
    "KEEP_NEWEST": "7",
    "KEEP_DAYS": "0",
    "KEEP_DAILY": "0",
    "KEEP_WEEKLY": "0",
    "KEEP_MONTHLY": "0",
    "SUMMARY_MAIL": "false",
    "KEEP_YEARLY": "0",
    "POLICIES": "",
    "COPY_REGIONS": "",
    "COPY_KMS_KEYS": "",
    "LEDGER_TABLE": "ops-autopilot-test-ledger",
}
# The sample event of a normal run (events/snapshot_rotator/...).
VALID_SAMPLE = "eventbridge.scheduled"


def scenario(ctx: Ctx) -> Scenario:
    from conftest import create_outbox_table
    from snapshot_rotator import app
    from snapshot_rotator.store import Record

    ctx.env(**{**BAD_INPUT_ENV, "KEEP_NEWEST": "2", "SUMMARY_MAIL": "true"})
    table = create_outbox_table(BAD_INPUT_ENV["LEDGER_TABLE"])
    now = datetime.now(UTC)
    volumes: list[str] = []
    old: dict[str, list[str]] = {}
    for n in range(3):
        volume = ec2().create_volume(
            AvailabilityZone=f"{REGION}a",
            Size=8,
            TagSpecifications=[
                {
                    "ResourceType": "volume",
                    "Tags": [{"Key": "Backup", "Value": "true"}, {"Key": "Name", "Value": f"v{n}"}],
                }
            ],
        )["VolumeId"]
        volumes.append(volume)
        old[volume] = []
        for age in range(4):
            snap = ec2().create_snapshot(
                VolumeId=volume,
                Description="history",
                TagSpecifications=[
                    {"ResourceType": "snapshot", "Tags": [{"Key": "ManagedBy", "Value": STACK}]}
                ],
            )["SnapshotId"]
            backend().snapshots[snap].start_time = now - timedelta(days=1 + age)
            started = (now - timedelta(days=1 + age)).isoformat()
            record = Record(snap, volume, REGION, "default", started, "history")
            boto3.client("dynamodb", region_name=REGION).put_item(TableName=table, Item=record.item())
            old[volume].append(snap)  # newest first

    def managed(volume: str) -> list[str]:
        found = ec2().describe_snapshots(
            OwnerIds=["self"],
            Filters=[{"Name": "volume-id", "Values": [volume]}, {"Name": "tag:ManagedBy", "Values": [STACK]}],
        )["Snapshots"]
        return [s["SnapshotId"] for s in found]

    def settle() -> None:
        for volume in volumes:
            for snap in set(managed(volume)) - set(old[volume]):
                backend().snapshots[snap].status = "pending"

    def verify() -> None:
        for volume in volumes:
            snaps = set(managed(volume))
            assert set(old[volume][:2]) <= snaps, volume  # the two newest old ones are kept
            assert not set(old[volume][2:]) & snaps, volume  # the two oldest are gone
            assert len(snaps - set(old[volume])) == 1, volume  # exactly one new snapshot

    def one_snapshot_per_volume(calls: Any, mails: list[dict[str, Any]]) -> None:
        """Two deliveries of the same event at the same instant: the runner's claim lets one of
        them act, so each volume got exactly one CreateSnapshot (the old code made two)."""
        created = sorted(p["VolumeId"] for p in calls.of("ec2", "CreateSnapshot"))
        assert created == sorted(volumes), created
        assert calls.count("ec2", "DeleteSnapshot") == 2 * len(volumes)

    return Scenario(
        "snapshot_rotator",
        lambda: app.lambda_handler(event("snapshot_rotator/eventbridge.scheduled"), FakeContext()),
        verify,
        resources=volumes,
        mails=ctx.mailbox,
        expected_mails=1,
        extra={"old": old, "managed": managed, "settle": settle},
        check_concurrent=one_snapshot_per_volume,
    )
