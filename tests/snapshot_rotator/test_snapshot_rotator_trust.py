"""What a backup tool must be, against moto: it cannot be fooled by a tag, it says when a backup
failed or stopped, a second run changes nothing, and a run killed between creating a snapshot
and recording it is finished by its retry. Each test below failed on the code before the
ledger (issue 16), where a ``ManagedBy`` tag was the proof of ownership."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from autopilot.recorder import CallRecorder
from snapshot_rotator import run, store

pytestmark = pytest.mark.integration

STACK = "ops-autopilot-test"
NOW = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
DAY = timedelta(days=1)
Rotate = Callable[..., Any]


def _daily(fleet: Any, volume: str, days: range, **kwargs: Any) -> list[str]:
    return [fleet.snapshot(volume, NOW - d * DAY, **kwargs) for d in days]


@pytest.fixture
def rotate(rotate: Rotate, fleet: Any) -> Rotate:
    """conftest's rotate, and then the snapshots it made started at the run's clock (moto
    stamps them with the real one, which is days after these runs)."""

    def rotation(now: datetime = NOW, **kwargs: Any) -> Any:
        before = set(fleet.backend.snapshots)
        done = rotate(now=now, **kwargs)
        fleet.backdate_new(before, now)
        return done

    return rotation


# --- a tag proves nothing ----------------------------------------------------------------


def test_a_hand_made_snapshot_tagged_managed_by_is_never_deleted(
    fleet: Any, rotate: Rotate, calls: CallRecorder
) -> None:
    vol = fleet.volume({"Backup": "true"})
    _daily(fleet, vol, range(1, 4))
    forged = fleet.snapshot(vol, NOW - 90 * DAY, recorded=False)  # ManagedBy=<stack>, by hand
    rotation = rotate(keep_newest=3)
    assert forged in fleet.snapshots(vol)
    assert forged not in {d.snapshot.id for d in rotation.planned_deletions}
    assert forged not in [p["SnapshotId"] for p in calls.of("ec2", "DeleteSnapshot")]


def test_seven_tagged_snapshots_of_bad_data_do_not_push_the_real_backups_out(
    fleet: Any, rotate: Rotate
) -> None:
    vol = fleet.volume({"Backup": "true"})
    real = _daily(fleet, vol, range(2, 9))  # seven real daily backups, 2-8 days old
    bad = [fleet.snapshot(vol, NOW - timedelta(hours=30 - h), recorded=False) for h in range(7)]
    rotation = rotate(keep_newest=7)
    left = set(fleet.snapshots(vol))
    assert set(real) <= left, "a real backup was deleted to make room for forged ones"
    assert set(bad) <= left, "a snapshot the stack did not create was deleted"
    assert rotation.deleted == []


def test_a_foreign_tagged_snapshot_does_not_satisfy_the_retry_guard(fleet: Any, rotate: Rotate) -> None:
    vol = fleet.volume({"Backup": "true"})
    _daily(fleet, vol, range(1, 3))
    fleet.snapshot(vol, NOW - timedelta(hours=1), recorded=False)  # "this period's backup"
    rotation = rotate()
    assert rotation.created == 1 and rotation.already_done == {}, "no backup was taken this period"


def test_a_recorded_snapshot_whose_tag_was_removed_is_kept_and_said_why(
    fleet: Any, rotate: Rotate, calls: CallRecorder
) -> None:
    vol = fleet.volume({"Backup": "true"})
    _daily(fleet, vol, range(1, 3))
    untagged = fleet.snapshot(vol, NOW - 60 * DAY)
    fleet.ec2.delete_tags(Resources=[untagged], Tags=[{"Key": "ManagedBy"}])
    calls.calls.clear()
    rotation = rotate(keep_newest=1)
    assert untagged in fleet.snapshots(vol)
    lookups = [p for p in calls.of("ec2", "DescribeSnapshots") if "snapshot-id" in str(p)]
    assert len(lookups) == 1, "the recorded snapshot missing from the tagged listing is looked up by id"
    assert untagged not in {d.snapshot.id for d in rotation.planned_deletions}
    assert untagged in fleet.ledger(), "its record is kept: it still exists"


def test_a_recorded_snapshot_deleted_by_hand_is_forgotten(fleet: Any, rotate: Rotate) -> None:
    vol = fleet.volume({"Backup": "true"})
    _daily(fleet, vol, range(1, 3))
    gone = fleet.snapshot(vol, NOW - 10 * DAY)
    fleet.ec2.delete_snapshot(SnapshotId=gone)
    rotate()
    assert gone not in fleet.ledger()


def test_copies_are_rotated_per_source_volume_not_pooled(fleet: Any, rotate: Rotate) -> None:
    """Copies carry VolumeId vol-ffffffff in EC2: here both volumes' copies share one VolumeId,
    and the ledger's source volume keeps them apart (on main only the newest 3 of all survived)."""
    holder = fleet.volume()  # plays vol-ffffffff
    a, b = fleet.volume({"Backup": "true"}), fleet.volume({"Backup": "true"})
    copies = {
        src: [fleet.snapshot(holder, NOW - (d + 0.5 * n) * DAY, source=src) for d in range(1, 4)]
        for n, src in enumerate((a, b))
    }
    rotation = rotate(keep_newest=3)
    left = set(fleet.snapshots(holder))
    assert set(copies[a]) | set(copies[b]) <= left and rotation.planned_deletions == []


