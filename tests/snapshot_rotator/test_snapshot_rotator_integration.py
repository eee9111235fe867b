"""snapshot_rotator against moto: opt-in, tagging at creation, retention over simulated days,
idempotent retries, dry-run, failures, the deadline, the handler and the mail."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from autopilot import aws
from autopilot.recorder import CallRecorder
from snapshot_rotator import report as report_module
from snapshot_rotator.retention import Reason
from snapshot_rotator.rotate import RunReport

pytestmark = pytest.mark.integration

STACK = "ops-autopilot-test"
NOW = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
DAY = timedelta(days=1)
Rotate = Callable[..., RunReport]


def fail_create(code: str, volume_ids: set[str]) -> None:
    """Make the real client fail CreateSnapshot(s) for these volumes with an AWS error code."""

    def handler(params: dict[str, Any], **_: Any) -> None:
        target = params.get("VolumeId") or params.get("InstanceSpecification", {}).get("InstanceId")
        if target in volume_ids:
            raise ClientError({"Error": {"Code": code, "Message": "injected"}}, "CreateSnapshot")

    events = aws.client("ec2").meta.events
    events.register("provide-client-params.ec2.CreateSnapshot", handler)
    events.register("provide-client-params.ec2.CreateSnapshots", handler)


def test_opt_in_by_volume_tag_snapshots_with_tags_in_one_call(
    fleet: Any, rotate: Rotate, calls: CallRecorder, api: Any
) -> None:
    wanted = fleet.volume({"Backup": "true", "Name": "db-data", "Owner": "alice@example.com"})
    fleet.volume({"Name": "scratch"})
    fleet.volume({"Backup": "false"})
    report = rotate()
    assert calls.count("ec2", "CreateSnapshot") == 1
    assert calls.count("ec2", "CreateTags") == 0, "tags must be set at creation, not afterwards"
    (params,) = api.of("CreateSnapshot")
    assert params["VolumeId"] == wanted and params["TagSpecifications"][0]["ResourceType"] == "snapshot"
    (snap,) = fleet.snapshots(wanted).values()
    assert snap["Tags"] == {
        "ManagedBy": STACK,
        "Name": "db-data backup 2026-11-23 03:00",
        "Owner": "alice@example.com",
        "Backup": "true",
        "SourceVolumeId": wanted,
    }
    assert "db-data" in snap["Description"]
    assert report.summary()["snapshots_created"] == 1 and report.volumes_checked == 1


def test_opt_in_by_instance_tag_uses_one_crash_consistent_call(
    fleet: Any, rotate: Rotate, calls: CallRecorder, api: Any
) -> None:
    instance_id, volumes = fleet.instance({"Backup": "true", "Name": "web-1", "Owner": "bob"}, data_volumes=2)
    fleet.instance({"Name": "not-opted-in"})
    rotate()
    assert calls.count("ec2", "CreateSnapshots") == 1 and calls.count("ec2", "CreateSnapshot") == 0
    (params,) = api.of("CreateSnapshots")
    assert params["InstanceSpecification"] == {"InstanceId": instance_id}
    # moto does not implement CopyTagsFromSource: the request shape is what we can check.
    assert params["CopyTagsFromSource"] == "volume"
    created = [s for v in volumes for s in fleet.snapshots(v).values()]
    assert len(created) == 3
    for snap in created:
        assert snap["Tags"]["ManagedBy"] == STACK and snap["Tags"]["SourceInstanceId"] == instance_id
        assert snap["Tags"]["Name"] == "web-1 backup 2026-11-23 03:00"


def test_retention_over_simulated_days_keeps_newest_and_never_touches_others(
    fleet: Any, rotate: Rotate, calls: CallRecorder, api: Any
) -> None:
    vol = fleet.volume({"Backup": "true", "Name": "app"})
    start = NOW - 30 * DAY
    unmanaged = fleet.snapshot(vol, start - 90 * DAY, managed=False, Name="hand-made")
    other_stack = fleet.snapshot(vol, start - 90 * DAY, managed=False, ManagedBy="another-stack")
    with_ami = fleet.snapshot(vol, start - 60 * DAY)
    fleet.behind_ami(with_ami)
    for day in range(14):
        now = start + day * DAY
        before = set(fleet.backend.snapshots)
        report = rotate(now=now, keep_newest=3, keep_days=0)
        fleet.backdate_new(before, now)
        assert report.snapshots_created == 1
    ours = {
        sid: s
        for sid, s in fleet.snapshots(vol).items()
        if s["Tags"].get("ManagedBy") == STACK and sid != with_ami
    }
    # the newest 3 completed, plus the last run's own snapshot (not counted until it completes)
    assert len(ours) == 3 + 1
    assert sorted(s["StartTime"].date() for s in ours.values())[-1] == (start + 13 * DAY).date()
    remaining = set(fleet.snapshots(vol))
    assert {unmanaged, other_stack, with_ami} <= remaining
    deleted = {p["SnapshotId"] for p in api.of("DeleteSnapshot")}
    assert not deleted & {unmanaged, other_stack, with_ami}
    assert len(deleted) == 14 - 4


def test_gfs_tiers_over_a_simulated_quarter(fleet: Any, rotate: Rotate) -> None:
    vol = fleet.volume({"Backup": "true"})
    for day in range(90, 0, -1):
        fleet.snapshot(vol, NOW - day * DAY)
    rotate(keep_newest=2, keep_daily=5, keep_weekly=4, keep_monthly=3)
    kept = sorted(s["StartTime"] for s in fleet.snapshots(vol).values())
    # 1 new + newest 2 / 5 daily (overlapping) + up to 4 weekly + up to 3 monthly, all distinct periods
    assert 5 <= len(kept) <= 1 + 5 + 4 + 3
    # monthly: the newest of November, October and September; the last is September 30
    assert kept[0].date() == (NOW - 54 * DAY).date(), "the oldest monthly keeper must survive"


def test_retry_the_same_day_does_not_snapshot_twice(fleet: Any, rotate: Rotate, calls: CallRecorder) -> None:
    fleet.volume({"Backup": "true"})
    fleet.instance({"Backup": "true"}, data_volumes=1)
    rotate(now=NOW)
    fleet.backdate_new(set(), NOW)
    first = calls.count("ec2", "CreateSnapshot") + calls.count("ec2", "CreateSnapshots")
    second = rotate(now=NOW + timedelta(hours=2))
    assert first == 2
    assert calls.count("ec2", "CreateSnapshot") + calls.count("ec2", "CreateSnapshots") == first
    assert len(second.already_done) == 3 and second.snapshots_created == 0
    assert not second.deleted
    # the next day's run does snapshot again
    third = rotate(now=NOW + DAY)
    assert third.snapshots_created == 3


def test_pending_snapshot_of_this_period_also_counts_as_done(fleet: Any, rotate: Rotate) -> None:
    vol = fleet.volume({"Backup": "true"})
    pending = fleet.snapshot(vol, NOW - timedelta(minutes=30), state="pending")
    report = rotate()
    assert report.already_done == {vol: pending} and report.snapshots_created == 0


def test_dry_run_changes_nothing_and_mails_the_plan(
    fleet: Any,
    rotate: Rotate,
    calls: CallRecorder,
    mailbox: Callable[[], list[dict[str, Any]]],
    config_for: Any,
) -> None:
    vol = fleet.volume({"Backup": "true", "Name": "db"})
    for day in range(1, 10):
        fleet.snapshot(vol, NOW - day * DAY)
    before = fleet.snapshots()
    report = rotate(dry_run=True, summary_mail=False, keep_newest=3)
    assert report.snapshots_created == 1 and len(report.deleted) == 6
    report_module.send(config_for(dry_run=True, summary_mail=False, keep_newest=3), report)
    assert [c.operation for c in calls.mutating()] == ["Publish"]
    assert fleet.snapshots() == before
    (mail,) = mailbox()
    assert mail["subject"].startswith(f"[{STACK}] DRY RUN: 1 snapshot would be created, 6 deleted")
    assert "DRY RUN: nothing was changed" in mail["body"]
    assert "Snapshots that would be deleted" in mail["body"]


def test_dry_run_decides_exactly_like_the_real_run(fleet: Any, rotate: Rotate) -> None:
    vol = fleet.volume({"Backup": "true"})
    fleet.instance({"Backup": "true"}, data_volumes=1)
    for day in range(1, 30):
        fleet.snapshot(vol, NOW - day * DAY)
    fleet.behind_ami(fleet.snapshot(vol, NOW - 50 * DAY))
    fleet.snapshot(vol, NOW - 60 * DAY, managed=False)
    policy = {"keep_newest": 3, "keep_days": 5, "keep_weekly": 2, "keep_monthly": 1}
    dry = rotate(dry_run=True, **policy)
    real = rotate(**policy)
    existing = {d.snapshot.id: d.reason for d in dry.decisions}
    assert {d.snapshot.id: d.reason for d in real.decisions if d.snapshot.id in existing} == existing
    assert {d.snapshot.id for d in dry.deleted} == {d.snapshot.id for d in real.deleted}
    assert [j.volume_ids for j, _ in dry.created] == [j.volume_ids for j, _ in real.created]


def test_failed_snapshot_keeps_every_old_one_and_mails_critical(
    fleet: Any,
    rotate: Rotate,
    calls: CallRecorder,
    api: Any,
    mailbox: Callable[[], list[dict[str, Any]]],
    config_for: Any,
) -> None:
    ok = fleet.volume({"Backup": "true", "Name": "a-ok"})
    broken = fleet.volume({"Backup": "true", "Name": "broken", "Owner": "carol"})
    for vol in (ok, broken):
        for day in range(1, 6):
            fleet.snapshot(vol, NOW - day * DAY)
    fail_create("IncorrectState", {broken})
    report = rotate(keep_newest=2, summary_mail=False)
    assert len(fleet.snapshots(broken)) == 5, "nothing may be deleted for a volume whose backup failed"
    assert {d.snapshot.volume_id for d in report.deleted} == {ok}
    assert len(api.of("DeleteSnapshot")) == 3
    # the newest 2 completed, and the new one (pending for the plan, whatever moto says)
    assert len(fleet.snapshots(ok)) == 2 + 1
    assert report.failed == 1
    assert sum(d.reason is Reason.HELD for d in report.decisions) == 3
    report_module.send(config_for(keep_newest=2, summary_mail=False), report)
    (mail,) = mailbox()
    assert mail["attributes"] == {"automation": "snapshot_rotator", "severity": "critical"}
    assert mail["subject"] == f"[{STACK}] Backup FAILED for 1 volume (1 created, 3 deleted)"
    assert broken in mail["body"] and "Owner carol" in mail["body"] and "IncorrectState" in mail["body"]


def test_throttling_beyond_retries_stops_new_work_and_reports_what_is_left(
    fleet: Any, rotate: Rotate
) -> None:
    vols = sorted(fleet.volume({"Backup": "true"}) for _ in range(4))
    for vol in vols:
        fleet.snapshot(vol, NOW - 30 * DAY)
        fleet.snapshot(vol, NOW - 31 * DAY)
    fail_create("RequestLimitExceeded", {vols[1]})  # as if botocore's 8 attempts were all throttled
    report = rotate(keep_newest=1)
    assert report.snapshots_created == 1 and report.failed == 1
    assert [j.resource_id for j in report.jobs_left] == vols[2:]
    assert report.left == 2 and report.summary()["status"] == "partial"
    # only the volume that got its new backup loses old snapshots
    assert {d.snapshot.volume_id for d in report.deleted} == {vols[0]}


@pytest.mark.parametrize("code", ["ConcurrentSnapshotLimitExceeded", "SnapshotCreationPerVolumeRateExceeded"])
def test_a_volume_limit_fails_only_that_volume(fleet: Any, rotate: Rotate, code: str) -> None:
    """Both limits are per volume (AWS: at most 5 pending snapshots per gp2/gp3/io1/io2 volume,
    1 per st1/sc1): one busy volume must not hold up every other volume's backup."""
    vols = sorted(fleet.volume({"Backup": "true"}) for _ in range(4))
    for vol in vols:
        fleet.snapshot(vol, NOW - 30 * DAY)
        fleet.snapshot(vol, NOW - 31 * DAY)
    fail_create(code, {vols[1]})
    report = rotate(keep_newest=1)
    assert report.snapshots_created == 3 and report.failed == 1 and report.left == 0
    assert {d.snapshot.volume_id for d in report.deleted} == {vols[0], vols[2], vols[3]}


