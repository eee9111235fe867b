"""run.py against moto: opt-in, tagging at creation, retention over simulated days, idempotent
retries, dry-run, failures, the deadline, a run finished by a later invocation, the call budget."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from autopilot import aws
from autopilot.recorder import CallRecorder
from snapshot_rotator import report, run
from snapshot_rotator.decide.retention import Reason

pytestmark = pytest.mark.integration

STACK = "ops-autopilot-test"
NOW = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
DAY = timedelta(days=1)
Rotate = Callable[..., Any]  # conftest.rotate -> Rotation


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
    rotation = rotate()
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
    assert rotation.created == 1 and rotation.plan.counts.checked == 1


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
        assert snap["Tags"]["Owner"] == "bob"  # the instance's owner


def test_a_volume_opted_out_is_not_snapshotted_with_its_instance(
    fleet: Any, rotate: Rotate, api: Any
) -> None:
    instance_id, (root, data) = fleet.instance({"Backup": "true", "Name": "web-1"}, data_volumes=1)
    fleet.ec2.create_tags(Resources=[data], Tags=[{"Key": "Backup", "Value": "Never"}])
    rotation = rotate()
    (params,) = api.of("CreateSnapshots")
    assert params["InstanceSpecification"] == {"InstanceId": instance_id, "ExcludeDataVolumeIds": [data]}
    # moto ignores ExcludeDataVolumeIds (it snapshots every volume): the request is what we check.
    assert root in rotation.result["created"][0]["snapshots"]  # type: ignore[index]
    assert rotation.intent["opted_out"] == {data: instance_id}
    assert rotation.mail is not None and f"volume {data} of instance {instance_id}" in rotation.mail.body


def test_a_loose_volume_gets_its_instances_owner_under_the_owner_tag_key(
    fleet: Any, rotate: Rotate, calls: CallRecorder
) -> None:
    _, (root, _) = fleet.instance({"CreatedBy": "dave", "Owner": "not-this"}, data_volumes=1)
    fleet.ec2.create_tags(Resources=[root], Tags=[{"Key": "Backup", "Value": "true"}])
    rotation = rotate(owner_key="CreatedBy")
    (snap,) = fleet.snapshots(root).values()
    assert snap["Tags"]["CreatedBy"] == "dave" and "Owner" not in snap["Tags"]
    assert calls.count("ec2", "DescribeInstances") == 2  # the opted-in listing, and the owner lookup
    assert rotation.mail is not None and "CreatedBy dave" in rotation.mail.body


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
        rotation = rotate(now=now, keep_newest=3, keep_days=0)
        fleet.backdate_new(before, now)
        assert rotation.created == 1
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
    for day in range(90, 0, -1):  # one a day at 03:00, the last yesterday (NOW: Monday 2026-11-23)
        fleet.snapshot(vol, NOW - day * DAY)
    before = set(fleet.backend.snapshots)
    rotation = rotate(keep_newest=2, keep_daily=5, keep_weekly=4, keep_monthly=3)
    fleet.backdate_new(before, NOW)  # moto stamps the new one with the real clock: the run's time
    kept = sorted(s["StartTime"] for s in fleet.snapshots(vol).values())
    # The new one; newest 2 (1, 2 days ago) inside daily 5 (1-5); weekly 4: the newest of ISO
    # weeks 47, 46, 45, 44 (1, 8, 15, 22); monthly 3: November (1), October 31 (23), September 30 (54).
    assert kept == [NOW - days * DAY for days in (54, 23, 22, 15, 8, 5, 4, 3, 2, 1, 0)]
    assert rotation.created == 1 and len(rotation.deleted) == 90 - 10


def test_retry_the_same_day_does_not_snapshot_twice(fleet: Any, rotate: Rotate, calls: CallRecorder) -> None:
    fleet.volume({"Backup": "true"})
    fleet.instance({"Backup": "true"}, data_volumes=1)
    rotate(now=NOW)
    fleet.backdate_new(set(), NOW)
    first = calls.count("ec2", "CreateSnapshot") + calls.count("ec2", "CreateSnapshots")
    second = rotate(now=NOW + timedelta(hours=2))
    assert first == 2
    assert calls.count("ec2", "CreateSnapshot") + calls.count("ec2", "CreateSnapshots") == first
    assert len(second.already_done) == 3 and second.created == 0
    assert second.plan.intent is None and second.plan.counts.checked == 3  # nothing to do, no mail
    # the next day's run does snapshot again
    third = rotate(now=NOW + DAY)
    assert third.created == 3


def test_pending_snapshot_of_this_period_also_counts_as_done(fleet: Any, rotate: Rotate) -> None:
    vol = fleet.volume({"Backup": "true"})
    pending = fleet.snapshot(vol, NOW - timedelta(minutes=30), state="pending")
    rotation = rotate()
    assert rotation.already_done == {vol: pending} and rotation.created == 0


def test_dry_run_changes_nothing_and_mails_the_plan(fleet: Any, rotate: Rotate, calls: CallRecorder) -> None:
    vol = fleet.volume({"Backup": "true", "Name": "db"})
    for day in range(1, 10):
        fleet.snapshot(vol, NOW - day * DAY)
    before = fleet.snapshots()
    rotation = rotate(dry_run=True, summary_mail=False, keep_newest=3)
    assert rotation.created == 1 and len(rotation.deleted) == 6
    assert calls.mutating() == []
    assert fleet.snapshots() == before
    mail = rotation.mail
    assert mail is not None
    assert mail.subject.startswith(f"[{STACK}] DRY RUN: 1 snapshot would be created, 6 deleted")
    assert "DRY RUN: nothing was changed" in mail.body
    assert "Snapshots that would be deleted" in mail.body


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
    assert dry.intent["delete"] == real.intent["delete"] and dry.intent["kept"] == real.intent["kept"]
    assert dry.intent["jobs"] == real.intent["jobs"]
    assert {d.snapshot.id for d in dry.deleted} == {d.snapshot.id for d in real.deleted}
    assert [sorted(e["snapshots"]) for e in dry.result["created"]] == [  # type: ignore[index]
        sorted(e["snapshots"])
        for e in real.result["created"]  # type: ignore[index]
    ]


def test_failed_snapshot_keeps_every_old_one_and_mails_critical(
    fleet: Any, rotate: Rotate, calls: CallRecorder, api: Any
) -> None:
    ok = fleet.volume({"Backup": "true", "Name": "a-ok"})
    broken = fleet.volume({"Backup": "true", "Name": "broken", "Owner": "carol"})
    for vol in (ok, broken):
        for day in range(1, 6):
            fleet.snapshot(vol, NOW - day * DAY)
    fail_create("IncorrectState", {broken})
    rotation = rotate(keep_newest=2, summary_mail=False)
    assert len(fleet.snapshots(broken)) == 5, "nothing may be deleted for a volume whose backup failed"
    assert {d.snapshot.volume_id for d in rotation.deleted} == {ok}
    assert len(api.of("DeleteSnapshot")) == 3
    # the newest 2 completed, and the new one (pending for the plan, whatever moto says)
    assert len(fleet.snapshots(ok)) == 2 + 1
    assert rotation.failed == 1
    assert len(rotation.listed("held")) == 3
    assert all(d.snapshot.volume_id == broken for d in rotation.listed("held"))
    mail = rotation.mail
    assert mail is not None and mail.severity == "critical"
    assert mail.subject == f"[{STACK}] Backup FAILED for 1 volume (1 created, 3 deleted)"
    assert broken in mail.body and "Owner carol" in mail.body and "IncorrectState" in mail.body
    assert Reason.HELD.value in mail.body


def test_throttling_beyond_retries_stops_new_work_and_reports_what_is_left(
    fleet: Any, rotate: Rotate
) -> None:
    vols = sorted(fleet.volume({"Backup": "true"}) for _ in range(4))
    for vol in vols:
        fleet.snapshot(vol, NOW - 30 * DAY)
        fleet.snapshot(vol, NOW - 31 * DAY)
    fail_create("RequestLimitExceeded", {vols[1]})  # as if botocore's 8 attempts were all throttled
    rotation = rotate(keep_newest=1)
    assert rotation.created == 1 and rotation.failed == 1
    jobs = rotation.intent["jobs"]
    assert [jobs[j["job"]]["resource_id"] for j in rotation.result["jobs_left"]] == vols[2:]  # type: ignore[index]
    assert rotation.left == 2 and rotation.metrics["LeftForNextRun"] == 2
    # only the volume that got its new backup loses old snapshots
    assert {d.snapshot.volume_id for d in rotation.deleted} == {vols[0]}


@pytest.mark.parametrize("code", ["ConcurrentSnapshotLimitExceeded", "SnapshotCreationPerVolumeRateExceeded"])
def test_a_volume_limit_fails_only_that_volume(fleet: Any, rotate: Rotate, code: str) -> None:
    """Both limits are per volume (AWS: at most 5 pending snapshots per gp2/gp3/io1/io2 volume,
    1 per st1/sc1): one busy volume must not hold up every other volume's backup."""
    vols = sorted(fleet.volume({"Backup": "true"}) for _ in range(4))
    for vol in vols:
        fleet.snapshot(vol, NOW - 30 * DAY)
        fleet.snapshot(vol, NOW - 31 * DAY)
    fail_create(code, {vols[1]})
    rotation = rotate(keep_newest=1)
    assert rotation.created == 3 and rotation.failed == 1 and rotation.left == 0
    assert {d.snapshot.volume_id for d in rotation.deleted} == {vols[0], vols[2], vols[3]}


