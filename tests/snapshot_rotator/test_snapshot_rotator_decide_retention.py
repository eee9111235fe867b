"""The retention plan (decide/retention.py): table-driven rules and hypothesis properties for
PRODUCT.md safety rule 1, the holds applied after acting, the deleter's refusal rules and the
intent's JSON form."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapshot_rotator.decide.retention import (
    COMPLETED,
    ERROR,
    PENDING,
    Decision,
    Reason,
    RetentionPolicy,
    Snapshot,
    plan_retention,
    refusal,
    with_holds,
)

pytestmark = pytest.mark.unit

STACK = "ops-autopilot-test"
NOW = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
OURS = {"ManagedBy": STACK}


def snap(
    sid: str,
    days_ago: float,
    *,
    volume: str = "vol-1",
    state: str = COMPLETED,
    tags: dict[str, str] | None = None,
    ami: bool = False,
    recorded: bool | None = None,
    reported: bool = False,
) -> Snapshot:
    """A snapshot; by default one of this stack (tagged and in its ledger). With explicit
    ``tags`` it is in the ledger only when ``recorded`` says so."""
    return Snapshot(
        id=sid,
        volume_id=volume,
        start_time=NOW - timedelta(days=days_ago),
        state=state,
        tags=OURS if tags is None else tags,
        used_by_ami=ami,
        recorded=(tags is None) if recorded is None else recorded,
        failed_reported=reported,
    )


def plan(snaps: list[Snapshot], policy: RetentionPolicy, held: set[str] | None = None) -> dict[str, Reason]:
    decisions = plan_retention(snaps, stack_name=STACK, policy=policy, now=NOW, held_volumes=held or set())
    return {d.snapshot.id: d.reason for d in decisions}


def daily(n: int, volume: str = "vol-1", prefix: str = "s") -> list[Snapshot]:
    return [snap(f"{prefix}{i:03d}", i + 0.1, volume=volume) for i in range(n)]


# --- table-driven rules -------------------------------------------------------------------


def test_keeps_newest_n_and_deletes_the_rest() -> None:
    reasons = plan(daily(10), RetentionPolicy(keep_newest=7))
    assert [reasons[f"s{i:03d}"] for i in range(7)] == [Reason.NEWEST] * 7
    assert [reasons[f"s{i:03d}"] for i in range(7, 10)] == [Reason.EXPIRED] * 3


def test_keep_days_keeps_everything_younger() -> None:
    reasons = plan(daily(20), RetentionPolicy(keep_newest=2, keep_days=10))
    assert {sid for sid, r in reasons.items() if r.deletes} == {f"s{i:03d}" for i in range(10, 20)}
    assert reasons["s005"] is Reason.YOUNG


def test_gfs_daily_weekly_monthly() -> None:
    # One snapshot a day for 120 days (s000 today, Monday 2026-11-23; s<i> i days ago): keep the
    # newest 1, 7 daily, 4 weekly, 3 monthly. Each snapshot is kept by the first rule that keeps it.
    reasons = plan(daily(120), RetentionPolicy(keep_newest=1, keep_daily=7, keep_weekly=4, keep_monthly=3))
    kept = {sid: r for sid, r in reasons.items() if not r.deletes}
    assert kept == {
        "s000": Reason.NEWEST,  # also the newest of its day, of ISO week 48 and of November
        **{f"s{i:03d}": Reason.DAILY for i in range(1, 7)},  # s001 is also week 47's newest
        "s008": Reason.WEEKLY,  # Sunday 2026-11-15, the newest of ISO week 46
        "s015": Reason.WEEKLY,  # Sunday 2026-11-08, week 45
        "s023": Reason.MONTHLY,  # 2026-10-31
        "s054": Reason.MONTHLY,  # 2026-09-30
    }
    assert len(reasons) == 120 and all(r is Reason.EXPIRED for r in reasons.values() if r.deletes)


def test_unmanaged_and_other_stacks_are_never_touched() -> None:
    snaps = [
        snap("mine", 100),
        snap("theirs", 100, tags={"ManagedBy": "other-stack"}),
        snap("nobody", 100, tags={}),
        snap("forged", 100, tags=OURS, recorded=False),  # our tag, not in our ledger
        snap("untagged", 100, tags={}, recorded=True),  # ours, but someone removed the tag
        snap("newest", 0.5),
    ]
    reasons = plan(snaps, RetentionPolicy(keep_newest=1))
    assert reasons == {
        "mine": Reason.EXPIRED,
        "theirs": Reason.UNMANAGED,
        "nobody": Reason.UNMANAGED,
        "forged": Reason.UNMANAGED,
        "untagged": Reason.UNTAGGED,
        "newest": Reason.NEWEST,
    }


def test_forged_snapshots_neither_count_nor_push_real_backups_out() -> None:
    """Seven hand-made snapshots tagged ManagedBy=<stack>, newer than the real backups: on main
    they were the newest seven and every real backup was deleted."""
    real = daily(7)
    forged = [snap(f"f{i}", i * 0.01, tags=OURS, recorded=False) for i in range(7)]
    reasons = plan(real + forged, RetentionPolicy(keep_newest=7))
    assert {sid: r for sid, r in reasons.items() if sid.startswith("s")} == dict.fromkeys(
        (s.id for s in real), Reason.NEWEST
    )
    assert {reasons[f.id] for f in forged} == {Reason.UNMANAGED}


def test_copies_are_rotated_with_the_volume_they_copy() -> None:
    """Copies carry VolumeId vol-ffffffff; the ledger's source volume groups them, so copies of
    two volumes do not compete for one volume's places."""
    copies = [snap(f"a{i}", i + 0.1, volume="vol-a") for i in range(3)]
    copies += [snap(f"b{i}", i + 0.2, volume="vol-b") for i in range(3)]
    reasons = plan(copies, RetentionPolicy(keep_newest=3))
    assert set(reasons.values()) == {Reason.NEWEST}