def test_volume_missing_from_a_multi_volume_answer_is_held(fleet: Any, rotate: Rotate) -> None:
    _, volumes = fleet.instance({"Backup": "true"}, data_volumes=1)
    for vol in volumes:
        for day in range(1, 4):
            fleet.snapshot(vol, NOW - day * DAY)

    def drop_data_volume(parsed: dict[str, Any], **_: Any) -> None:
        parsed["Snapshots"] = [s for s in parsed.get("Snapshots", []) if s["VolumeId"] != volumes[1]]

    aws.client("ec2").meta.events.register("after-call.ec2.CreateSnapshots", drop_data_volume)
    report = rotate(keep_newest=1)
    assert {d.snapshot.volume_id for d in report.deleted} == {volumes[0]}
    assert {d.snapshot.volume_id for d in report.decisions if d.reason is Reason.HELD} == {volumes[1]}


def test_deadline_stops_before_starting_work(fleet: Any, rotate: Rotate, calls: CallRecorder) -> None:
    vol = fleet.volume({"Backup": "true"})
    for day in range(1, 5):
        fleet.snapshot(vol, NOW - day * DAY)
    report = rotate(seconds=10, keep_newest=1)  # less than the 20 s reserve: time is already up
    assert calls.mutating() == []
    assert report.left == 1 and not report.deleted
    assert all(not d.delete for d in report.decisions), "no deletion for a volume without its new backup"


