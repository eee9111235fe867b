"""snapshot_rotator: one daily run over V opted-in volumes with 10 earlier snapshots each.

Each volume is tagged ``Backup=true`` and has 10 daily snapshots of this stack (ManagedBy),
the newest 7 kept: the run creates V snapshots and deletes 3 V (the new one is pending, so it
does not count as retained yet). Seeded in moto's backend directly (seeding through the API
would take longer than the run). The real handler runs, through the shared runner, at a fixed
clock (``autopilot.runner.clock``).

Minimum for V volumes, S = 10 V existing managed snapshots, D = 3 V expired:
- DescribeImages: 1 (no AMIs here; ceil(AMIs / 1000));
- DescribeSnapshots: ceil(S / 1000) pages (filtered on the ManagedBy tag server-side);
- DescribeInstances: 1 (no Backup-tagged instance here, no loose volume without an owner);
- DescribeVolumes: ceil(V / 500) pages (the API's maximum page; filtered on the Backup tag key);
- CreateSnapshot: V: EC2 has no batch form for single volumes (CreateSnapshots is per instance);
- DeleteSnapshot: D: one snapshot per call, no batch form;
- SNS Publish: 0 (nothing failed, summary mails off);
- the runner: dynamodb.Query 1 (earlier runs' unfinished work), the claim on the event
  (dynamodb.PutItem 1 + dynamodb.UpdateItem 1) and the outbox entry of the intent
  (dynamodb.PutItem 1 before acting, dynamodb.UpdateItem 1 after, dynamodb.DeleteItem 1 once
  done): 6 in all, whatever V.

The intent must fit one outbox item (run.INTENT_BUDGET, half of it): at about 3,000 volumes
with 3 expired snapshots each it no longer does, and the run defers deletions to the next run
(``left`` below, and a warning mail: 1 Publish); the minimum above is for doing all of it.
"""

from __future__ import annotations

import contextlib
import io
import os
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import boto3
from moto.ec2.models import ec2_backends

from autopilot import pacing, runner
from bench.common import (
    ACCOUNT,
    REGION,
    ROOT,
    STACK,
    LambdaContext,
    Run,
    measured,
    metrics_sent,
    outbox_table,
    pages,
    sample_event,
    sandbox,
)
from snapshot_rotator import store
from snapshot_rotator.store import Record

PER_VOLUME = 10
KEEP = 7
NOW = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
SAMPLE = ROOT / "events" / "snapshot_rotator" / "eventbridge.scheduled.json"
RUNNER_CALLS = {
    "dynamodb.Query": 1,
    "dynamodb.PutItem": 2,
    "dynamodb.UpdateItem": 2,
    "dynamodb.DeleteItem": 1,
}


def _seed(volumes: int, ledger: str) -> None:
    """The fleet in moto's backend, and the ledger's records of its snapshots (written with a
    client of their own: the seeding is not the rotator's calls)."""
    backend = ec2_backends[ACCOUNT][REGION]
    items = [store.since_item((NOW - timedelta(days=365)).isoformat())]
    for n in range(volumes):
        volume = backend.create_volume(size=8, zone_name=f"{REGION}a")
        volume.add_tags({"Backup": "true", "Name": f"data-{n}", "Owner": f"team-{n % 7}"})
        for day in range(1, PER_VOLUME + 1):
            snap = backend.create_snapshot(volume.id, "history")
            snap.add_tags({"ManagedBy": STACK, "Name": f"data-{n} backup"})
            snap.start_time = NOW - timedelta(days=day)
            items.append(
                Record(snap.id, volume.id, REGION, "default", snap.start_time.isoformat(), "").item()
            )
    client = boto3.client("dynamodb", region_name=REGION)
    for start in range(0, len(items), 25):
        client.batch_write_item(
            RequestItems={ledger: [{"PutRequest": {"Item": i}} for i in items[start : start + 25]]}
        )


def minimum(volumes: int) -> dict[str, int]:
    return {
        "ec2.DescribeImages": 1,
        "ec2.DescribeSnapshots": pages(volumes * PER_VOLUME, 1000),
        "ec2.DescribeInstances": 1,
        "ec2.DescribeVolumes": pages(volumes, 500),
        "ec2.CreateSnapshot": volumes,
        "ec2.DeleteSnapshot": volumes * (PER_VOLUME - KEEP),
        # the ledger: one Query page per MB of records (~6,000); 25 writes a BatchWriteItem
        "dynamodb.Query": RUNNER_CALLS["dynamodb.Query"] + pages(volumes * PER_VOLUME, 6000),
        # records and removals together
        "dynamodb.BatchWriteItem": pages(volumes * (1 + PER_VOLUME - KEEP), 25),
        **{k: v for k, v in RUNNER_CALLS.items() if k != "dynamodb.Query"},
    }


def run(volumes: int) -> Run:
    from snapshot_rotator import app

    with sandbox():
        topic = boto3.client("sns", region_name=REGION).create_topic(Name="bench")["TopicArn"]
        ledger = outbox_table("bench-ledger")
        _seed(volumes, ledger)
        event: dict[str, Any] = sample_event(SAMPLE)
        event["id"] = str(uuid.uuid4())
        event["time"] = NOW.strftime("%Y-%m-%dT%H:%M:%SZ")  # delivered at the run's (fixed) clock
        env = {
            "STACK_NAME": STACK, "TOPIC_ARN": topic, "DRY_RUN": "false", "AWS_REGION": REGION,
            "OWNER_TAG_KEY": "Owner", "OUTBOX_TABLE": outbox_table(),
            "SCHEDULE": "rate(1 day)", "KEEP_NEWEST": str(KEEP), "KEEP_DAYS": "0",
            "KEEP_DAILY": "0", "KEEP_WEEKLY": "0", "KEEP_MONTHLY": "0", "SUMMARY_MAIL": "false",
            "KEEP_YEARLY": "0", "POLICIES": "", "LEDGER_TABLE": ledger,
            "COPY_REGIONS": "", "COPY_KMS_KEYS": "",
        }  # fmt: skip
        waited = [0.0]  # EC2's refill is modelled (autopilot.pacing), not slept through here
        with (
            mock.patch.dict(os.environ, env),
            mock.patch.object(runner, "clock", lambda: NOW),
            mock.patch.object(pacing, "clock", lambda: waited[0]),
            mock.patch.object(pacing, "sleep", lambda s: waited.__setitem__(0, waited[0] + s)),
            contextlib.redirect_stdout(io.StringIO()),
            measured() as (calls, elapsed),
        ):
            result = app.lambda_handler(event, LambdaContext(900_000))
    return Run(
        automation="snapshot_rotator",
        size=volumes,
        unit="opted-in volumes",
        calls=calls.by_operation(),
        minimum=minimum(volumes),
        seconds=elapsed[0],
        extra={
            "created": result["SnapshotsCreated"],
            "deleted": result["SnapshotsDeleted"],
            "left": result["LeftForNextRun"],
            "paced_seconds": round(waited[0], 1),
            "metrics_sent": metrics_sent(result),
        },
    )