def test_ami_snapshot_past_retention_is_kept_and_reported_as_skipped() -> None:
    reasons = plan(
        [snap("new", 1), snap("ami", 50, ami=True), snap("old", 51)], RetentionPolicy(keep_newest=1)
    )
    assert reasons["ami"] is Reason.AMI and reasons["ami"].skipped
    assert reasons["old"] is Reason.EXPIRED


def test_pending_is_neither_counted_nor_deleted() -> None:
    snaps = [snap("p", 0.01, state=PENDING), snap("c1", 1), snap("c2", 2)]
    reasons = plan(snaps, RetentionPolicy(keep_newest=1))
    # The pending one does not count as the newest backup: c1 is kept as the newest completed.
    assert reasons == {"p": Reason.PENDING, "c1": Reason.NEWEST, "c2": Reason.EXPIRED}


def test_volume_whose_new_snapshot_failed_keeps_everything() -> None:
    reasons = plan(
        daily(10) + daily(10, volume="vol-2", prefix="t"), RetentionPolicy(keep_newest=3), {"vol-1"}
    )
    assert not any(r.deletes for sid, r in reasons.items() if sid.startswith("s"))
    assert sum(r is Reason.HELD for r in reasons.values()) == 7
    assert sum(r.deletes for sid, r in reasons.items() if sid.startswith("t")) == 7


def test_error_state_snapshots_are_not_backups_and_go_once_a_mail_said_so() -> None:
    snaps = [
        snap("bad", 0.2, state=ERROR),
        snap("good", 1),
        snap("bad-old", 9, state=ERROR, reported=True),
    ]
    reasons = plan(snaps, RetentionPolicy(keep_newest=1))
    assert reasons == {
        "bad": Reason.FAILED_NEW,  # not yet in a mail: kept, so it can be reported
        "good": Reason.NEWEST,
        "bad-old": Reason.FAILED_SNAPSHOT,
    }
    # ... and the minimum age applies to them as well (time to look at what went wrong)
    reasons = plan(snaps, RetentionPolicy(keep_newest=1, keep_days=3))
    assert reasons == {"bad": Reason.YOUNG, "good": Reason.NEWEST, "bad-old": Reason.FAILED_SNAPSHOT}