def test_volume_missing_from_a_multi_volume_answer_is_held(fleet: Any, rotate: Rotate) -> None:
    _, volumes = fleet.instance({"Backup": "true"}, data_volumes=1)
    for vol in volumes:
        for day in range(1, 4):
            fleet.snapshot(vol, NOW - day * DAY)

    def drop_data_volume(parsed: dict[str, Any], **_: Any) -> None:
        parsed["Snapshots"] = [s for s in parsed.get("Snapshots", []) if s["VolumeId"] != volumes[1]]

    aws.client("ec2").meta.events.register("after-call.ec2.CreateSnapshots", drop_data_volume)
    rotation = rotate(keep_newest=1)
    assert {d.snapshot.volume_id for d in rotation.deleted} == {volumes[0]}
    assert {d.snapshot.volume_id for d in rotation.listed("held")} == {volumes[1]}


def test_deadline_stops_before_starting_work(fleet: Any, rotate: Rotate, calls: CallRecorder) -> None:
    vol = fleet.volume({"Backup": "true"})
    for day in range(1, 5):
        fleet.snapshot(vol, NOW - day * DAY)
    rotation = rotate(seconds=10, keep_newest=1)  # less than the 20 s reserve: time is already up
    assert calls.mutating() == []
    assert rotation.left == 1 and not rotation.deleted
    assert len(rotation.listed("held")) == 3, "no deletion for a volume without its new backup"


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
    rotation = rotate(keep_newest=1)
    remaining = set(fleet.snapshots(vol))
    assert {newest, old[0], old[1]} <= remaining and old[2] not in remaining
    kept_past = {d["id"] for d in rotation.intent["kept_past_retention"]}
    skipped = {d.snapshot.id for d, _ in rotation.outcome.delete_skipped}
    assert kept_past == {old[0]} and skipped == {old[1]}
    assert rotation.failed == 0 and rotation.metrics["Skipped"] == 2