# --- failed, stale and ended backups are said, once ----------------------------------------


def test_snapshots_ending_in_error_are_a_critical_mail_once_then_deleted(
    fleet: Any, rotate: Rotate, calls: CallRecorder
) -> None:
    vol = fleet.volume({"Backup": "true", "Name": "db"})
    _daily(fleet, vol, range(6, 9))
    failed = _daily(fleet, vol, range(1, 6), state="error")  # five days of backups ending in error
    first = rotate(keep_newest=3, summary_mail=False)
    mail = first.mail
    assert mail is not None and mail.severity == "critical"
    assert mail.subject == f"[{STACK}] Backup FAILED for 1 volume (1 created, 0 deleted)"
    assert all(s in mail.body for s in failed) and "ERROR" in mail.body
    assert first.metrics["Failed"] == 5
    assert set(failed) <= set(fleet.snapshots(vol)), "a failed backup was deleted before any mail said so"
    assert all(fleet.ledger()[s].failed_reported for s in failed)
    calls.calls.clear()
    second = rotate(now=NOW + DAY, keep_newest=3, summary_mail=False)
    assert not set(failed) & set(fleet.snapshots(vol)), "reported failed snapshots are deleted next"
    assert second.metrics["Failed"] == 0 and second.mail is None, "the same failure was mailed twice"


def test_a_second_run_after_the_new_snapshots_completed_changes_nothing(
    fleet: Any, rotate: Rotate, calls: CallRecorder
) -> None:
    """On main: 3 more DeleteSnapshot calls and a second digest."""
    vols = [fleet.volume({"Backup": "true"}) for _ in range(3)]
    for vol in vols:
        _daily(fleet, vol, range(1, 6))
    first = rotate(keep_newest=3, summary_mail=True)
    assert first.created == 3 and first.mail is not None
    # moto completes the new snapshots at once, as AWS does within minutes to hours
    calls.calls.clear()
    second = rotate(now=NOW + timedelta(hours=2), keep_newest=3, summary_mail=True)
    assert calls.count("ec2", "DeleteSnapshot") == 0 and calls.count("ec2", "CreateSnapshot") == 0
    assert second.mail is None and second.plan.intent is None
    third = rotate(now=NOW + DAY, keep_newest=3, summary_mail=False)
    assert third.created == 3 and len(third.deleted) == 3, "the next period's run does the retention"