def test_ami_snapshot_is_never_deleted_even_if_registered_mid_run(fleet: Any, rotate: Rotate) -> None:
    vol = fleet.volume({"Backup": "true"})
    newest = fleet.snapshot(vol, NOW - 39 * DAY)
    old = [fleet.snapshot(vol, NOW - d * DAY) for d in (40, 41, 42)]
    fleet.behind_ami(old[0])
    # An AMI registered between listing and deleting: moto answers InvalidSnapshot.InUse.
    ec2 = aws.client("ec2")

    def late_ami(params: dict[str, Any], **_: Any) -> None:
        if params.get("SnapshotId") == old[1] and fleet.backend.snapshots[old[1]].from_ami is None:
            fleet.behind_ami(old[1])

    ec2.meta.events.register("provide-client-params.ec2.DeleteSnapshot", late_ami)
    report = rotate(keep_newest=1)
    remaining = set(fleet.snapshots(vol))
    assert {newest, old[0], old[1]} <= remaining and old[2] not in remaining
    assert {d.snapshot.id for d in report.skipped} == {old[0], old[1]}
    assert report.failed == 0


def test_api_call_budget(fleet: Any, rotate: Rotate, calls: CallRecorder, api: Any) -> None:
    vols = [fleet.volume({"Backup": "true"}) for _ in range(5)]
    fleet.instance({"Backup": "true"}, data_volumes=1)
    for vol in vols:
        for day in range(1, 5):
            fleet.snapshot(vol, NOW - day * DAY)
    calls.calls.clear()
    rotate(keep_newest=2)
    assert calls.by_operation() == {
        "ec2.DescribeImages": 1,
        "ec2.DescribeSnapshots": 1,
        "ec2.DescribeInstances": 1,
        "ec2.DescribeVolumes": 1,
        "ec2.CreateSnapshot": 5,
        "ec2.CreateSnapshots": 1,
        "ec2.DeleteSnapshot": 5 * (4 - 2),
    }
    (params,) = api.of("DescribeSnapshots")
    assert params["OwnerIds"] == ["self"] and params["MaxResults"] == 1000
    assert params["Filters"] == [{"Name": "tag:ManagedBy", "Values": [STACK]}]
    (images,) = api.of("DescribeImages")
    assert images["Owners"] == ["self"]


