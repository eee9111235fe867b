"""The scale simulation of bench/snapshot_rotator_scale.py at a test's size: the real plan, act,
pacing and rounds against an in-memory EC2 and ledger on a simulated clock. 5,000 volumes need
four rounds on the first day (15,000 deletions: 3,000 s at DeleteSnapshot's refill, the creates
going between them), two a day after - enough rounds that a pacer assuming a bucket the last
round emptied seconds ago was full would be refused by EC2. ``python -m
bench.snapshot_rotator_scale 10000 7`` is the week at 10,000 volumes
(docs/benchmarks-snapshot-scale.md)."""

from __future__ import annotations

import math

import pytest

from bench.snapshot_rotator_scale import KEEP, PER_VOLUME, simulate

pytestmark = pytest.mark.unit

VOLUMES = 5000


def test_two_thousand_volumes_keep_up_at_the_refill_rate_with_no_backlog() -> None:
    days = simulate(VOLUMES, 2)
    first, second = days
    assert first.rounds == 4 and second.rounds == 2  # 15,000 and 5,000 deletions, ~4,000 a round
    assert first.created == second.created == VOLUMES
    assert first.deleted == VOLUMES * (PER_VOLUME - KEEP) and second.deleted == VOLUMES
    for day in days:
        assert day.backlog_volumes == 0 and day.backlog_expired == 0, day
        assert day.calls["ec2.CreateSnapshot"] == day.created, "a create was made twice, or refused"
        assert day.calls["ec2.DeleteSnapshot"] == day.deleted
        assert day.refused == 0, "faster than EC2's bucket refills: those calls would be throttled"
        assert day.ratio <= 1.1, f"day {day.day}: {day.seconds:.0f} s against the refill's {day.limit:.0f} s"
        # The rounds take the scheduled run's queued plan: the snapshots are listed once a day.
        assert (
            day.calls["ec2.DescribeSnapshots"]
            == day.listing_minimum
            == math.ceil(VOLUMES * (PER_VOLUME if day.day == 1 else KEEP + 1) / 1000)
        )
        records = VOLUMES * (PER_VOLUME if day.day == 1 else KEEP + 1)  # the sim: 150 bytes a record
        read_once = math.ceil(records * 150 / 1_000_000)
        assert day.calls["dynamodb.Query"] == read_once, "the ledger was read more than once"
        # the ledger: 25 writes a call (records and removals together), each round's in it
        assert day.calls["dynamodb.BatchWriteItem"] == day.writes_minimum
        assert day.writes_minimum <= math.ceil((day.created + day.deleted) / 25) + day.rounds