def test_a_stale_volume_is_mailed_once_and_alarmed_until_a_backup_completes(
    fleet: Any, rotate: Rotate
) -> None:
    vol = fleet.volume({"Backup": "true"})
    _daily(fleet, vol, range(3, 6))  # newest completed backup 3 days old: two periods missed
    first = rotate(summary_mail=False)
    assert first.metrics["StaleBackups"] == 1
    mail = first.mail
    assert mail is not None and mail.severity == "warning" and "Stale" in mail.body and vol in mail.body
    assert mail.subject == f"[{STACK}] Backups need a look: 1 volume stale (1 created, 0 deleted)"
    assert fleet.notes()[vol].stale_since
    new = [s for s, snap in fleet.snapshots(vol).items() if snap["StartTime"] > NOW - DAY]
    for snap_id in new:
        fleet.set(snap_id, NOW, "pending")  # still pending the next day
    second = rotate(now=NOW + DAY, summary_mail=False)
    assert second.metrics["StaleBackups"] == 1 and second.mail is None, "stale was mailed twice"
    for snap_id in fleet.snapshots(vol):
        if fleet.backend.snapshots[snap_id].status == "pending":
            fleet.set(snap_id, state="completed")
    third = rotate(now=NOW + 2 * DAY, summary_mail=False)
    assert third.metrics["StaleBackups"] == 0
    assert vol not in fleet.notes(), "the stale note stays after a backup completed"


def test_backups_that_end_are_mailed_once(fleet: Any, rotate: Rotate) -> None:
    untagged = fleet.volume({"Backup": "true", "Name": "was-backed-up"})
    deleted = fleet.volume({"Backup": "true"})
    for vol in (untagged, deleted):
        _daily(fleet, vol, range(1, 4))
    fleet.ec2.delete_tags(Resources=[untagged], Tags=[{"Key": "Backup"}])
    fleet.ec2.delete_volume(VolumeId=deleted)
    first = rotate(summary_mail=False)
    mail = first.mail
    assert mail is not None and mail.severity == "warning"
    assert "Backups ended" in mail.body
    said = f"volume {untagged}: neither it nor its instance is tagged Backup any more; 3 snapshots kept"
    assert said in mail.body
    assert f"volume {deleted}: the volume no longer exists" in mail.body
    assert len(fleet.snapshots(untagged)) == 3, "the ended volume's backups are kept"
    second = rotate(now=NOW + DAY, summary_mail=False)
    assert second.mail is None, "an ended backup was mailed twice"
    fleet.ec2.create_tags(Resources=[untagged], Tags=[{"Key": "Backup", "Value": "true"}])
    rotate(now=NOW + 2 * DAY, summary_mail=False)
    assert not fleet.notes().get(untagged, store.Note(untagged)).ended, "opted in again: note cleared"


# --- policies --------------------------------------------------------------------------


def test_backup_names_a_policy_and_a_typo_is_said_not_guessed(fleet: Any, rotate: Rotate) -> None:
    gold = fleet.volume({"Backup": "Gold"})
    plain = fleet.volume({"Backup": "true"})
    typo = fleet.volume({"Backup": "glod"})
    for vol in (gold, plain):
        _daily(fleet, vol, range(1, 9), policy="gold" if vol == gold else "default")
    rotation = rotate(keep_newest=2, policies="gold: newest=6 yearly=2", summary_mail=False)
    assert len(fleet.snapshots(gold)) == 6 + 1 and len(fleet.snapshots(plain)) == 2 + 1
    assert fleet.snapshots(typo) == {}
    new_gold = [s for s in fleet.snapshots(gold) if fleet.ledger()[s].run != "history"]
    assert [fleet.ledger()[s].policy for s in new_gold] == ["gold"]
    mail = rotation.mail
    assert mail is not None and f"- {typo}: Backup=glod" in mail.body
    assert rotate(now=NOW + DAY, keep_newest=2, policies="gold: newest=6", summary_mail=False).mail is None


# --- a run killed between creating and recording ------------------------------------------


class Killed(Exception):
    pass


