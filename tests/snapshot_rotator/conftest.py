"""A small EC2 fleet in moto for snapshot_rotator's integration tests and benchmark, and
``rotate``: one run's plan, act and mail at an injected ``now``, as the runner sequences them.

moto stamps every snapshot with the real clock and makes it ``completed`` at once; the fleet
backdates snapshots and sets their state in moto's backend so that a test can build any
history and run the rotator at any injected ``now``.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends

from autopilot import aws
from autopilot.config import CommonConfig
from autopilot.outbox import Mail
from autopilot.runner import Plan, Run
from autopilot.runtime import Deadline
from conftest import create_outbox_table
from snapshot_rotator import report, run, store
from snapshot_rotator.config import Config
from snapshot_rotator.decide.policies import parse_policies
from snapshot_rotator.decide.retention import Decision, RetentionPolicy
from snapshot_rotator.store import Note, Record

REGION = "eu-west-1"
STACK = "ops-autopilot-test"
NOW = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
AMI_ID = "ami-12c6146b"  # one of moto's bundled images
LEDGER_TABLE = "ops-autopilot-test-ledger"
DR_REGION = "eu-central-1"  # the disaster-recovery destination of the tests' copy policies


@pytest.fixture(autouse=True)
def _ledger_table() -> str:
    """The stack's SnapshotRotatorLedgerTable, in moto (the same keys as the outbox table), as a
    deployed stack has it after its first run (it began a year ago)."""
    table = create_outbox_table(LEDGER_TABLE)
    since = store.since_item((NOW - timedelta(days=365)).isoformat())
    boto3.client("dynamodb", region_name=REGION).put_item(TableName=table, Item=since)
    return table


class Fleet:
    def __init__(self) -> None:
        self.ec2 = boto3.client("ec2", region_name=REGION)

    @property
    def backend(self) -> Any:
        return ec2_backends[DEFAULT_ACCOUNT_ID][REGION]

    def volume(self, tags: dict[str, str] | None = None) -> str:
        spec = [{"ResourceType": "volume", "Tags": [{"Key": k, "Value": v} for k, v in (tags or {}).items()]}]
        kwargs: dict[str, Any] = {"AvailabilityZone": f"{REGION}a", "Size": 8}
        if tags:
            kwargs["TagSpecifications"] = spec
        return str(self.ec2.create_volume(**kwargs)["VolumeId"])

    def instance(self, tags: dict[str, str], data_volumes: int = 1) -> tuple[str, list[str]]:
        """An instance with a root volume and ``data_volumes`` more; returns (id, [root, data...])."""
        inst = self.ec2.run_instances(
            ImageId=AMI_ID,
            MinCount=1,
            MaxCount=1,
            Placement={"AvailabilityZone": f"{REGION}a"},
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
            ],
        )["Instances"][0]
        instance_id = str(inst["InstanceId"])
        for n in range(data_volumes):
            vol = self.volume({"Name": f"{instance_id}-data{n}"})
            self.ec2.attach_volume(VolumeId=vol, InstanceId=instance_id, Device=f"/dev/sd{chr(ord('f') + n)}")
        mappings = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0][
            "BlockDeviceMappings"
        ]
        return instance_id, [m["Ebs"]["VolumeId"] for m in mappings]

    def snapshot(
        self,
        volume_id: str,
        when: datetime,
        *,
        managed: bool = True,
        recorded: bool | None = None,
        state: str = "completed",
        policy: str = "default",
        source: str | None = None,
        **tags: str,
    ) -> str:
        """A snapshot of ``volume_id`` started at ``when``: ``managed`` tags it ManagedBy=<stack>;
        ``recorded`` (default: as ``managed``) writes it in the stack's ledger, as the rotator
        does for the snapshots it creates (a tagged one that is not recorded is a forgery);
        ``source``: the source volume the ledger names (a copy's)."""
        all_tags = ({"ManagedBy": STACK} if managed else {}) | tags
        kwargs: dict[str, Any] = {"VolumeId": volume_id, "Description": "history"}
        if all_tags:
            kwargs["TagSpecifications"] = [
                {"ResourceType": "snapshot", "Tags": [{"Key": k, "Value": v} for k, v in all_tags.items()]}
            ]
        snap_id = str(self.ec2.create_snapshot(**kwargs)["SnapshotId"])
        self.set(snap_id, when, state)
        if managed if recorded is None else recorded:
            self.record(snap_id, source or volume_id, when, policy)
        return snap_id

    def record(self, snap_id: str, volume_id: str, when: datetime, policy: str = "default") -> None:
        """Write the ledger record as the rotator would (with a client of its own: the test's
        history is not the rotator's calls)."""
        record = Record(snap_id, volume_id, REGION, policy, when.isoformat(), "history")
        boto3.client("dynamodb", region_name=REGION).put_item(TableName=LEDGER_TABLE, Item=record.item())

    def ledger(self) -> dict[str, Record]:
        return store.read(LEDGER_TABLE).records

    def notes(self) -> dict[str, Note]:
        return store.read(LEDGER_TABLE).notes

    def set(self, snap_id: str, when: datetime | None = None, state: str | None = None) -> None:
        snap = self.backend.snapshots[snap_id]
        if when is not None:
            snap.start_time = when
        if state is not None:
            snap.status = state

    def behind_ami(self, snap_id: str) -> str:
        """Register an AMI whose block device mapping uses ``snap_id`` (moto cannot register one
        from a given snapshot, so its own auto-created snapshot is swapped for ours)."""
        image_id = str(self.ec2.register_image(Name=f"image-of-{snap_id}")["ImageId"])
        image = self.backend.amis[image_id]
        self.backend.snapshots.pop(image.ebs_snapshot.id, None)
        image.ebs_snapshot = self.backend.snapshots[snap_id]
        image.ebs_snapshot.from_ami = image_id
        return image_id

    def snapshots(self, volume_id: str | None = None) -> dict[str, dict[str, Any]]:
        """Every snapshot of the account (optionally of one volume), by id, tags as a dict."""
        found = {}
        for s in self.ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]:
            if volume_id is None or s["VolumeId"] == volume_id:
                found[s["SnapshotId"]] = {**s, "Tags": {t["Key"]: t["Value"] for t in s.get("Tags", [])}}
        return found

    def backdate_new(self, before: set[str], when: datetime) -> set[str]:
        """Give the snapshots created since ``before`` the simulated creation time."""
        new = set(self.backend.snapshots) - before
        for snap_id in new:
            self.set(snap_id, when)
        return new


