"""snapshot_rotator at 10,000 volumes: a week of daily runs, in rounds, on a simulated clock.

moto cannot hold 100,000 snapshots for a week of runs in reasonable time, so this drives the
real ``run.plan``, ``run.act`` and ``report`` (the decisions, the intent budget, the pacing, the
rounds) against an in-memory EC2 and ledger that answer what EC2 and DynamoDB would, and that
advance a simulated clock by each call's latency. EC2's throttling is the documented token
bucket per API (``autopilot.pacing``: mutating burst 200, refill 5/s). A day is the scheduled
run, which plans the whole day and queues the intents of the next rounds (``Plan.later``), and
then the rounds the state machine starts, each taking the next queued intent without listing
again (the runner's queue, autopilot.outbox; what a round's time did not reach goes back to the
front), each an invocation of at most 900 s (the function's timeout, 20 s kept for reporting),
10 s apart (its Wait state).

The limit a day cannot beat is EC2's refill: every create and every delete is one call of a
5-a-second API, and each API has its own bucket (a create never waits for a delete), so the
busiest API's calls / 5 seconds - ``max(creates, deletes) / 5`` - when the deletions go between
the creates, as the rotator makes them; ``(creates + deletes) / 5`` when one waits for the other
(the rotator before, shown for reference). The snapshots a day makes complete before the next
day's run. The
"(minimum)" columns are what the APIs allow: ``DescribeSnapshots`` lists the day's snapshots
once (1,000 a page); ``BatchWriteItem`` takes 25 ledger writes a call, and each round must
make its own writes before it ends (the sum over the rounds of their writes / 25, rounded up).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

from autopilot import pacing, runtime
from autopilot.config import CommonConfig
from autopilot.events import MAX_ROUNDS
from autopilot.runner import Run
from autopilot.runtime import Deadline
from bench.common import SimulatedClock
from snapshot_rotator import report, run, service, store
from snapshot_rotator.config import Config
from snapshot_rotator.decide.policies import parse_policies
from snapshot_rotator.decide.retention import RetentionPolicy, Snapshot
from snapshot_rotator.decide.selection import CreateJob, Volume
from snapshot_rotator.store import Contents, Note, Record

STACK = "ops-autopilot"
REGION = "eu-west-1"
START = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
KEEP = 7
PER_VOLUME = 10
TIMEOUT = 900.0
BETWEEN_ROUNDS = 10.0  # the state machine's Wait state
LATENCY = {"mutating": 0.08, "page": 0.25, "dynamodb": 0.01}  # seconds a call takes (modelled)
REFILL = pacing.EC2_MUTATING[1]


@dataclass
class Account:
    """EC2 and the ledger of one account and region, in memory, counting calls."""

    clock: SimulatedClock
    volumes: dict[str, dict[str, str]] = field(default_factory=dict)
    snapshots: dict[str, dict[str, Any]] = field(default_factory=dict)
    records: dict[str, Record] = field(default_factory=dict)
    notes: dict[str, Note] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)  # calls EC2 would have throttled
    buckets: dict[str, pacing.Bucket] = field(default_factory=dict)
    day: datetime = START
    began: float = 0.0  # the simulated clock at the day's first run
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    ledger_writes: int = 0  # records written and removed by act (store.write)

    def _call(self, operation: str, kind: str, n: int = 1) -> None:
        self.calls[operation] += n
        if kind == "mutating":  # EC2's own bucket for this API (full after a quiet day)
            bucket = self.buckets.setdefault(operation, pacing.Bucket(*pacing.EC2_MUTATING))
            if bucket.at is None:
                bucket.tokens, bucket.at = float(bucket.burst), self.clock.now
            bucket.wait(self.clock.now)
            if bucket.tokens < 1 - 1e-9:
                self.refused[operation] += 1  # EC2 would answer RequestLimitExceeded
            bucket.tokens -= 1
        self.clock.now += LATENCY[kind] * n

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self.ids):017x}"

    # --- EC2 ---
    def ami_snapshot_ids(self, region: str = "") -> set[str]:
        self._call("ec2.DescribeImages", "page")
        return set()

    def managed_snapshots(
        self, stack: str, ami: Any, records: Any = None, region: str = ""
    ) -> Iterator[Snapshot]:
        mine = [s for s in self.snapshots.values() if s["tags"].get("ManagedBy") == stack]
        self._call("ec2.DescribeSnapshots", "page", max(1, math.ceil(len(mine) / 1000)))
        for raw in mine:
            yield service.to_snapshot(raw, (), records)

    def recorded_snapshots(self, ids: Any, ami: Any, records: Any) -> list[Snapshot]:
        self._call("ec2.DescribeSnapshots", "page", math.ceil(len(ids) / 200))
        return []

    def backup_tagged_instances(self) -> Iterator[Any]:
        self._call("ec2.DescribeInstances", "page")
        return iter(())

    def backup_tagged_volumes(self) -> Iterator[Volume]:
        self._call("ec2.DescribeVolumes", "page", max(1, math.ceil(len(self.volumes) / 500)))
        return iter([Volume(v, tags) for v, tags in self.volumes.items()])

    def existing_volumes(self, ids: Any) -> set[str]:
        return {v for v in ids if v in self.volumes}

    def create(self, job: CreateJob) -> list[Snapshot]:
        self._call("ec2.CreateSnapshot", "mutating")
        made = []
        for volume in job.volume_ids:
            raw: dict[str, Any] = {
                "SnapshotId": self.new_id("snap"),
                "VolumeId": volume,
                "StartTime": self.day + timedelta(seconds=self.clock.now - self.began),
                "State": "pending",
                "Tags": [{"Key": k, "Value": v} for k, v in job.tags.items()],
                "Description": job.description,
            }
            self.snapshots[raw["SnapshotId"]] = {**raw, "tags": dict(job.tags)}
            made.append(service.to_snapshot(raw, ()))
        return made

    def delete(self, snapshot_id: str, region: str = "") -> None:
        self._call("ec2.DeleteSnapshot", "mutating")
        self.snapshots.pop(snapshot_id)

    # --- the ledger ---
    def read(self, table: str) -> Contents:
        size = len(self.records) * 150 + len(self.notes) * 80
        self._call("dynamodb.Query", "dynamodb", max(1, math.ceil(size / 1_000_000)))
        return Contents(dict(self.records), dict(self.notes), "2026-01-01T00:00:00+00:00")

    def put(self, table: str, items: Any, since: Any = None) -> None:
        items = list(items)
        if items:
            self._call("dynamodb.BatchWriteItem", "dynamodb", math.ceil(len(items) / 25))
        for item in items:
            if isinstance(item, Record):
                self.records[item.snapshot_id] = item
            elif item.empty:
                self.notes.pop(item.resource_id, None)
            else:
                self.notes[item.resource_id] = item

    def forget(self, table: str, ids: Any) -> None:
        self.write(table, [], ids)

    def write(self, table: str, records: Any, ids: Any) -> None:
        records, ids = list(records), list(ids)
        if records or ids:
            self._call("dynamodb.BatchWriteItem", "dynamodb", math.ceil((len(records) + len(ids)) / 25))
        self.ledger_writes += len(records) + len(ids)
        for record in records:
            self.records[record.snapshot_id] = record
        for snapshot_id in ids:
            self.records.pop(snapshot_id, None)


def seed(account: Account, volumes: int) -> None:
    for n in range(volumes):
        volume = f"vol-{n:017x}"
        account.volumes[volume] = {"Backup": "true", "Name": f"data-{n}"}
        for day in range(1, PER_VOLUME + 1):
            sid = account.new_id("snap")
            start = START - timedelta(days=day)
            tags = {"ManagedBy": STACK}
            account.snapshots[sid] = {
                "SnapshotId": sid,
                "VolumeId": volume,
                "StartTime": start,
                "State": "completed",
                "Tags": [{"Key": "ManagedBy", "Value": STACK}],
                "tags": tags,
                "Description": "seed",
            }
            account.records[sid] = Record(sid, volume, REGION, "default", start.isoformat(), "seed")


@dataclass
class Day:
    day: int
    rounds: int
    created: int
    deleted: int
    seconds: float
    calls: Counter[str]
    refused: int  # calls EC2's bucket would have refused (RequestLimitExceeded)
    backlog_volumes: int  # opted-in volumes without this day's snapshot after the day's rounds
    backlog_expired: int  # snapshots past retention still there after the day's rounds
    listing_minimum: int = 0  # DescribeSnapshots pages to list the day's snapshots once (1,000 a page)
    writes_minimum: int = 0  # BatchWriteItem: 25 ledger writes a call, each round's own made in it

    @property
    def limit(self) -> float:
        """EC2's refill: each API its own bucket, so the busiest API's calls / 5."""
        return max(self.created, self.deleted) / REFILL

    @property
    def one_after_the_other(self) -> float:
        """Creates then deletes, one bucket's time after the other's: (creates + deletes) / 5."""
        return (self.created + self.deleted) / REFILL

    @property
    def ratio(self) -> float:
        return self.seconds / self.limit if self.limit else 1.0


def _config() -> Config:
    policy = RetentionPolicy(keep_newest=KEEP)
    return Config(
        policy=policy,
        retry_window=timedelta(hours=12),
        summary_mail=False,
        ledger_table="ledger",
        policies=parse_policies("", policy),
        stale_after=timedelta(days=2),
        rounds=True,
    )


def _rounds_of_a_day(
    account: Account, clock: SimulatedClock, common: CommonConfig, day: int
) -> tuple[int, int, int, int]:
    """The scheduled run and the rounds it queued, as the runner drives them: (rounds,
    created, deleted, the least BatchWriteItem calls the ledger writes need)."""
    began = account.began
    created = deleted = rounds = 0
    queue: list[dict[str, Any]] = []  # the runner's queue of rounds (autopilot.outbox)
    writes_minimum = 0
    while True:
        rounds += 1
        if rounds > 1:
            clock.now += BETWEEN_ROUNDS
        now = account.day + timedelta(seconds=clock.now - began)
        ctx: Run[Config, Any] = Run(
            "snapshot_rotator",
            _config(),
            common,
            now,
            Deadline(remaining_at_start=TIMEOUT, _start=clock.now),
            run_id=f"d{day}r{rounds}",
        )
        if rounds == 1:  # the scheduled run plans; the rounds take what it queued
            plan = run.plan(ctx)
            if plan.intent is None:
                break
            intent, queue = dict(plan.intent), [dict(i) for i in plan.later]
        else:
            intent = queue.pop(0)
        writes_before = account.ledger_writes
        result = run.act(ctx, intent)
        # the API's least for this round: every write must be made before it ends
        writes_minimum += math.ceil((account.ledger_writes - writes_before) / 25)
        counted = report.counts(intent, result)
        created += int(counted.extra["SnapshotsCreated"])
        deleted += int(counted.extra["SnapshotsDeleted"])
        rest = run.rest(intent, result)
        if rest is not None:  # back to the front of the queue, as the runner does
            queue.insert(0, rest)
        # the runner's rule (a round that changed nothing is not followed at once) and
        # the state machine's 48 rounds
        progressed = rest is None or counted.changed > 0
        if not (queue and progressed and rounds <= MAX_ROUNDS):
            break
    return rounds, created, deleted, writes_minimum


def simulate(volumes: int, days: int) -> list[Day]:
    clock = SimulatedClock()
    account = Account(clock)
    seed(account, volumes)
    common = CommonConfig(
        stack_name=STACK, region=REGION, topic_arn="arn:aws:sns:eu-west-1:1:t", dry_run=False
    )
    patches: list[Any] = [
        mock.patch.object(pacing, "clock", clock.monotonic),
        mock.patch.object(pacing, "sleep", clock.sleep),
        mock.patch.object(runtime, "time", clock),
        *(
            mock.patch.object(service, name, getattr(account, name))
            for name in (
                "ami_snapshot_ids",
                "managed_snapshots",
                "recorded_snapshots",
                "backup_tagged_instances",
                "backup_tagged_volumes",
                "existing_volumes",
                "create",
                "delete",
            )
        ),
        *(
            mock.patch.object(store, name, getattr(account, name))
            for name in ("read", "put", "forget", "write")
        ),
    ]
    out: list[Day] = []
    for patch in patches:
        patch.start()
    try:
        for day in range(days):
            account.day = START + timedelta(days=day)
            before = Counter(account.calls)
            refused_before = sum(account.refused.values())
            began = account.began = clock.now
            tagged = sum(1 for s in account.snapshots.values() if s["tags"].get("ManagedBy"))
            listing = math.ceil(tagged / 1000)
            rounds, created, deleted, writes_minimum = _rounds_of_a_day(account, clock, common, day)
            seconds = clock.now - began
            today = account.day - timedelta(hours=12)
            done = {s["VolumeId"] for s in account.snapshots.values() if s["StartTime"] >= today}
            per_volume: Counter[str] = Counter(s["VolumeId"] for s in account.snapshots.values())
            out.append(
                Day(
                    day=day + 1,
                    rounds=rounds,
                    created=created,
                    deleted=deleted,
                    seconds=seconds,
                    calls=account.calls - before,
                    refused=sum(account.refused.values()) - refused_before,
                    backlog_volumes=len(set(account.volumes) - done),
                    backlog_expired=sum(max(0, n - (KEEP + 1)) for n in per_volume.values()),
                    listing_minimum=listing,
                    writes_minimum=writes_minimum,
                )
            )
            for raw in account.snapshots.values():  # the day's snapshots complete overnight
                raw["State"] = "completed"
            clock.now = began + 86400
    finally:
        for patch in reversed(patches):
            patch.stop()
    return out


def table(volumes: int, days: list[Day]) -> list[str]:
    lines = [
        f"snapshot_rotator, {volumes:,} volumes x {PER_VOLUME} snapshots (keep {KEEP}), "
        f"{len(days)} days, simulated:",
        "",
        "| day | rounds | created | deleted | wall (modelled) | refill limit max(creates, deletes)/5 "
        "| ratio | one API after the other (creates+deletes)/5 "
        "| CreateSnapshot | DeleteSnapshot | refused by EC2 | DescribeSnapshots (minimum) "
        "| BatchWriteItem (minimum) | backlog after |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for d in days:
        lines.append(
            f"| {d.day} | {d.rounds} | {d.created:,} | {d.deleted:,} | {d.seconds:,.0f} s "
            f"| {d.limit:,.0f} s | {d.ratio:.3f} | {d.one_after_the_other:,.0f} s "
            f"| {d.calls['ec2.CreateSnapshot']:,} "
            f"| {d.calls['ec2.DeleteSnapshot']:,} | {d.refused} | "
            f"{d.calls['ec2.DescribeSnapshots']:,} ({d.listing_minimum:,}) | "
            f"{d.calls['dynamodb.BatchWriteItem']:,} ({d.writes_minimum:,}) | "
            f"{d.backlog_volumes} volumes, {d.backlog_expired} expired |"
        )
    return lines


if __name__ == "__main__":
    import contextlib
    import io
    import sys
    from pathlib import Path

    size = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    ndays = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    with contextlib.redirect_stdout(io.StringIO()):  # the function's JSON log lines
        result = simulate(size, ndays)
    text = "\n".join(
        [f"# {__doc__.splitlines()[0]}", "", *__doc__.splitlines()[2:], "", *table(size, result)]
    )
    print(text)
    if "--write" in sys.argv:
        Path(__file__).resolve().parent.parent.joinpath("docs", "benchmarks-snapshot-scale.md").write_text(
            text + "\n"
        )