def test_a_backup_of_this_period_counts_only_from_the_next_period_on() -> None:
    """A retry, or a second run in the same period, decides what the first did: on main it
    deleted the snapshot that the first run's new backup, completed by then, pushed out."""
    first = plan_retention(
        [snap(f"s{i}", i + 1.1) for i in range(4)],
        stack_name=STACK,
        policy=RetentionPolicy(keep_newest=3),
        now=NOW,
    )
    assert [d.reason for d in first] == [Reason.NEWEST] * 3 + [Reason.EXPIRED]
    new = snap("new", 0.05)  # the first run's snapshot, completed an hour later
    second = plan_retention(
        [new, *(snap(f"s{i}", i + 1.1) for i in range(3))],
        stack_name=STACK,
        policy=RetentionPolicy(keep_newest=3),
        now=NOW,
        fresh_since=NOW - timedelta(hours=12),
    )
    assert [d.reason for d in second] == [Reason.FRESH] + [Reason.NEWEST] * 3


def test_a_volume_follows_the_policy_of_its_newest_snapshot() -> None:
    gold = RetentionPolicy(keep_newest=5)
    old = [snap(f"s{i}", i + 1.1) for i in range(6)]
    newest = replace(snap("new", 0.1), policy="gold")
    default = RetentionPolicy(keep_newest=1)
    named = {"gold": gold}
    reasons = plan_retention([newest, *old], stack_name=STACK, policy=default, policies=named, now=NOW)
    assert sum(d.reason is Reason.NEWEST for d in reasons) == 5
    gone = plan_retention([replace(newest, policy="retired"), *old], stack_name=STACK, policy=gold, now=NOW)
    assert {d.reason for d in gone} == {Reason.NO_POLICY} and not any(d.delete for d in gone)


def test_policy_refuses_to_keep_zero() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RetentionPolicy(keep_newest=0)


# --- properties ---------------------------------------------------------------------------

VOLUMES = ["vol-a", "vol-b", "vol-c"]


@st.composite
def histories(draw: st.DrawFn) -> list[Snapshot]:
    count = draw(st.integers(min_value=0, max_value=40))
    snaps = []
    for i in range(count):
        owner = draw(st.sampled_from([STACK, STACK, STACK, "other-stack", None]))
        snaps.append(
            Snapshot(
                id=f"snap-{i:04d}",
                volume_id=draw(st.sampled_from(VOLUMES)),
                # minutes, so that several snapshots may share a day, or even a start time
                start_time=NOW - timedelta(minutes=draw(st.integers(min_value=-60, max_value=60 * 24 * 400))),
                state=draw(st.sampled_from([COMPLETED, COMPLETED, COMPLETED, PENDING, ERROR, "recoverable"])),
                tags={"ManagedBy": owner} if owner else {"Name": "x"},
                used_by_ami=draw(st.booleans()),
                # mostly the ledger agrees with the tag; sometimes a forgery, or a removed tag
                recorded=draw(st.sampled_from([owner == STACK] * 3 + [True, False])),
                failed_reported=draw(st.booleans()),
            )
        )
    return snaps


policies = st.builds(
    RetentionPolicy,
    keep_newest=st.integers(min_value=1, max_value=10),
    keep_days=st.integers(min_value=0, max_value=60),
    keep_daily=st.integers(min_value=0, max_value=14),
    keep_weekly=st.integers(min_value=0, max_value=8),
    keep_monthly=st.integers(min_value=0, max_value=12),
)
held_sets = st.sets(st.sampled_from(VOLUMES))