# --- the handler ---------------------------------------------------------------------------


def test_handler_runs_on_the_sample_event_and_mails_nothing_when_all_is_well(
    fleet: Any,
    stack_env: dict[str, str],
    load_event: Callable[[str], dict[str, Any]],
    lambda_context: Any,
    mailbox: Callable[[], list[dict[str, Any]]],
) -> None:
    fleet.volume({"Backup": "true"})
    from snapshot_rotator.app import lambda_handler

    result = lambda_handler(load_event("snapshot_rotator/eventbridge.scheduled"), lambda_context)
    assert result["snapshots_created"] == 1 and result["mail"] is None and result["status"] == "done"
    assert mailbox() == []
    again = lambda_handler(load_event("snapshot_rotator/eventbridge.scheduled"), lambda_context)
    assert again["snapshots_created"] == 0 and again["already_snapshotted"] == 1


def test_handler_summary_mail_when_enabled(
    fleet: Any,
    stack_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    load_event: Callable[[str], dict[str, Any]],
    lambda_context: Any,
    mailbox: Callable[[], list[dict[str, Any]]],
) -> None:
    monkeypatch.setenv("SUMMARY_MAIL", "true")
    fleet.volume({"Backup": "true", "Name": "db"})
    from snapshot_rotator.app import lambda_handler

    lambda_handler(load_event("snapshot_rotator/eventbridge.scheduled"), lambda_context)
    (mail,) = mailbox()
    assert mail["subject"] == f"[{STACK}] 1 snapshot created, 0 deleted"
    assert mail["attributes"]["severity"] == "info"
    assert "console.aws.amazon.com/ec2/home?region=eu-west-1#VolumeDetails" in mail["body"]


