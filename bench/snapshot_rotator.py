"""snapshot_rotator: one daily run over V opted-in volumes with 10 earlier snapshots each.

Each volume is tagged ``Backup=true`` and has 10 daily snapshots of this stack (ManagedBy),
the newest 7 kept: the run creates V snapshots and deletes 3 V (the new one is pending, so it
does not count as retained yet). Seeded in moto's backend directly (seeding through the API
would take longer than the run).

Minimum for V volumes, S = 10 V existing managed snapshots, D = 3 V expired:
- DescribeImages: 1 (no AMIs here; ceil(AMIs / 1000));
- DescribeSnapshots: ceil(S / 1000) pages (filtered on the ManagedBy tag server-side);
- DescribeInstances: 1 (no opted-in instance here);
- DescribeVolumes: ceil(V / 500) pages (the API's maximum page);
- CreateSnapshot: V: EC2 has no batch form for single volumes (CreateSnapshots is per instance);
- DeleteSnapshot: D: one snapshot per call, no batch form;
- SNS Publish: 0 (nothing failed, summary mails off).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
from moto.ec2.models import ec2_backends

from autopilot.config import CommonConfig
from autopilot.runtime import Deadline
from bench.common import ACCOUNT, REGION, STACK, Run, measured, pages, sandbox
from snapshot_rotator.config import RotatorConfig
from snapshot_rotator.retention import RetentionPolicy
from snapshot_rotator.rotate import execute

PER_VOLUME = 10
KEEP = 7
NOW = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)


def _seed(volumes: int) -> None:
    backend = ec2_backends[ACCOUNT][REGION]
    for n in range(volumes):
        volume = backend.create_volume(size=8, zone_name=f"{REGION}a")
        volume.add_tags({"Backup": "true", "Name": f"data-{n}", "Owner": f"team-{n % 7}"})
        for day in range(1, PER_VOLUME + 1):
            snap = backend.create_snapshot(volume.id, "history")
            snap.add_tags({"ManagedBy": STACK, "Name": f"data-{n} backup"})
            snap.start_time = NOW - timedelta(days=day)


def minimum(volumes: int) -> dict[str, int]:
    return {
        "ec2.DescribeImages": 1,
        "ec2.DescribeSnapshots": pages(volumes * PER_VOLUME, 1000),
        "ec2.DescribeInstances": 1,
        "ec2.DescribeVolumes": pages(volumes, 500),
        "ec2.CreateSnapshot": volumes,
        "ec2.DeleteSnapshot": volumes * (PER_VOLUME - KEEP),
    }


def run(volumes: int) -> Run:
    with sandbox():
        topic = boto3.client("sns", region_name=REGION).create_topic(Name="bench")["TopicArn"]
        _seed(volumes)
        config = RotatorConfig(
            common=CommonConfig(stack_name=STACK, region=REGION, topic_arn=topic, dry_run=False),
            policy=RetentionPolicy(keep_newest=KEEP),
            retry_window=timedelta(hours=12),
            summary_mail=False,
        )
        with measured() as (calls, elapsed):
            report = execute(config, NOW, Deadline(remaining_at_start=3600))
    return Run(
        automation="snapshot_rotator",
        size=volumes,
        unit="opted-in volumes",
        calls=calls.by_operation(),
        minimum=minimum(volumes),
        seconds=elapsed[0],
        extra={"created": report.snapshots_created, "deleted": len(report.deleted), "left": report.left},
    )
