"""The scale simulation of bench/snapshot_rotator_scale.py at a test's size: the real plan, act,
pacing and rounds against an in-memory EC2 and ledger on a simulated clock. 2,000 volumes need
two rounds on the first day (8,000 mutating calls: 1,600 s at EC2's refill), one a day after.
``python -m bench.snapshot_rotator_scale 10000 7`` is the week at 10,000 volumes
(docs/benchmarks-snapshot-scale.md)."""

from __future__ import annotations

import math

import pytest

from bench.snapshot_rotator_scale import KEEP, PER_VOLUME, simulate

pytestmark = pytest.mark.unit

VOLUMES = 2000


def test_two_thousand_volumes_keep_up_at_the_refill_rate_with_no_backlog() -> None:
    days = simulate(VOLUMES, 2)
    first, second = days
    assert first.rounds == 2 and second.rounds == 1
    assert first.created == second.created == VOLUMES
    assert first.deleted == VOLUMES * (PER_VOLUME - KEEP) and second.deleted == VOLUMES
    for day in days:
        assert day.backlog_volumes == 0 and day.backlog_expired == 0, day
        assert day.calls["ec2.CreateSnapshot"] == day.created, "a create was made twice, or refused"
        assert day.calls["ec2.DeleteSnapshot"] == day.deleted
        assert day.refused == 0, "faster than EC2's bucket refills: those calls would be throttled"
        assert day.ratio <= 1.1, f"day {day.day}: {day.seconds:.0f} s against the refill's {day.limit:.0f} s"
        # the ledger: 25 records a call, plus at most one part-filled call per round and kind
        least = math.ceil(day.created / 25) + math.ceil(day.deleted / 25)
        assert least <= day.calls["dynamodb.BatchWriteItem"] <= least + 2 * day.rounds
