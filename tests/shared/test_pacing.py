"""autopilot.pacing: calls at the rate an API's token bucket allows, never faster, and never a
wait past the invocation's time."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autopilot import pacing

pytestmark = pytest.mark.unit


def test_an_unknown_bucket_is_assumed_empty_then_calls_go_at_the_refill_rate(
    _paced_on_a_simulated_clock: list[float],
) -> None:
    """The round before this one (10 s ago) emptied the bucket: no burst is assumed at the
    start, so no call of the first seconds is refused; a bucket left idle fills to its burst."""
    pacer = pacing.Pacer({"DeleteSnapshot": pacing.EC2_MUTATING})
    for _ in range(50):
        assert pacer.take("DeleteSnapshot", budget=1000)
    assert _paced_on_a_simulated_clock[0] == pytest.approx(50 / 5)
    assert pacer.waited == pytest.approx(10)
    _paced_on_a_simulated_clock[0] += 3600  # idle for an hour: the bucket holds its burst, no more
    for _ in range(200):
        assert pacer.take("DeleteSnapshot", budget=1000)
    assert _paced_on_a_simulated_clock[0] == pytest.approx(10 + 3600)
    assert pacer.take("DeleteSnapshot", budget=1000)
    assert _paced_on_a_simulated_clock[0] == pytest.approx(10 + 3600 + 1 / 5)


def test_each_operation_has_its_own_bucket_and_unknown_ones_are_not_paced(
    _paced_on_a_simulated_clock: list[float],
) -> None:
    pacer = pacing.Pacer({"A": (1, 1.0), "B": (1, 1.0)})
    assert pacer.take("A", 10)  # empty at first: a wait of 1 s
    assert _paced_on_a_simulated_clock[0] == pytest.approx(1.0)
    assert pacer.take("B", 10)  # its own bucket, empty at its first use: 1 s more
    assert _paced_on_a_simulated_clock[0] == pytest.approx(2.0)
    assert pacer.ready("A") and not pacer.ready("B"), "A refilled while B waited; B just spent"
    _paced_on_a_simulated_clock[0] += 1
    assert pacer.ready("B")
    for _ in range(1000):
        assert pacer.take("Describe", 0) and pacer.ready("Describe")
    assert _paced_on_a_simulated_clock[0] == pytest.approx(3.0)


def test_a_wait_longer_than_the_time_left_takes_nothing_and_does_not_sleep(
    _paced_on_a_simulated_clock: list[float],
) -> None:
    pacer = pacing.Pacer({"A": (2, 0.5)})
    assert not pacer.take("A", budget=1.9)  # the first token is 2 s away
    assert _paced_on_a_simulated_clock[0] == 0
    assert pacer.take("A", budget=2.0) and _paced_on_a_simulated_clock[0] == pytest.approx(2.0)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1, max_value=300),
    st.floats(min_value=0.5, max_value=50),
    st.lists(st.floats(min_value=0, max_value=3), min_size=1, max_size=400),
)
def test_property_never_faster_than_the_bucket_allows(burst: int, rate: float, gaps: list[float]) -> None:
    """Whatever the caller does between calls, the calls made by time t are at most what the
    bucket can have given: rate x t (it is assumed empty at the start), and within any window
    at most a burst plus rate x the window."""
    now = [0.0]
    original = pacing.clock, pacing.sleep
    pacing.clock = lambda: now[0]
    pacing.sleep = lambda s: now.__setitem__(0, now[0] + s)
    try:
        pacer = pacing.Pacer({"X": (burst, rate)})
        made = 0
        for gap in gaps:
            now[0] += gap
            if pacer.take("X", budget=1e9):
                made += 1
                assert made <= rate * now[0] + 1e-6
    finally:
        pacing.clock, pacing.sleep = original
