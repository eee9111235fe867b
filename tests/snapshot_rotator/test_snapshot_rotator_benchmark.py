"""The benchmark's call counts, at a test size: API calls of one run over 110 opted-in volumes
with 10 snapshots each (run.plan + run.act; the runner adds its 3 DynamoDB calls per invocation
and 3 per run with work, and one sns:Publish when there is a mail) are exactly the formulas of
bench/snapshot_rotator.py - 1,100 snapshots take two DescribeSnapshots pages, so paging is
measured. The same run at 1,000 and 3,000 volumes (with timings) is in ``make bench``.

moto answers DescribeSnapshots in a single page whatever MaxResults says, so this module
makes moto's handler honour MaxResults/NextToken (as EC2 does, at most 1,000 per page); the
page count the rotator needs is then measured, not assumed. moto also looks up each
resource's tags by scanning every tag of the account (quadratic: minutes for 10,000
snapshots), so the lookup is replaced by a dict access with the same result. Run with ``-s``
to see the table.
"""

from __future__ import annotations

import math
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends
from moto.ec2.models.core import TaggedEC2Resource
from moto.ec2.responses.elastic_block_store import ElasticBlockStore
from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix

from autopilot.recorder import CallRecorder
from snapshot_rotator.store import Record

pytestmark = pytest.mark.integration

REGION = "eu-west-1"
STACK = "ops-autopilot-test"
NOW = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
VOLUMES = 110  # make bench: 100, 1,000 and 3,000
PER_VOLUME = 10
KEEP = 7
LEDGER_TABLE = "ops-autopilot-test-ledger"  # conftest's


def _paged_describe_snapshots(self: Any) -> Any:
    """moto's DescribeSnapshots, answering in pages of MaxResults (at most 1,000) like EC2."""
    result = _original(self)
    snapshots = result.result["Snapshots"]
    size = min(int(self._get_param("MaxResults") or 1000), 1000)
    start = int(self._get_param("NextToken") or 0)
    page: dict[str, Any] = {"Snapshots": snapshots[start : start + size]}
    if start + size < len(snapshots):
        page["NextToken"] = str(start + size)
    return type(result)(page)


_original = ElasticBlockStore.describe_snapshots


def _indexed_get_tags(self: Any) -> list[dict[str, str]]:
    """moto's TaggedEC2Resource.get_tags, by dict lookup instead of a scan of every tag."""
    tags = self.ec2_backend.tags.get(self.id, {}) if self.id else {}
    kind = EC2_PREFIX_TO_RESOURCE.get(get_prefix(self.id), "") if self.id else ""
    return [{"resource_id": self.id, "key": k, "value": v, "resource_type": kind} for k, v in tags.items()]


@pytest.fixture
def paged_moto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ElasticBlockStore, "describe_snapshots", _paged_describe_snapshots)
    monkeypatch.setattr(TaggedEC2Resource, "get_tags", _indexed_get_tags)


def _seed() -> None:
    backend = ec2_backends[DEFAULT_ACCOUNT_ID][REGION]
    records = []
    for n in range(VOLUMES):
        volume = backend.create_volume(size=8, zone_name=f"{REGION}a")
        volume.add_tags({"Backup": "true", "Name": f"data-{n}", "Owner": f"team-{n % 7}"})
        for day in range(1, PER_VOLUME + 1):
            snap = backend.create_snapshot(volume.id, "history")
            snap.add_tags({"ManagedBy": STACK, "Name": f"data-{n} backup"})
            snap.start_time = NOW - timedelta(days=day)
            records.append(Record(snap.id, volume.id, REGION, "default", snap.start_time.isoformat(), "seed"))
    client = boto3.client("dynamodb", region_name=REGION)  # not the rotator's client: not counted
    for start in range(0, len(records), 25):
        batch = [{"PutRequest": {"Item": r.item()}} for r in records[start : start + 25]]
        client.batch_write_item(RequestItems={LEDGER_TABLE: batch})


def test_calls_for_110_volumes_10_snapshots_each_are_the_formulas(
    paged_moto: None, rotate: Any, calls: CallRecorder, capsys: pytest.CaptureFixture[str]
) -> None:
    _seed()
    calls.calls.clear()
    rotation = rotate(now=NOW, seconds=900, keep_newest=KEEP, summary_mail=False)
    counts = calls.by_operation()
    with capsys.disabled():
        sys.stdout.write(f"\nAPI calls for {VOLUMES} volumes x {PER_VOLUME} snapshots:\n")
        for operation, count in sorted(counts.items()):
            sys.stdout.write(f"  {operation:<28} {count:>6}\n")
    existing = VOLUMES * PER_VOLUME
    assert counts["ec2.DescribeSnapshots"] == math.ceil(existing / 1000) == 2
    assert counts["ec2.DescribeImages"] == 1
    assert counts["ec2.DescribeInstances"] == 1
    assert counts["ec2.DescribeVolumes"] == 1  # ceil(110 / 500): one page (moto: always one)
    assert counts["ec2.CreateSnapshot"] == VOLUMES  # the API has no batch form for volumes
    assert counts["ec2.DeleteSnapshot"] == VOLUMES * (PER_VOLUME - KEEP)  # one call per snapshot
    # the ledger: one Query page per 1 MB; records written and removed 25 a call (the maximum)
    assert counts["dynamodb.Query"] == 1
    # records and removals together, 25 writes a call
    assert counts["dynamodb.BatchWriteItem"] == math.ceil(VOLUMES * (1 + 3) / 25)
    assert rotation.mail is None  # nothing failed, summaries off: no mail
    assert rotation.created == VOLUMES and len(rotation.deleted) == VOLUMES * (PER_VOLUME - KEEP)
    assert rotation.failed == 0 and rotation.left == 0  # the intent fits the outbox: nothing deferred