class ApiParams:
    """The API-level parameters of every EC2 call of the rotator's client (the shared
    CallRecorder sees the serialized wire request instead)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.elsewhere: list[tuple[str, str, dict[str, Any]]] = []  # (region, operation, params)
        aws.client("ec2").meta.events.register("provide-client-params.ec2", self._hook)
        aws.client("ec2", DR_REGION).meta.events.register("provide-client-params.ec2", self._there)

    def _hook(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.seen.append((model.name, copy.deepcopy(params)))

    def _there(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.elsewhere.append((DR_REGION, model.name, copy.deepcopy(params)))

    def of(self, operation: str) -> list[dict[str, Any]]:
        return [p for name, p in self.seen if name == operation]

    def of_region(self, operation: str, region: str) -> list[dict[str, Any]]:
        """The calls of the rotator's client in a disaster-recovery destination region."""
        return [p for where, name, p in self.elsewhere if name == operation and where == region]


@pytest.fixture
def api() -> ApiParams:
    return ApiParams()


@pytest.fixture
def fleet() -> Fleet:
    return Fleet()


ENV = {  # the template's variables of SnapshotRotatorFunction (their defaults), for the handler
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
    "LEDGER_TABLE": LEDGER_TABLE,
    "COPY_REGIONS": "",
    "COPY_KMS_KEYS": "",
}


