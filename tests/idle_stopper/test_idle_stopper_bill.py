"""Issue 22's CloudWatch bill at test size: a day and two hours of hourly runs over a fleet of
busy, talking, bursty and idle instances, the real handler in moto (bench/idle_stopper_bill.py,
docs/benchmarks-idle-bill.md). GetMetricData bills each metric asked for."""

from __future__ import annotations

import pytest

from bench.idle_stopper_bill import run

pytestmark = pytest.mark.unit  # moto runs inside the bench's own sandbox

N = 100  # 60 busy, 20 talkers, 10 bursty, 10 idle


def test_a_day_of_runs_asks_less_than_a_tenth_of_one_metric_per_instance_and_run() -> None:
    result = run(N, 26)
    first, second = result.hours[0], result.hours[1]
    assert result.stopped == result.idle, "the idle ten stopped, nothing else"
    # the first run: every instance's CPU, the network of the 30 whose CPU was quiet (talkers,
    # idle); the busy and bursty ones are busy by their CPU alone
    assert first.metrics == N + 2 * 30 and first.calls == 2
    # the next run remembers the 90 still running as busy: it asks for nothing
    assert (second.running, second.remembered, second.metrics, second.calls) == (90, 90, 0, 0)
    day = result.hours[1:25]
    asked = sum(h.metrics for h in day)
    # every instance is asked about again within the day (memory expires with its busy hour)...
    assert asked >= 90 and any(h.remembered < 90 for h in day)
    # ...and the day costs under a tenth of asking one metric per instance a run (before issue
    # 22: three per instance a run, 6,480 here)
    assert asked < 90 * 24 / 10, [h.metrics for h in day]
    assert max(h.memory_writes for h in result.hours) == 1, "the memory is one item, written when changed"
