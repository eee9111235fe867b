"""Pure decision logic of idle_stopper (idle_stopper.decide): table-driven, no AWS."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from idle_stopper.decide import (
    BadDuration,
    Instance,
    Outcome,
    Period,
    Policy,
    Recheck,
    assess,
    conclude,
    decide,
    finish,
    format_duration,
    intent,
    judge_idle,
    next_to_check,
    parse_stop_after,
    recheck,
    select,
)

pytestmark = pytest.mark.unit

NOW = datetime(2024, 5, 14, 9, 17, tzinfo=UTC)
POLICY = Policy(lookback_periods=24, periods_required=23, cpu_percent=10.0, network_mb=5.0, max_stops=10)
OLD = NOW - timedelta(days=3)


def series(
    cpu: float | None = 1.0,
    net: float | None = 100_000.0,
    overrides: dict[int, tuple[float | None, float | None]] | None = None,
    policy: Policy = POLICY,
) -> list[Period]:
    """One Period per window period; ``overrides[i] = (cpu, net_bytes)`` changes period i
    (0 = oldest). net is split evenly into in and out."""
    periods = []
    for i, start in enumerate(policy.period_starts(NOW)):
        c, n = (overrides or {}).get(i, (cpu, net))
        periods.append(Period(start, c, None if n is None else n / 2, None if n is None else n / 2))
    return periods


def instance(instance_id: str = "i-1", launch: datetime = OLD, **kwargs: object) -> Instance:
    return Instance(instance_id=instance_id, launch_time=launch, **kwargs)  # type: ignore[arg-type]


# ---- StopAfter -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("90m", timedelta(minutes=90)),
        ("8h", timedelta(hours=8)),
        ("2d", timedelta(days=2)),
        (" 8H ", timedelta(hours=8)),
        ("1m", timedelta(minutes=1)),
        ("366d", timedelta(days=366)),
    ],
)
def test_stop_after_accepts(raw: str, expected: timedelta) -> None:
    assert parse_stop_after(raw) == expected


@pytest.mark.parametrize(
    "raw", ["", "8", "h", "1.5h", "8 h", "8hours", "-2d", "0h", "2w", "1d2h", "367d", "８h", "8h30m", "abc"]
)
def test_stop_after_rejects_without_guessing(raw: str) -> None:
    with pytest.raises(BadDuration, match="StopAfter"):
        parse_stop_after(raw)


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(minutes=45), "45m"),
        (timedelta(hours=9, minutes=12), "9h 12m"),
        (timedelta(days=2, hours=3), "2d 3h"),
    ],
)
def test_format_duration(delta: timedelta, text: str) -> None:
    assert format_duration(delta) == text


# ---- the window ------------------------------------------------------------------------------


def test_window_is_the_last_complete_aligned_periods() -> None:
    start, end = POLICY.window(NOW)
    assert end == datetime(2024, 5, 14, 9, 0, tzinfo=UTC)
    assert start == end - timedelta(hours=24)
    # within the settle time after the hour, the hour just ended is not complete in CloudWatch yet
    start, end = POLICY.window(datetime(2024, 5, 14, 9, 5, tzinfo=UTC))
    assert end == datetime(2024, 5, 14, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lookback_periods": 0},
        {"periods_required": 25},
        {"periods_required": 0},
        {"max_stops": -1},
        {"period": timedelta(seconds=90)},
    ],
)
def test_policy_rejects_nonsense(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Policy(**kwargs)  # type: ignore[arg-type]


# ---- the idle rule ---------------------------------------------------------------------------

MB = 1_000_000


@pytest.mark.parametrize(
    ("case", "periods", "idle", "idle_periods", "with_data"),
    [
        ("quiet all day", series(), True, 24, 24),
        ("one burst of CPU is tolerated (23 of 24)", series(overrides={5: (95.0, 1e5)}), True, 23, 24),
        ("a burst in the latest period is tolerated too", series(overrides={23: (95.0, 1e5)}), True, 23, 24),
        ("two busy periods: busy", series(overrides={5: (95.0, 1e5), 9: (50.0, 1e5)}), False, 22, 24),
        ("one network burst", series(overrides={3: (1.0, 50 * MB)}), True, 23, 24),
        ("network busy all day", series(net=6 * MB), False, 0, 24),
        ("CPU busy all day", series(cpu=40.0), False, 0, 24),
        ("CPU exactly at the threshold is busy", series(cpu=10.0), False, 0, 24),
        ("CPU just below the threshold is idle", series(cpu=9.99), True, 24, 24),
        ("network exactly at the threshold is busy", series(net=5 * MB), False, 0, 24),
        ("network just below the threshold is idle", series(net=5 * MB - 1), True, 24, 24),
        ("one period without any datapoint", series(overrides={7: (None, None)}), False, 23, 23),
        ("one period without CPU", series(overrides={0: (None, 1e5)}), False, 23, 23),
        ("one period without network", series(overrides={0: (1.0, None)}), False, 23, 23),
        ("no data at all", [], False, 0, 0),
    ],
)
def test_idle_rule(case: str, periods: list[Period], idle: bool, idle_periods: int, with_data: int) -> None:
    verdict = judge_idle(periods, POLICY, NOW)
    assert (verdict.idle, verdict.idle_periods, verdict.periods_with_data) == (
        idle,
        idle_periods,
        with_data,
    ), case


def test_periods_outside_the_window_do_not_count() -> None:
    start, end = POLICY.window(NOW)
    outside = [Period(start - timedelta(hours=h), 0.0, 0.0, 0.0) for h in range(1, 30)]
    outside.append(Period(end, 0.0, 0.0, 0.0))  # the incomplete current period
    verdict = judge_idle(series(overrides={i: (None, None) for i in range(3)}) + outside, POLICY, NOW)
    assert verdict.periods_with_data == 21
    assert not verdict.idle


def test_n_equals_m_needs_every_period_idle() -> None:
    strict = Policy(lookback_periods=24, periods_required=24)
    assert judge_idle(series(policy=strict), strict, NOW).idle
    assert not judge_idle(series(overrides={11: (60.0, 1e5)}, policy=strict), strict, NOW).idle


def test_verdict_numbers_are_the_peaks() -> None:
    verdict = judge_idle(series(overrides={4: (7.5, 3 * MB)}), POLICY, NOW)
    assert verdict.peak_cpu == 7.5
    assert verdict.peak_network_mb == pytest.approx(3.0)
    assert "peak CPU 7.5%" in verdict.summary(POLICY)


# ---- exclusions, lifetime, youth -------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "outcome"),
    [
        ({"tags": {"aws:autoscaling:groupName": "web"}}, Outcome.AUTO_SCALING),
        ({"tags": {"eks:cluster-name": "prod"}}, Outcome.KUBERNETES),
        ({"tags": {"karpenter.sh/nodepool": "default"}}, Outcome.KUBERNETES),
        ({"tags": {"kubernetes.io/cluster/prod": "owned"}}, Outcome.KUBERNETES),
        ({"tags": {"aws:elasticmapreduce:job-flow-id": "j-1"}}, Outcome.MANAGED),
        ({"lifecycle": "spot"}, Outcome.SPOT),
        ({"lifecycle": "capacity-block"}, Outcome.SPOT),
        ({"root_device_type": "instance-store"}, Outcome.INSTANCE_STORE),
        ({"root_device_type": None}, Outcome.INSTANCE_STORE),
        ({"tags": {"AutoStop": "false"}}, Outcome.OPTED_OUT),
        ({"tags": {"AutoStop": "FALSE"}}, Outcome.OPTED_OUT),
        ({"tags": {"AutoStop": " Never "}}, Outcome.OPTED_OUT),
        ({"tags": {"autostop": "never"}}, Outcome.OPTED_OUT),
        ({"tags": {"AutoStop": "no"}}, Outcome.OPTED_OUT),
        ({"tags": {"AutoStop": "Off"}}, Outcome.OPTED_OUT),
        ({"tags": {"AutoStop": "true", "autostop": "no"}}, Outcome.OPTED_OUT),  # any spelling wins
        ({"tags": {"AutoStop": "false", "StopAfter": "1m"}}, Outcome.OPTED_OUT),
        ({"tags": {"aws:autoscaling:groupName": "web", "StopAfter": "1m"}}, Outcome.AUTO_SCALING),
        ({"lifecycle": "spot", "tags": {"StopAfter": "1m"}}, Outcome.SPOT),
        ({"state": "stopping"}, Outcome.NOT_RUNNING),
        ({"tags": {"AutoStop": "true"}}, Outcome.NEEDS_METRICS),
        ({"tags": {"AutoStop": "nope"}}, Outcome.NEEDS_METRICS),
    ],
)
def test_exclusions_win_over_everything(kwargs: dict[str, object], outcome: Outcome) -> None:
    a = assess(instance(**kwargs), POLICY, NOW)
    assert a.outcome is outcome
    # idle metrics change nothing for an excluded instance; the two that need them stop as idle
    concluded = conclude(a, series(), POLICY, NOW)
    assert concluded.outcome is (Outcome.STOP_IDLE if outcome is Outcome.NEEDS_METRICS else outcome)
    assert concluded.stops is (outcome is Outcome.NEEDS_METRICS)


@pytest.mark.parametrize(
    ("tag", "running", "outcome"),
    [
        ("90m", timedelta(minutes=91), Outcome.STOP_LIFETIME),
        ("90m", timedelta(minutes=90), Outcome.STOP_LIFETIME),
        ("90m", timedelta(minutes=89), Outcome.TOO_YOUNG),
        ("8h", timedelta(hours=9), Outcome.STOP_LIFETIME),
        ("2d", timedelta(days=1, hours=2), Outcome.NEEDS_METRICS),
        ("2d", timedelta(days=1), Outcome.TOO_YOUNG),
        ("2d", timedelta(days=3), Outcome.STOP_LIFETIME),
    ],
)
def test_stop_after(tag: str, running: timedelta, outcome: Outcome) -> None:
    a = assess(instance(launch=NOW - running, tags={"StopAfter": tag}), POLICY, NOW)
    assert a.outcome is outcome
    if outcome is Outcome.STOP_LIFETIME:
        assert f"StopAfter={tag} reached" in a.reason


def test_malformed_stop_after_is_reported_and_the_instance_still_judged_on_idleness() -> None:
    a = assess(instance(tags={"StopAfter": "8 hours"}), POLICY, NOW)
    assert a.outcome is Outcome.NEEDS_METRICS
    assert a.stop_after_error and "'8 hours'" in a.stop_after_error
    busy = conclude(a, series(cpu=50.0), POLICY, NOW)
    assert busy.outcome is Outcome.BUSY and busy.stop_after_error == a.stop_after_error
    assert conclude(a, series(), POLICY, NOW).outcome is Outcome.STOP_IDLE


def test_too_young_for_the_window_is_never_idle() -> None:
    young = instance(launch=POLICY.window(NOW)[0] + timedelta(minutes=1))
    plan = decide([young], {"i-1": series()}, POLICY, NOW)
    assert plan.stop == []
    assert plan.others[0].outcome is Outcome.TOO_YOUNG


def test_without_metrics_nothing_is_idle() -> None:
    plan = decide([instance()], {}, POLICY, NOW)
    assert plan.stop == [] and plan.others[0].outcome is Outcome.TOO_LITTLE_DATA


# ---- selection -------------------------------------------------------------------------------


def test_cap_lifetime_first_then_longest_running_and_protection_skipped() -> None:
    idle_old = instance("i-idle-old", launch=NOW - timedelta(days=9))
    idle_new = instance("i-idle-new", launch=NOW - timedelta(days=2))
    protected = instance("i-protected", launch=NOW - timedelta(days=20))
    lifetime = instance("i-life", launch=NOW - timedelta(hours=30), tags={"StopAfter": "1d"})
    metrics = {i.instance_id: series() for i in (idle_old, idle_new, protected)}
    policy = Policy(max_stops=2)
    concluded = [
        conclude(assess(i, policy, NOW), metrics.get(i.instance_id, ()), policy, NOW)
        for i in (idle_new, idle_old, protected, lifetime)
    ]
    # the caller's loop: ask what the selection needs next, read it, until nothing is needed
    asked: list[str] = []
    protection: dict[str, bool] = {}
    while (instance_id := next_to_check(concluded, policy.max_stops, protection)) is not None:
        asked.append(instance_id)
        protection[instance_id] = instance_id == "i-protected"
    plan = finish(concluded, policy, protection)
    assert [a.instance.instance_id for a in plan.stop] == ["i-life", "i-idle-old"]
    outcomes = {a.instance.instance_id: a.outcome for a in plan.others}
    assert outcomes == {"i-protected": Outcome.STOP_PROTECTED, "i-idle-new": Outcome.OVER_CAP}
    # protection is looked up lazily, in priority order, only until the cap is filled
    assert asked == ["i-life", "i-protected", "i-idle-old"]
    assert plan == decide([idle_new, idle_old, protected, lifetime], metrics, policy, NOW, {"i-protected"})


def test_cap_zero_stops_nothing_and_asks_nothing() -> None:
    a = conclude(assess(instance(), POLICY, NOW), series(), POLICY, NOW)
    assert next_to_check([a], 0, {}) is None
    selection = select([a], 0, {})
    assert selection.chosen == [] and len(selection.over_cap) == 1


def test_a_candidate_whose_protection_is_unknown_is_not_stopped() -> None:
    a = conclude(assess(instance(), POLICY, NOW), series(), POLICY, NOW)
    selection = select([a], 5, {})
    assert selection.chosen == [] and [p.outcome for p in selection.protected] == [Outcome.STOP_PROTECTED]


# ---- the intent ------------------------------------------------------------------------------


def test_nothing_to_stop_or_say_is_no_intent() -> None:
    busy = instance("i-busy")
    plan = decide([busy], {"i-busy": series(cpu=50.0)}, POLICY, NOW)
    assert intent(plan, POLICY, NOW, "Owner", [], dry_run=False) is None


def test_the_intent_is_plain_json_with_what_act_and_mail_need() -> None:
    idle = instance("i-idle", tags={"Name": "dev", "Team": "alice"}, instance_type="t3.small")
    expired = instance("i-life", launch=NOW - timedelta(hours=30), tags={"StopAfter": " 1d "})
    pet = instance("i-pet")
    odd = instance("i-odd", tags={"StopAfter": "1.5h"})
    plan = decide(
        [idle, expired, pet, odd], {i: series() for i in ("i-idle", "i-pet")}, POLICY, NOW, {"i-pet"}
    )
    recorded = intent(plan, POLICY, NOW, "Team", [], dry_run=True)
    assert recorded is not None
    assert json.loads(json.dumps(recorded)) == recorded  # plain JSON, nothing lost
    assert recorded["at"] == "2024-05-14T09:17:00Z" and recorded["dry_run"] is True
    assert [e["id"] for e in recorded["stop"]] == ["i-life", "i-idle"]
    life, quiet = recorded["stop"]
    assert life["outcome"] == "StopLifetime" and life["stop_after"] == "1d"
    assert life["running_seconds"] == 30 * 3600
    assert quiet["outcome"] == "StopIdle" and (quiet["idle_periods"], quiet["periods"]) == (24, 24)
    assert quiet["peak_cpu"] == 1.0
    assert recorded["instances"]["i-idle"] == {
        "name": "dev",
        "owner": "alice",  # the configured owner tag key
        "type": "t3.small",
        "launched": "2024-05-11 09:17",
    }
    assert recorded["protected"] == ["i-pet"] and "i-pet" in recorded["instances"]
    assert recorded["malformed"][0]["id"] == "i-odd" and "'1.5h'" in recorded["malformed"][0]["error"]
    assert recorded["malformed_due"] is False  # 09:17 is not the daily hour
    assert recorded["kept"] == {"StopProtected": 1, "TooLittleData": 1}
    assert recorded["checked"] == 4 and recorded["over_cap"] == 0
    assert recorded["policy"]["max_stops"] == 10 and "23 of the last 24 hours" in recorded["policy"]["rule"]


def test_a_malformed_stop_after_alone_is_an_intent_only_in_the_daily_hour() -> None:
    odd = instance("i-odd", tags={"StopAfter": "8"})
    plan = decide([odd], {}, POLICY, NOW)
    assert intent(plan, POLICY, NOW, "Owner", [], dry_run=False) is None
    at_seven = NOW.replace(hour=7)
    recorded = intent(decide([odd], {}, POLICY, at_seven), POLICY, at_seven, "Owner", [], dry_run=False)
    assert recorded is not None and recorded["malformed_due"] and recorded["stop"] == []


def test_a_failure_alone_is_worth_an_intent() -> None:
    plan = decide([instance("i-busy")], {"i-busy": series(cpu=50.0)}, POLICY, NOW)
    failure = {"instance_id": "i-x", "action": "check stop protection", "code": "X", "message": "m"}
    recorded = intent(plan, POLICY, NOW, "Owner", [failure], dry_run=False)
    assert recorded is not None and recorded["failures"] == [failure]


# ---- resume: the recorded stop set against the facts now -------------------------------------


@pytest.mark.parametrize(
    ("current", "verdict", "why"),
    [
        (None, Recheck.DROP, "no longer exists"),
        (instance(), Recheck.STOP, "still running"),
        (instance(state="stopping"), Recheck.OURS, "already stopping"),
        (instance(state="stopped"), Recheck.OURS, "already stopped"),
        (instance(state="terminated"), Recheck.DROP, "state is now terminated"),
        (instance(state="pending"), Recheck.DROP, "state is now pending"),
        (instance(tags={"AutoStop": "false"}), Recheck.DROP, "opted out (AutoStop=false) since the decision"),
        (instance(state="stopped", tags={"autostop": "OFF"}), Recheck.DROP, "it is stopped, left as it is"),
        (instance(tags={"aws:autoscaling:groupName": "web"}), Recheck.DROP, "Auto Scaling group member"),
        (instance(lifecycle="spot"), Recheck.DROP, "not on-demand"),
        (instance(tags={"AutoStop": "true"}), Recheck.STOP, "still running"),
    ],
)
def test_recheck(current: Instance | None, verdict: Recheck, why: str) -> None:
    got, reason = recheck(current)
    assert got is verdict and why in reason