@pytest.fixture
def rotator_env(stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The stack's and the function's environment, for tests of the real handler."""
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    return {**stack_env, **ENV}


def scheduled(load_event: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """The sample scheduled event with an id of its own: every call is another run."""
    event = load_event("snapshot_rotator/eventbridge.scheduled")
    event["id"] = str(uuid.uuid4())
    return event


def make_config(
    *, summary_mail: bool = True, keep_newest: int = 3, policies: str = "", **policy: int
) -> Config:
    default = RetentionPolicy(keep_newest=keep_newest, **policy)
    return Config(
        policy=default,
        retry_window=timedelta(hours=12),
        summary_mail=summary_mail,
        ledger_table=LEDGER_TABLE,
        policies=parse_policies(policies, default),
        stale_after=timedelta(days=2),
        copy_regions=(DR_REGION,),
    )


@dataclass
class Rotation:
    """One run's plan, the act's result and the mail, as the runner would get them."""

    plan: Plan
    result: dict[str, Any] | None
    mail: Mail | None

    @property
    def intent(self) -> Mapping[str, Any]:
        assert self.plan.intent is not None, "the plan has nothing to do"
        return self.plan.intent

    @property
    def outcome(self) -> report.Outcome:
        assert self.result is not None
        return report.Outcome(self.intent, self.result)

    @property
    def created(self) -> int:
        return 0 if self.result is None else self.outcome.snapshots_created

    def listed(self, key: str) -> list[Decision]:
        """The planned deletions the result lists under ``key`` (deleted, held, gone, ...)."""
        return [] if self.result is None else self.outcome.decisions(key)

    @property
    def deleted(self) -> list[Decision]:
        return self.listed("deleted")

    @property
    def planned_deletions(self) -> list[Decision]:
        return [] if self.plan.intent is None else self.outcome.deletions

    @property
    def already_done(self) -> dict[str, str]:
        return {
            d["volume"]: d["snapshot"]
            for d in self.plan.decisions
            if d["decision"] == "already snapshotted this period"
        }

    @property
    def failed(self) -> int:
        return 0 if self.result is None else self.outcome.failed

    @property
    def left(self) -> int:
        return 0 if self.result is None else self.outcome.left

    @property
    def metrics(self) -> dict[str, float]:
        counts = self.plan.counts
        if self.result is not None:
            counts += report.counts(self.intent, self.result)
        return counts.as_metrics()


def context(
    topic_arn: str,
    now: datetime = NOW,
    seconds: float = 300.0,
    *,
    dry_run: bool = False,
    owner_key: str = "Owner",
    resumed: bool = False,
    change_calendar: str = "",
    **kwargs: Any,
) -> Run[Config, Any]:
    common = CommonConfig(
        stack_name=STACK,
        region=REGION,
        topic_arn=topic_arn,
        dry_run=dry_run,
        owner_tag_key=owner_key,
        change_calendar=change_calendar,
    )
    return Run(
        "snapshot_rotator",
        make_config(**kwargs),
        common,
        now,
        Deadline(remaining_at_start=seconds),
        resumed=resumed,
        run_id="test",
    )


@pytest.fixture
def make_context(topic_arn: str) -> Callable[..., Run[Config, Any]]:
    """make_context(now=..., seconds=..., dry_run=..., owner_key=..., resumed=..., **config)"""

    def build(now: datetime = NOW, seconds: float = 300.0, **kwargs: Any) -> Run[Config, Any]:
        return context(topic_arn, now, seconds, **kwargs)

    return build


@pytest.fixture
def rotate(topic_arn: str) -> Callable[..., Rotation]:
    """rotate(now=..., seconds=300, dry_run=..., owner_key=..., **config): plan, act and render
    the mail of one run with an injected clock, as the runner does (without its outbox)."""

    def rotation(now: datetime = NOW, seconds: float = 300.0, **kwargs: Any) -> Rotation:
        ctx = context(topic_arn, now, seconds, **kwargs)
        plan = run.plan(ctx)
        if plan.intent is None:
            return Rotation(plan, None, None)
        result = run.act(ctx, plan.intent)
        return Rotation(plan, result, report.mail(ctx, plan.intent, result))

    return rotation