def test_a_snapshot_made_but_not_recorded_before_the_kill_is_adopted_by_the_retry(
    fleet: Any, make_context: Any, calls: CallRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    vol = fleet.volume({"Backup": "true"})
    _daily(fleet, vol, range(1, 4))
    ctx = make_context(keep_newest=3)
    plan = run.plan(ctx)
    assert plan.intent is not None
    real_write = store.write

    def die(*_: Any, **__: Any) -> None:
        raise Killed

    monkeypatch.setattr(store, "write", die)
    with pytest.raises(Killed):
        run.act(ctx, plan.intent)
    monkeypatch.setattr(store, "write", real_write)
    (made,) = [s for s in fleet.snapshots(vol) if s not in fleet.ledger()]
    calls.calls.clear()
    result = run.act(make_context(keep_newest=3, resumed=True), plan.intent)
    assert calls.count("ec2", "CreateSnapshot") == 0, "the volume was snapshotted twice"
    assert made in fleet.ledger() and result["created"][0]["earlier"]


def test_a_copied_description_makes_the_retry_adopt_nothing(
    fleet: Any, make_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    vol = fleet.volume({"Backup": "true"})
    ctx = make_context()
    plan = run.plan(ctx)
    assert plan.intent is not None
    monkeypatch.setattr(store, "write", lambda *_a, **_k: (_ for _ in ()).throw(Killed()))
    with pytest.raises(Killed):
        run.act(ctx, plan.intent)
    monkeypatch.undo()
    copycat = fleet.ec2.create_snapshot(
        VolumeId=vol,
        Description=plan.intent["jobs"][0]["description"],
        TagSpecifications=[{"ResourceType": "snapshot", "Tags": [{"Key": "ManagedBy", "Value": STACK}]}],
    )["SnapshotId"]
    run.act(make_context(resumed=True), plan.intent)
    assert copycat not in fleet.ledger() and fleet.ledger() == {}, "a snapshot was adopted on a guess"
    assert len(fleet.snapshots(vol)) == 2, "nothing was created again, nothing deleted"


# --- upgrading: the snapshots made before the ledger ---------------------------------------


def test_the_first_run_adopts_what_the_stack_made_before_the_ledger_and_nothing_newer(
    fleet: Any, rotate: Rotate, calls: CallRecorder
) -> None:
    """An upgrade: the stack's earlier snapshots are only tagged. Those started before the
    ledger table was created, with the Description the stack always wrote, are adopted (once:
    DescribeTable on the first run only); a tagged one started after it is not."""
    import boto3

    boto3.client("dynamodb", region_name="eu-west-1").delete_item(
        TableName="ops-autopilot-test-ledger", Key={"pk": {"S": "ledger"}, "sk": {"S": "meta#since"}}
    )
    vol = fleet.volume({"Backup": "true", "Name": "db"})
    old = []
    for day in range(1, 6):
        snap = fleet.ec2.create_snapshot(
            VolumeId=vol,
            Description=f"{STACK}: backup of volume {vol} _db_",
            TagSpecifications=[{"ResourceType": "snapshot", "Tags": [{"Key": "ManagedBy", "Value": STACK}]}],
        )["SnapshotId"]
        fleet.set(snap, NOW - day * DAY)
        old.append(snap)
    other = fleet.snapshot(vol, NOW - 9 * DAY, recorded=False)  # tagged, another description
    after = fleet.ec2.create_snapshot(
        VolumeId=vol,
        Description=f"{STACK}: backup of volume {vol} _db_",
        TagSpecifications=[{"ResourceType": "snapshot", "Tags": [{"Key": "ManagedBy", "Value": STACK}]}],
    )["SnapshotId"]
    fleet.set(after, datetime.now(UTC) + timedelta(hours=1))  # after the table was created
    first = rotate(keep_newest=3, summary_mail=False)
    assert calls.count("dynamodb", "DescribeTable") == 1
    assert set(old) - {d.snapshot.id for d in first.deleted} <= set(fleet.ledger())
    assert {d.snapshot.id for d in first.deleted} == set(old[3:]), "the adopted ones are rotated"
    assert other in fleet.snapshots(vol) and other not in fleet.ledger()
    assert after in fleet.snapshots(vol) and after not in fleet.ledger()
    calls.calls.clear()
    rotate(now=NOW + DAY, keep_newest=3, summary_mail=False)
    assert calls.count("dynamodb", "DescribeTable") == 0, "the adoption ran twice"
