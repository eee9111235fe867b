"""snapshot_rotator in the sandbox: volumes with a history of old snapshots (one hand-made, one
behind an AMI, one forged with the stack's ManagedBy tag), a dry run, the real run, a duplicate
delivery and a second run that do nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends

from demo.sandbox import Sandbox, sample_event, step
from snapshot_rotator.store import Record

LEDGER = "ops-autopilot-demo-snapshot-ledger"  # the stack's SnapshotRotatorLedgerTable

TITLE = "daily EBS snapshots with newest-N + weekly/monthly retention that never loses a backup"
EVENT = "snapshot_rotator/eventbridge.scheduled"


def _tags(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def _snapshot(
    sb: Sandbox, volume_id: str, when: datetime, tags: dict[str, str], *, ours: bool = False
) -> str:
    """A backdated snapshot; ``ours``: one the stack created earlier (so in its ledger)."""
    ec2 = sb.client("ec2")
    snap_id = str(
        ec2.create_snapshot(
            VolumeId=volume_id,
            Description="earlier backup",
            TagSpecifications=[{"ResourceType": "snapshot", "Tags": _tags(tags)}],
        )["SnapshotId"]
    )
    # The sandbox stamps snapshots with the real clock: backdate this one to build a history.
    ec2_backends[DEFAULT_ACCOUNT_ID][sb.region].snapshots[snap_id].start_time = when
    if ours:
        record = Record(snap_id, volume_id, sb.region, "default", when.isoformat(), "earlier")
        sb.client("dynamodb").put_item(TableName=LEDGER, Item=record.item())
    return snap_id


def _ledger(sb: Sandbox) -> None:
    sb.client("dynamodb").create_table(
        TableName=LEDGER,
        AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k in ("pk", "sk")],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        BillingMode="PAY_PER_REQUEST",
    )


def _behind_ami(sb: Sandbox, snap_id: str) -> str:
    """An AMI whose block device mapping uses ``snap_id`` (swapped in through the sandbox's backend)."""
    backend: Any = ec2_backends[DEFAULT_ACCOUNT_ID][sb.region]
    image_id = str(sb.client("ec2").register_image(Name="golden-db-image")["ImageId"])
    image = backend.amis[image_id]
    backend.snapshots.pop(image.ebs_snapshot.id, None)
    image.ebs_snapshot = backend.snapshots[snap_id]
    image.ebs_snapshot.from_ami = image_id
    return image_id


def _table(sb: Sandbox, names: dict[str, str]) -> None:
    snaps = sb.client("ec2").describe_snapshots(OwnerIds=["self"])["Snapshots"]
    for volume_id, label in names.items():
        mine = sorted(
            (s for s in snaps if s["VolumeId"] == volume_id), key=lambda s: s["StartTime"], reverse=True
        )
        print(f"  {volume_id} ({label}): {len(mine)} snapshots")
        for s in mine:
            tags = {t["Key"]: t["Value"] for t in s.get("Tags", [])}
            print(
                f"    {s['SnapshotId']}  {s['StartTime']:%Y-%m-%d %H:%M}  {s['State']:<9}"
                f"  ManagedBy={tags.get('ManagedBy', '-'):<20} {tags.get('Name', '')}"
            )


def run(sb: Sandbox) -> None:
    ec2 = sb.client("ec2")
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    ours = {"ManagedBy": sb.stack_name}
    _ledger(sb)

    step(
        "Seed: two opted-in volumes with 40 days of daily backups, an opted-in instance, one opted-out volume"
    )
    db = ec2.create_volume(
        AvailabilityZone=f"{sb.region}a",
        Size=100,
        TagSpecifications=[
            {
                "ResourceType": "volume",
                "Tags": _tags({"Name": "db-data", "Owner": "alice@example.com", "Backup": "true"}),
            }
        ],
    )["VolumeId"]
    logs = ec2.create_volume(
        AvailabilityZone=f"{sb.region}a",
        Size=20,
        TagSpecifications=[{"ResourceType": "volume", "Tags": _tags({"Name": "logs", "Backup": "true"})}],
    )["VolumeId"]
    scratch = ec2.create_volume(
        AvailabilityZone=f"{sb.region}a",
        Size=20,
        TagSpecifications=[{"ResourceType": "volume", "Tags": _tags({"Name": "scratch"})}],
    )["VolumeId"]
    web = ec2.run_instances(
        ImageId="ami-12c6146b",
        MinCount=1,
        MaxCount=1,
        Placement={"AvailabilityZone": f"{sb.region}a"},
        TagSpecifications=[
            {
                "ResourceType": "instance",
                "Tags": _tags({"Name": "web-1", "Owner": "bob@example.com", "Backup": "true"}),
            }
        ],
    )["Instances"][0]
    web_root = web["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    for day in range(1, 41):
        when = now - timedelta(days=day, hours=-1)
        _snapshot(
            sb,
            db,
            when,
            {**ours, "Name": f"db-data backup {when:%Y-%m-%d}", "Owner": "alice@example.com"},
            ours=True,
        )
        if day <= 4:
            _snapshot(sb, logs, when, {**ours, "Name": f"logs backup {when:%Y-%m-%d}"}, ours=True)
    hand_made = _snapshot(sb, db, now - timedelta(days=200), {"Name": "before the migration (hand-made)"})
    forged = _snapshot(sb, db, now - timedelta(days=90), {**ours, "Name": "tagged by hand to look like ours"})
    golden = _snapshot(
        sb, db, now - timedelta(days=75), {**ours, "Name": "db-data backup (now behind an AMI)"}, ours=True
    )
    image = _behind_ami(sb, golden)
    print(f"  db-data {db}: 40 daily backups, a hand-made snapshot {hand_made} (no ManagedBy tag),")
    print(f"    {forged}, tagged ManagedBy={sb.stack_name} by hand (not in the stack's ledger:")
    print("    never touched),")
    print(f"    and {golden}, 75 days old, used by AMI {image}")
    print(f"  logs {logs}: 4 daily backups; web-1 {web['InstanceId']} (tag Backup=true on the instance)")
    print(f"  scratch {scratch}: not opted in")

    env = {
        **sb.base_env(dry_run=True),
        "SCHEDULE": "rate(1 day)",
        "KEEP_NEWEST": "3",
        "KEEP_DAYS": "0",
        "KEEP_DAILY": "0",
        "KEEP_WEEKLY": "2",
        "KEEP_MONTHLY": "2",
        "KEEP_YEARLY": "0",
        "SUMMARY_MAIL": "false",
        "POLICIES": "",
        "COPY_REGIONS": "",
        "COPY_KMS_KEYS": "",
        "LEDGER_TABLE": LEDGER,
    }
    step("Retention: newest 3, plus the newest of each of the last 2 weeks and 2 months. DRY RUN first:")
    print(f"  result: {sb.invoke('snapshot_rotator', EVENT, env)}")
    sb.print_mails()

    step("The real run (DryRun=false, SnapshotRotatorSummaryMail=true):")
    env.update({"DRY_RUN": "false", "SUMMARY_MAIL": "true"})
    backend: Any = ec2_backends[DEFAULT_ACCOUNT_ID][sb.region]
    before = set(backend.snapshots)
    scheduled = sample_event(EVENT)
    scheduled["id"] = str(uuid.uuid4())  # this occurrence of the schedule
    print(f"  result: {sb.invoke('snapshot_rotator', scheduled, env)}")
    sb.print_mails()
    # The sandbox completes snapshots at once; real ones stay pending for minutes to hours.
    for snap_id in set(backend.snapshots) - before:
        backend.snapshots[snap_id].status = "pending"

    step("What is left, per volume (the hand-made, the forged and the AMI snapshots are untouched):")
    _table(sb, {db: "db-data", logs: "logs", web_root: "web-1 root", scratch: "scratch (not opted in)"})

    step("The same scheduled event delivered again (EventBridge retries): one event id, one run")
    print(f"  result: {sb.invoke('snapshot_rotator', scheduled, env)}")
    sb.print_mails()

    step("Another run while the new snapshots are still pending: nothing to do this period, no mail")
    print(f"  result: {sb.invoke('snapshot_rotator', EVENT, env)}")
    sb.print_mails()
