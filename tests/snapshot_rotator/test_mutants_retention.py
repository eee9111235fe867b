"""snapshot_rotator.decide.retention (safety rule 1) where `make mutate` (tools/mutate.py) found
behaviour no test pinned down: each test names the mutants it kills (mutmut's names;
docs/mutation-survivors.md lists the survivors explained instead). Pure decisions, no AWS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from snapshot_rotator.decide.retention import Reason, RetentionPolicy, Snapshot, plan_retention

pytestmark = pytest.mark.unit

NOW = datetime(2024, 5, 14, 9, 17, tzinfo=UTC)
STACK = "ops-autopilot"


def ours(snap_id: str, started: datetime) -> Snapshot:
    return Snapshot(snap_id, "vol-1", started, "completed", tags={"ManagedBy": STACK}, recorded=True)


def reasons(snapshots: list[Snapshot], policy: RetentionPolicy) -> dict[str, Reason]:
    return {
        d.snapshot.id: d.reason for d in plan_retention(snapshots, stack_name=STACK, policy=policy, now=NOW)
    }


def test_a_one_day_minimum_age_keeps_every_snapshot_of_the_last_day() -> None:
    # x__retained__mutmut_7 (keep_days > 1: a one-day minimum age was off, and the snapshot of
    # an hour ago was deleted).
    snapshots = [ours("snap-1h", NOW - timedelta(hours=1)), ours("snap-2h", NOW - timedelta(hours=2))]
    assert reasons(snapshots, RetentionPolicy(keep_newest=1, keep_days=1)) == {
        "snap-1h": Reason.NEWEST,
        "snap-2h": Reason.YOUNG,
    }


def test_no_minimum_age_keeps_nothing_for_its_age_not_even_a_snapshot_dated_after_the_clock() -> None:
    # x__retained__mutmut_6 (keep_days >= 0: with the age rule off, a snapshot whose start lies
    # after the clock's now - EC2's clock a little ahead of Lambda's - was kept as young).
    snapshots = [
        ours("snap-ahead-2m", NOW + timedelta(minutes=2)),
        ours("snap-ahead-1m", NOW + timedelta(minutes=1)),
    ]
    assert reasons(snapshots, RetentionPolicy(keep_newest=1, keep_days=0)) == {
        "snap-ahead-2m": Reason.NEWEST,
        "snap-ahead-1m": Reason.EXPIRED,
    }