@settings(max_examples=400, deadline=None)
@given(histories(), policies, held_sets, st.one_of(st.none(), st.integers(0, 60 * 24 * 30)))
def test_property_safety_rule_1(
    snaps: list[Snapshot], policy: RetentionPolicy, held: set[str], fresh_minutes: int | None
) -> None:
    fresh = None if fresh_minutes is None else NOW - timedelta(minutes=fresh_minutes)
    decisions = plan_retention(
        snaps, stack_name=STACK, policy=policy, now=NOW, held_volumes=held, fresh_since=fresh
    )
    # one decision per snapshot
    assert sorted(d.snapshot.id for d in decisions) == sorted(s.id for s in snaps)
    deleted = [d.snapshot for d in decisions if d.delete]
    for s in deleted:
        assert s.recorded, "deleted a snapshot this stack has no record of creating"
        assert s.tags.get("ManagedBy") == STACK, "deleted an untagged snapshot (IAM would refuse)"
        assert s.state != ERROR or s.failed_reported, "deleted a failed backup before any mail said so"
        assert fresh is None or s.start_time < fresh or s.state == ERROR, "deleted this period's backup"
        assert not s.used_by_ami, "deleted a snapshot an AMI uses"
        assert s.state != PENDING, "deleted a pending snapshot"
        assert s.state in (COMPLETED, ERROR)
        assert s.volume_id not in held, "deleted for a volume whose new snapshot failed"
        if policy.keep_days:
            assert s.start_time <= NOW - timedelta(days=policy.keep_days), "deleted a young snapshot"
    # the newest N completed managed snapshots of every volume are kept
    deleted_ids = {s.id for s in deleted}
    for volume in VOLUMES:
        ours = [s for s in snaps if s.volume_id == volume and s.recorded and s.tags.get("ManagedBy") == STACK]
        completed = sorted(
            (s for s in ours if s.state == COMPLETED), key=lambda s: (s.start_time, s.id), reverse=True
        )
        assert not {s.id for s in completed[: policy.keep_newest]} & deleted_ids
        kept_completed = [s for s in completed if s.id not in deleted_ids]
        assert len(kept_completed) >= min(policy.keep_newest, len(completed))


@settings(max_examples=300, deadline=None)
@given(histories(), policies)
def test_property_second_run_deletes_nothing_more(snaps: list[Snapshot], policy: RetentionPolicy) -> None:
    first = plan_retention(snaps, stack_name=STACK, policy=policy, now=NOW)
    remaining = [d.snapshot for d in first if not d.delete]
    second = plan_retention(remaining, stack_name=STACK, policy=policy, now=NOW)
    assert not [d.snapshot.id for d in second if d.delete]


@settings(max_examples=300, deadline=None)
@given(histories(), policies, st.integers(min_value=1, max_value=5))
def test_property_a_stricter_policy_never_deletes_more(
    snaps: list[Snapshot], policy: RetentionPolicy, extra: int
) -> None:
    loose = RetentionPolicy(
        keep_newest=policy.keep_newest + extra,
        keep_days=policy.keep_days,
        keep_daily=policy.keep_daily,
        keep_weekly=policy.keep_weekly,
        keep_monthly=policy.keep_monthly,
    )
    base = {
        d.snapshot.id for d in plan_retention(snaps, stack_name=STACK, policy=policy, now=NOW) if d.delete
    }
    more = {d.snapshot.id for d in plan_retention(snaps, stack_name=STACK, policy=loose, now=NOW) if d.delete}
    assert more <= base


