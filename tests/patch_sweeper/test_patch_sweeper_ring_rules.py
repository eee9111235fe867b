"""The ring rules as invariants (hypothesis): whatever the record and the clock, a next ring
starts only from a ring that passed (soaking) and only once its soak time is over by the clock;
a ring below the threshold never lets the next one start; every target is in exactly one ring."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patch_sweeper.decide import Instance, RingInfo, SweepRecord, assign_rings, on_tick, ring_verdict

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
STATUSES = st.sampled_from(["running", "soaking", "halted", "done"])


@given(
    status=STATUSES,
    soak_minutes=st.integers(0, 3000),
    elapsed_minutes=st.integers(-60, 6000),
    pending=st.booleans(),
    timeout_hours=st.integers(1, 168),
)
def test_a_next_ring_starts_only_after_its_soak_by_the_clock(
    status: str, soak_minutes: int, elapsed_minutes: int, pending: bool, timeout_hours: int
) -> None:
    record = SweepRecord(
        "s",
        T0.isoformat(),
        "Install",
        "NoReboot",
        (("i-1",),),
        sent={0: "c"},
        pending=frozenset({"c"}) if pending else frozenset(),
        phase="sent",
        rings=(RingInfo(0, 1, 1), RingInfo(1, 1, 1)),
        status=status,
        ring_started_at=T0.isoformat(),
        soak_until=(T0 + timedelta(minutes=soak_minutes)).isoformat() if status == "soaking" else "",
    )
    now = T0 + timedelta(minutes=elapsed_minutes)
    verdict, _ = on_tick(record, now, timedelta(hours=timeout_hours))
    if verdict == "start-ring":
        assert status == "soaking" and now >= T0 + timedelta(minutes=soak_minutes)
    if verdict == "time-out":
        assert status == "running" and pending and now >= T0 + timedelta(hours=timeout_hours)
    if status in ("halted", "done"):
        assert verdict == "wait"


@given(targeted=st.integers(1, 5000), data=st.data(), percent=st.integers(0, 100), last=st.booleans())
def test_a_ring_below_the_threshold_never_lets_the_next_one_start(
    targeted: int, data: st.DataObject, percent: int, last: bool
) -> None:
    succeeded = data.draw(st.integers(0, targeted))
    verdict = ring_verdict(succeeded, targeted, percent, last)
    if last:
        assert verdict == "done"
    elif succeeded / targeted * 100 < percent - 1e-9:
        assert verdict == "halted"
    else:
        assert verdict == "soaking"


@given(st.lists(st.one_of(st.none(), st.integers(0, 120).map(str), st.text(max_size=4)), max_size=40))
def test_every_target_is_in_exactly_one_ring_untagged_and_bad_ones_in_the_last(
    values: list[str | None],
) -> None:
    targets = [
        Instance(f"i-{n:04d}", tags={} if v is None else {"PatchRing": v}) for n, v in enumerate(values)
    ]
    rings = assign_rings(targets)
    placed = [i.id for _, members in rings.rings for i in members]
    assert sorted(placed) == sorted(t.id for t in targets)
    numbers = [n for n, _ in rings.rings]
    assert numbers == sorted(set(numbers)) and all(0 <= n <= 99 for n in numbers)
    if rings.rings:
        last = {i.id for i in rings.rings[-1][1]}
        bad = {b.instance.id for b in rings.bad_tags}
        untagged = {t.id for t in targets if "PatchRing" not in t.tags}
        assert bad | untagged <= last