def test_handler_ignores_a_malformed_event(
    stack_env: dict[str, str],
    load_event: Callable[[str], dict[str, Any]],
    lambda_context: Any,
    calls: CallRecorder,
) -> None:
    from snapshot_rotator.app import lambda_handler

    result = lambda_handler(
        load_event("snapshot_rotator/eventbridge.malformed_not_scheduled"), lambda_context
    )
    assert result["status"] == "ignored" and "scheduled event" in result["reason"]
    assert calls.calls == []
    assert lambda_handler({"not": "an event"}, lambda_context)["status"] == "ignored"


class _Metrics:
    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def add_metric(self, name: str, unit: Any, value: float) -> None:
        self.values[name] = value


def test_metrics_count_what_was_done(fleet: Any, rotate: Rotate) -> None:
    vols = sorted(fleet.volume({"Backup": "true"}) for _ in range(3))
    for vol in vols:
        for day in range(1, 5):
            fleet.snapshot(vol, NOW - day * DAY)
    fleet.behind_ami(fleet.snapshot(vols[0], NOW - 9 * DAY))
    fleet.snapshot(vols[1], NOW - timedelta(days=2, hours=1), state="pending")
    fail_create("IncorrectState", {vols[2]})
    metrics = _Metrics()
    report_module.add_metrics(metrics, rotate(keep_newest=2))  # type: ignore[arg-type]
    assert metrics.values == {
        "Checked": 3,
        "Changed": 2 + 2 * 2,  # two new snapshots, two expired on each healthy volume
        "Skipped": 1 + 1 + 2,  # AMI, an earlier pending one, two held of the failed volume
        "Failed": 1,
        "SnapshotsCreated": 2,
        "SnapshotsDeleted": 4,
        "LeftForNextRun": 0,
    }
    dry = _Metrics()
    report_module.add_metrics(dry, rotate(keep_newest=2, dry_run=True))  # type: ignore[arg-type]
    assert dry.values["Changed"] == dry.values["SnapshotsCreated"] == dry.values["SnapshotsDeleted"] == 0