def test_the_deleter_refuses_a_deletion_the_rules_forbid(
    fleet: Any, make_context: Any, calls: CallRecorder
) -> None:
    """Safety rule 1 is checked again before each DeleteSnapshot: an intent that breaks it (a
    bug, or a tampered outbox entry) deletes nothing and fails loudly."""
    vol = fleet.volume({"Backup": "true"})
    theirs = fleet.snapshot(vol, NOW - 40 * DAY, managed=False, ManagedBy="another-stack")
    ctx = make_context()
    plan = run.plan(ctx)
    assert plan.intent is not None
    forged = {
        **plan.intent,
        "delete": [
            {
                "id": theirs,
                "volume_id": vol,
                "start_time": (NOW - 40 * DAY).isoformat(),
                "state": "completed",
                "tags": {"ManagedBy": "another-stack"},
                "used_by_ami": False,
                "reason": "EXPIRED",
            }
        ],
    }
    with pytest.raises(RuntimeError, match="refusing to delete"):
        run.act(ctx, forged)
    assert calls.count("ec2", "DeleteSnapshot") == 0 and theirs in fleet.snapshots(vol)


def test_finishing_an_interrupted_run_creates_nothing_twice_and_deletes_what_is_left(
    fleet: Any, make_context: Any, calls: CallRecorder
) -> None:
    """ctx.resumed: the act runs again on a recorded intent whose snapshots were made and whose
    deletions were partly done; it creates nothing, deletes only what is still there, and keeps
    a snapshot an AMI started using meanwhile."""
    vols = sorted(fleet.volume({"Backup": "true"}) for _ in range(2))
    old = {v: [fleet.snapshot(v, NOW - d * DAY) for d in range(1, 5)] for v in vols}
    ctx = make_context(keep_newest=2)
    plan = run.plan(ctx)
    assert plan.intent is not None
    first = run.act(ctx, plan.intent)
    assert len(first["created"]) == 2 and len(first["deleted"]) == 4
    # As if the first attempt had died after creating and after one deletion: restore three.
    again = [fleet.snapshot(v, NOW - d * DAY) for v in vols for d in (3, 4)]
    replaced = dict(zip([s for v in vols for s in old[v][2:]], again, strict=True))
    intent = {**plan.intent, "delete": [{**d, "id": replaced[d["id"]]} for d in plan.intent["delete"]]}
    gone_already = intent["delete"][0]["id"]
    fleet.ec2.delete_snapshot(SnapshotId=gone_already)
    in_use = intent["delete"][1]["id"]
    fleet.behind_ami(in_use)
    calls.calls.clear()
    resumed = make_context(keep_newest=2, resumed=True)
    result = run.act(resumed, intent)
    assert calls.count("ec2", "CreateSnapshot") == 0, "a volume was snapshotted twice"
    assert [e["earlier"] for e in result["created"]] == [True, True]
    assert result["gone"] == [0] and result["delete_skipped"][0]["index"] == 1
    assert sorted(result["deleted"]) == [2, 3] and calls.count("ec2", "DeleteSnapshot") == 2
    assert in_use in fleet.snapshots()
    assert (
        calls.by_operation()["ec2.DescribeSnapshots"] == 1 and calls.by_operation()["ec2.DescribeImages"] == 1
    )


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
        # the ledger: read whole in one page; 7 new records and 10 deleted ones, 25 writes a call
        "dynamodb.Query": 1,
        "dynamodb.BatchWriteItem": 1,  # 17 writes, records and removals together: one call
    }
    (params,) = api.of("DescribeSnapshots")
    assert params["OwnerIds"] == ["self"] and params["MaxResults"] == 1000
    assert params["Filters"] == [{"Name": "tag:ManagedBy", "Values": [STACK]}]
    (images,) = api.of("DescribeImages")
    assert images["Owners"] == ["self"]
    (volumes,) = api.of("DescribeVolumes")
    assert volumes["Filters"][0] == {"Name": "tag-key", "Values": ["Backup"]} and volumes["MaxResults"] == 500