@settings(max_examples=300, deadline=None)
@given(histories(), policies, held_sets)
def test_property_holds_after_acting_decide_like_holds_known_before(
    snaps: list[Snapshot], policy: RetentionPolicy, held: set[str]
) -> None:
    """The run decides before it knows which creations fail (plan) and applies the holds after
    (act): the outcome must be exactly that of deciding with the holds known."""
    before = plan_retention(snaps, stack_name=STACK, policy=policy, now=NOW)
    after = with_holds(before, held)
    known = plan_retention(snaps, stack_name=STACK, policy=policy, now=NOW, held_volumes=held)
    assert {d.snapshot.id: d.reason for d in after} == {d.snapshot.id: d.reason for d in known}


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(histories(), policies)
def test_property_the_deleter_refuses_nothing_the_plan_deletes_and_everything_it_keeps(
    snaps: list[Snapshot], policy: RetentionPolicy
) -> None:
    for decision in plan_retention(snaps, stack_name=STACK, policy=policy, now=NOW):
        assert (refusal(decision, STACK) is None) == decision.delete, decision


def test_refusal_names_each_broken_rule() -> None:
    expired = snap("s", 30)
    assert refusal(Decision(expired, Reason.EXPIRED), STACK) is None
    assert refusal(Decision(expired, Reason.NEWEST), STACK) == f"kept: {Reason.NEWEST.value}"
    assert refusal(Decision(snap("s", 30, tags={}), Reason.EXPIRED), STACK) == Reason.UNMANAGED.value
    forged = snap("s", 30, tags=OURS, recorded=False)
    assert refusal(Decision(forged, Reason.EXPIRED), STACK) == Reason.UNMANAGED.value
    untagged = snap("s", 30, tags={}, recorded=True)
    assert refusal(Decision(untagged, Reason.EXPIRED), STACK) == Reason.UNTAGGED.value
    failed = snap("s", 30, state=ERROR)
    assert refusal(Decision(failed, Reason.FAILED_SNAPSHOT), STACK) == Reason.FAILED_NEW.value
    assert refusal(Decision(replace(failed, failed_reported=True), Reason.FAILED_SNAPSHOT), STACK) is None
    assert refusal(Decision(snap("s", 30, ami=True), Reason.EXPIRED), STACK) == Reason.AMI.value
    assert "pending" in str(refusal(Decision(snap("s", 30, state=PENDING), Reason.EXPIRED), STACK))


def test_a_decision_survives_the_intent_as_json() -> None:
    decision = Decision(
        snap("s", 3, tags={**OURS, "Name": "n", "Owner": "o", "Cost": "x"}, ami=True), Reason.AMI
    )
    data = decision.as_json({"ManagedBy", "Name", "Owner"})
    again = Decision.from_json(json.loads(json.dumps(data)))
    assert again.reason is Reason.AMI and again.snapshot.start_time == decision.snapshot.start_time
    assert again.snapshot.tags == {**OURS, "Name": "n", "Owner": "o"}  # only the tags the run needs
    assert again.snapshot.used_by_ami


@settings(max_examples=300, deadline=None)
@given(histories(), policies)
def test_property_a_second_run_after_the_new_backups_completed_deletes_nothing_more(
    snaps: list[Snapshot], policy: RetentionPolicy
) -> None:
    """Run 1 makes a new (pending) backup of every volume and deletes what is expired; the new
    backups complete; a retry or second run an hour later, in the same period, deletes nothing."""
    window = timedelta(hours=12)
    old = [s for s in snaps if s.start_time < NOW - window]
    new = [snap(f"new-{v}", 0.0, volume=v, state=PENDING) for v in VOLUMES]
    first = plan_retention([*old, *new], stack_name=STACK, policy=policy, now=NOW, fresh_since=NOW - window)
    left = [d.snapshot for d in first if not d.delete]
    completed = [replace(s, state=COMPLETED) if s.id.startswith("new-") else s for s in left]
    later = NOW + timedelta(hours=1)
    second = plan_retention(completed, stack_name=STACK, policy=policy, now=later, fresh_since=later - window)
    assert [d.snapshot.id for d in second if d.delete] == []
