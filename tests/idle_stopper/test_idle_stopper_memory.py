"""idle_stopper asks CloudWatch less (issue 22, the bill): the network series only where the CPU
leaves idle possible (decide.judge_cpu), and nothing about an instance remembered busy while its
busy hours are still in the window (decide.busy_since, recall, remember). As hypothesis
properties over random fleets, metrics and clocks:

- asking in two steps decides what asking for all three series decides (busy by CPU stays a keep);
- honest memory changes no decision, even when late datapoints raised the values since;
- no memory at all - forged, stale, of another rule - ever makes an instance a stop candidate."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idle_stopper.decide import (
    MEMORY_RULE,
    Instance,
    Outcome,
    Period,
    Policy,
    assess,
    busy_since,
    conclude,
    decide,
    judge_cpu,
    judge_idle,
    recall,
    remember,
    rule_key,
)

pytestmark = [pytest.mark.unit, pytest.mark.slow]

NOW = datetime(2024, 5, 14, 9, 17, tzinfo=UTC)
HOUR = timedelta(hours=1)


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    lookback = draw(st.integers(1, 8))
    return Policy(
        lookback_periods=lookback,
        periods_required=draw(st.integers(1, lookback)),
        cpu_percent=draw(st.sampled_from([1.0, 10.0, 50.0])),
        network_mb=draw(st.sampled_from([1.0, 5.0])),
        max_stops=100,
    )


def _value(draw: st.DrawFn, high: float) -> float | None:
    return draw(st.one_of(st.none(), st.floats(0, high), st.sampled_from([0.0, high / 100, high / 10])))


@st.composite
def histories(draw: st.DrawFn, policy: Policy, hours: int) -> dict[str, list[Period]]:
    """Per instance, the hourly periods of the last ``lookback + hours`` hours before NOW."""
    start, _ = policy.window(NOW)
    first = start - hours * HOUR
    return {
        f"i-{n:04d}": [
            Period(first + h * HOUR, _value(draw, 100.0), _value(draw, 4e6), _value(draw, 4e6))
            for h in range(policy.lookback_periods + hours)
        ]
        for n in range(draw(st.integers(1, 8)))
    }


def _fleet(series: dict[str, list[Period]]) -> list[Instance]:
    return [Instance(i, NOW - timedelta(days=30)) for i in series]


def _later(draw: st.DrawFn, periods: list[Period]) -> list[Period]:
    """The same periods as CloudWatch answers later: a late datapoint can only raise a maximum
    or a sum, or fill a gap."""

    def raised(value: float | None, high: float) -> float | None:
        more = draw(st.sampled_from([0.0, 0.0, high / 10]))
        if value is None:
            return draw(st.one_of(st.none(), st.just(more)))
        return value + more

    return [
        Period(p.start, raised(p.cpu_max, 100.0), raised(p.network_in, 4e6), raised(p.network_out, 4e6))
        for p in periods
    ]


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_asking_for_the_network_only_after_a_quiet_cpu_decides_the_same(data: st.DataObject) -> None:
    policy = data.draw(policies())
    periods = next(iter(data.draw(histories(policy, 0)).values()))
    instance = Instance("i-1", NOW - timedelta(days=30))
    both = judge_idle(periods, policy, NOW)
    by_cpu = judge_cpu(periods, policy, NOW)
    if by_cpu is not None:  # the network is never asked for: it could not have made it idle
        assert not both.idle
        assert not by_cpu.idle
    cpu_only = [Period(p.start, p.cpu_max, None, None) for p in periods]
    asked = periods if judge_cpu(cpu_only, policy, NOW) is None else cpu_only
    two_steps = conclude(assess(instance, policy, NOW), asked, policy, NOW)
    one_step = conclude(assess(instance, policy, NOW), periods, policy, NOW)
    assert two_steps.stops == one_step.stops == both.idle
    assert two_steps.outcome == one_step.outcome


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_honest_memory_changes_no_decision(data: st.DataObject) -> None:
    policy = data.draw(policies())
    hours = data.draw(st.integers(0, policy.lookback_periods + 2))  # the earlier run, hours ago
    then = NOW - hours * HOUR
    now_series = data.draw(histories(policy, hours))
    then_series = {  # what the earlier run saw: the older periods, before late datapoints
        i: [p for p in periods if p.start < policy.window(then)[1]] for i, periods in now_series.items()
    }
    now_series = {i: _later(data.draw, periods) for i, periods in now_series.items()}
    memory = remember(policy, then_series, {}, then)
    fleet = _fleet(now_series)
    with_memory = decide(fleet, now_series, policy, NOW, memory=memory)
    without = decide(fleet, now_series, policy, NOW)
    assert [a.instance.instance_id for a in with_memory.stop] == [
        a.instance.instance_id for a in without.stop
    ]
    recalled = recall(memory, policy, NOW)
    for a, b in zip(with_memory.all, without.all, strict=True):
        if a.instance.instance_id in recalled:
            assert a.outcome is Outcome.BUSY and not b.stops
        else:
            assert a.outcome == b.outcome


junk = st.one_of(
    st.integers(-(2**40), 2**40),
    st.integers(int((NOW - timedelta(days=2)).timestamp()), int((NOW + timedelta(days=2)).timestamp())),
    st.text(max_size=5),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False),
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_no_memory_ever_makes_an_instance_a_stop_candidate(data: st.DataObject) -> None:
    policy = data.draw(policies())
    series = data.draw(histories(policy, 0))
    fleet = _fleet(series)
    memory: dict[str, Any] = data.draw(
        st.dictionaries(st.sampled_from([*series, "i-gone", MEMORY_RULE]), junk, max_size=10)
    )
    if data.draw(st.booleans()):
        memory[MEMORY_RULE] = rule_key(policy)
    capped = replace(policy, max_stops=data.draw(st.integers(0, 4)))
    with_memory = decide(fleet, series, capped, NOW, memory=memory)
    candidates = {a.instance.instance_id for a in decide(fleet, series, policy, NOW).stop}
    assert {a.instance.instance_id for a in with_memory.stop} <= candidates
    assert len(with_memory.stop) <= capped.max_stops


def test_a_busy_hour_is_remembered_until_it_leaves_the_window() -> None:
    policy = Policy(lookback_periods=24, periods_required=23)
    start, _ = policy.window(NOW)
    quiet = [Period(start + h * HOUR, 1.0, 1e3, 1e3) for h in range(24)]
    one_busy = [replace(p, cpu_max=90.0) if h == 5 else p for h, p in enumerate(quiet)]
    two_busy = [replace(p, network_in=9e6) if h == 20 else p for h, p in enumerate(one_busy)]
    assert busy_since(quiet, policy, NOW) is None
    assert busy_since(one_busy, policy, NOW) is None, "23 of 24 quiet is idle: nothing to remember"
    assert busy_since(two_busy, policy, NOW) == start + 5 * HOUR, "the older of the two keeps it busy"
    memory = remember(policy, {"i-1": two_busy, "i-2": quiet}, {}, NOW)
    assert memory == {MEMORY_RULE: rule_key(policy), "i-1": int((start + 5 * HOUR).timestamp())}
    assert recall(memory, policy, NOW + 5 * HOUR) == {"i-1": start + 5 * HOUR}, "hour 5 is still in"
    assert recall(memory, policy, NOW + 6 * HOUR) == {}, "hour 5 left the window: asked again"
    assert recall(memory, replace(policy, cpu_percent=95.0), NOW) == {}, "another rule forgets it all"
    assert recall({**memory, "i-1": int((NOW + HOUR).timestamp())}, policy, NOW) == {}, "not judged yet"
    assert remember(policy, {"i-2": quiet}, {}, NOW) == {}, "nothing busy: nothing to write"