def _daily_backups(fleet: Any, volumes: int, days: int) -> list[str]:
    """``volumes`` opted-in volumes with a backup on each of the last ``days`` days."""
    vols = sorted(fleet.volume({"Backup": "true"}) for _ in range(volumes))
    for vol in vols:
        for day in range(1, days + 1):
            fleet.snapshot(vol, NOW - day * DAY)
    return vols


def _six_volumes_four_expired_each(fleet: Any) -> list[str]:
    return _daily_backups(fleet, 6, 5)


def test_a_plan_too_large_for_one_item_is_split_into_rounds_each_job_with_its_deletions(
    fleet: Any, make_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _six_volumes_four_expired_each(fleet)
    ctx = make_context(keep_newest=1, summary_mail=False)
    whole = run.plan(ctx)
    full = whole.intent
    assert full is not None and len(full["delete"]) == 6 * 4 and list(whole.later) == []
    budget = run._packed_size({**full, "jobs": full["jobs"][:2], "delete": full["delete"][:8]})
    monkeypatch.setattr(run, "INTENT_BUDGET", budget)
    split = run.plan(ctx)
    assert split.intent is not None
    rounds = [split.intent, *split.later]
    assert len(rounds) >= 3
    for n, intent in enumerate(rounds):
        assert intent["part"] == n and run._packed_size(intent) <= budget
        volumes = {v for job in intent["jobs"] for v in job["volume_ids"]}
        assert {d["volume_id"] for d in intent["delete"]} <= volumes, "a deletion without its volume's job"
        if n:  # said once, by the first round: the later ones carry only their work
            assert intent["checked"] == 0 and intent["notes"] == [] and intent["adopt"] is None
    assert [j for r in rounds for j in r["jobs"]] == full["jobs"], "every job once, in plan order"
    assert sorted(d["id"] for r in rounds for d in r["delete"]) == sorted(d["id"] for d in full["delete"])
    assert split.intent["later"] == {
        "rounds": len(rounds) - 1,
        "volumes": 6 - len(split.intent["jobs"]),
        "deletions": 24 - len(split.intent["delete"]),
        "copies": 0,
    }
    assert split.intent["deferred"] == {"deletions": 0, "volumes": 0, "copies": 0}


def test_a_round_takes_what_ec2_lets_it_do_in_its_time(fleet: Any, make_context: Any) -> None:
    """The rounds are cut by calls (one round's time at EC2's refill rate), not by item size."""
    _six_volumes_four_expired_each(fleet)
    intent = run.plan(make_context(keep_newest=1, summary_mail=False)).intent
    assert intent is not None
    head, later = run._rounds(dict(intent), first=5, each=10)  # a unit: 1 create, 4 deletions
    assert [len(r["jobs"]) for r in [head, *later]] == [1, 2, 2, 1]
    assert [len(r["delete"]) for r in [head, *later]] == [4, 8, 8, 4]
    assert run._capacity(880) == 4180  # a whole round: 880 s at 5 calls a second, less a twentieth


def test_what_one_item_cannot_hold_is_left_for_the_next_run_and_said(
    fleet: Any, make_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _six_volumes_four_expired_each(fleet)
    ctx = make_context(keep_newest=1, summary_mail=False)
    full = run.plan(ctx).intent
    assert full is not None
    # Room for the first round's own news and nothing else: no job with its 4 deletions fits.
    budget = run._packed_size({**full, "jobs": [], "delete": []}) + 10
    monkeypatch.setattr(run, "INTENT_BUDGET", budget)
    plan = run.plan(ctx)
    tiny = plan.intent
    assert tiny is not None and tiny["jobs"] == [] and tiny["delete"] == [] and list(plan.later) == []
    assert tiny["deferred"] == {"deletions": 24, "volumes": 6, "copies": 0}
    result = run.act(ctx, tiny)
    mail = report.mail(ctx, tiny, result)
    assert mail is not None and mail.severity == "warning" and "this run's list was full" in mail.body
    assert report.counts(tiny, result).extra["LeftForNextRun"] == 24 + 6
    assert run.rest(tiny, result) is None, "deferred work is planned again by the next run, not queued"


def test_the_rest_of_a_round_is_what_its_time_did_not_reach(
    fleet: Any, make_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Time up after the first job: the rest holds the other jobs with their volumes' deletions
    (held until their snapshot is made, not lost), the deletions not reached, nothing done."""
    _daily_backups(fleet, 3, 3)
    ctx = make_context(keep_newest=1, summary_mail=False)
    intent = run.plan(ctx).intent
    assert intent is not None and len(intent["jobs"]) == 3 and len(intent["delete"]) == 6
    calls = {"n": 0}

    def one_call_then_time_is_up(*_: Any) -> bool:
        calls["n"] += 1
        return calls["n"] <= 1

    monkeypatch.setattr(run, "_may_call", one_call_then_time_is_up)
    result = run.act(ctx, intent)
    assert len(result["created"]) == 1 and result["deleted"] == []
    rest = run.rest(intent, result)
    assert rest is not None and rest["jobs"] == intent["jobs"][1:]
    assert sorted(d["id"] for d in rest["delete"]) == sorted(d["id"] for d in intent["delete"])
    assert rest["checked"] == 0 and rest["notes"] == [] and rest["part"] == 0
    assert run.rest(intent, {**result, "dry_run": True}) is None
    second = intent["jobs"][1]["volume_ids"]
    failed = {**result, "create_failures": [{"job": 1, "volumes": second, "code": "X"}]}
    failed["jobs_left"] = [j for j in result["jobs_left"] if j["job"] != 1]
    dropped = run.rest(intent, failed)
    assert dropped is not None
    assert not {d["volume_id"] for d in dropped["delete"]} & set(intent["jobs"][1]["volume_ids"]), (
        "a volume whose snapshot failed keeps its snapshots: its deletions are not queued"
    )


def test_deletions_go_between_the_creates_and_never_before_their_volumes_new_snapshot(
    fleet: Any, make_context: Any, calls: CallRecorder
) -> None:
    """Each EC2 API has its own bucket: a volume's deletions are made right after its new
    snapshot (not after every create), and never before it."""
    _daily_backups(fleet, 4, 3)
    ctx = make_context(keep_newest=1, summary_mail=False)
    intent = run.plan(ctx).intent
    assert intent is not None
    volume_of = {d["id"]: d["volume_id"] for d in intent["delete"]}
    calls.calls.clear()
    result = run.act(ctx, intent)
    assert len(result["deleted"]) == 8
    order = [
        ("create", c.params["VolumeId"])
        if c.operation == "CreateSnapshot"
        else ("delete", volume_of[c.params["SnapshotId"]])
        for c in calls.calls
        if c.operation in ("CreateSnapshot", "DeleteSnapshot")
    ]
    snapshotted: set[str] = set()
    for kind, volume in order:
        if kind == "create":
            snapshotted.add(volume)
        else:
            assert volume in snapshotted, f"{volume}'s snapshot deleted before its new one was made"
    last_create = max(n for n, (kind, _) in enumerate(order) if kind == "create")
    assert any(kind == "delete" for kind, _ in order[:last_create]), "the deletions waited for every create"
