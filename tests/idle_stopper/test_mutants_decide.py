"""idle_stopper.decide where `make mutate` (tools/mutate.py) found behaviour no test pinned down:
each test names the mutants it kills (mutmut's names; docs/mutation-survivors.md lists the
survivors explained instead). Pure decisions, no AWS."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from idle_stopper.decide import (
    Assessment,
    Decision,
    Instance,
    Outcome,
    Period,
    Policy,
    Recheck,
    assess,
    conclude,
    format_duration,
    intent,
    malformed_report_due,
    recheck,
    select,
)

pytestmark = pytest.mark.unit

NOW = datetime(2024, 5, 14, 9, 17, tzinfo=UTC)
POLICY = Policy(lookback_periods=24, periods_required=23, cpu_percent=10.0, network_mb=5.0, max_stops=10)


def instance(instance_id: str = "i-1", age: timedelta = timedelta(days=3), **kwargs: object) -> Instance:
    return Instance(instance_id=instance_id, launch_time=NOW - age, **kwargs)  # type: ignore[arg-type]


def quiet_day() -> list[Period]:
    """Every period of the window with data, all of them idle (1 % CPU, 0.1 MB)."""
    return [Period(start, 1.0, 50_000.0, 50_000.0) for start in POLICY.period_starts(NOW)]


def lifetime_stop(instance_id: str, stop_after: str, running: timedelta) -> Assessment:
    stop = assess(instance(instance_id, running, tags={"StopAfter": stop_after}), POLICY, NOW)
    assert stop.outcome is Outcome.STOP_LIFETIME
    return stop


def idle_stop(instance_id: str, running: timedelta) -> Assessment:
    stop = conclude(assess(instance(instance_id, running), POLICY, NOW), quiet_day(), POLICY, NOW)
    assert stop.outcome is Outcome.STOP_IDLE
    return stop


@pytest.fixture
def local_time_is_not_utc() -> Iterator[None]:
    """The process's local time five hours behind UTC (a POSIX TZ: no time zone database needed),
    so that a decision reading local time instead of UTC shows. Lambda's TZ is UTC."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "XYZ+05"
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


# ---- selection under the cap: which candidates the cap keeps --------------------------------


def test_lifetime_stops_come_before_idle_ones_even_when_not_overdue() -> None:
    # x_priority__mutmut_1, _3: lifetime stops lost their precedence, so the longer-running idle
    # instance took the only place under the cap.
    due_now = lifetime_stop("i-due", "10h", running=timedelta(hours=10))  # exactly at StopAfter
    idle = idle_stop("i-idle", running=timedelta(days=30))
    chosen = select([idle, due_now], 1, {"i-due": False, "i-idle": False}).chosen
    assert [a.instance.instance_id for a in chosen] == ["i-due"]


def test_the_most_overdue_lifetime_stop_comes_first() -> None:
    # x_priority__mutmut_5 (least overdue first), x_assess__mutmut_36 (no overdue: the oldest
    # launch first), x_assess__mutmut_38 (overdue = running + lifetime).
    late = lifetime_stop("i-late", "1h", running=timedelta(hours=10))  # 9 h overdue
    older = lifetime_stop("i-older", "20h", running=timedelta(hours=21))  # 1 h overdue
    assert late.overdue == timedelta(hours=9) and older.overdue == timedelta(hours=1)
    chosen = select([older, late], 1, {"i-late": False, "i-older": False}).chosen
    assert [a.instance.instance_id for a in chosen] == ["i-late"]


def test_kept_candidates_say_why_and_what_they_would_have_been_stopped_for() -> None:
    # x_select__mutmut_9, _13, _14, _23, _27, _28, x__recast__mutmut_3, _6: the reasons of the
    # protected and the over-the-cap candidates (log lines and the mail).
    first = idle_stop("i-1", running=timedelta(days=9))
    second = idle_stop("i-2", running=timedelta(days=8))
    third = idle_stop("i-3", running=timedelta(days=7))
    selection = select([first, second, third], 1, {"i-1": True, "i-2": False, "i-3": False})
    assert [a.instance.instance_id for a in selection.chosen] == ["i-2"]
    (protected,) = selection.protected
    assert protected.outcome is Outcome.STOP_PROTECTED
    assert protected.reason == f"stop protection is on (would stop: {first.reason})"
    (over_cap,) = selection.over_cap
    assert over_cap.outcome is Outcome.OVER_CAP
    assert over_cap.reason == f"over this run's stop limit (would stop: {third.reason})"


# ---- assess: the reasons, the key spellings, the window's edge ------------------------------


def test_every_outcome_says_why() -> None:
    # x_assess__mutmut_5 (an exclusion's reason), _42, _47 (too young), _55, _61, _62 (needs
    # metrics), _11 (no StopAfter error read as "" instead of None), x_conclude__mutmut_15,
    # x_exclusion__mutmut_22, _23, _24 (the root device type, or "unknown").
    assert assess(instance(lifecycle="spot"), POLICY, NOW).reason == "not on-demand (InstanceLifecycle=spot)"
    store = assess(instance(root_device_type="instance-store"), POLICY, NOW)
    assert (store.outcome, store.reason) == (Outcome.INSTANCE_STORE, "root device is instance-store, not EBS")
    assert assess(instance(root_device_type=None), POLICY, NOW).reason == "root device is unknown, not EBS"
    young = assess(instance(age=timedelta(hours=5)), POLICY, NOW)
    assert young.outcome is Outcome.TOO_YOUNG and young.stop_after_error is None
    assert young.reason == "running only 5h 0m since its last start; the idle rule needs 24 full periods"
    judged = assess(instance(), POLICY, NOW)
    assert (judged.outcome, judged.reason, judged.stop_after_error) == (
        Outcome.NEEDS_METRICS,
        "needs metrics",
        None,
    )
    idle = idle_stop("i-1", running=timedelta(days=3))
    assert idle.verdict is not None and idle.reason == idle.verdict.summary(POLICY)
    assert idle.reason.startswith("quiet in 24 of the last 24 hours (needs 23); peak CPU 1.0%")


def test_the_stop_after_key_is_matched_in_any_spelling() -> None:
    # x__key__mutmut_2, _3, _7: only the exact spelling "StopAfter" was read.
    for key in ("stopafter", "STOPAFTER"):
        stop = assess(instance(age=timedelta(hours=3), tags={key: "2h"}), POLICY, NOW)
        assert (stop.outcome, stop.stop_after) == (Outcome.STOP_LIFETIME, "2h")


def test_the_opt_out_reason_names_the_exact_spelling_first() -> None:
    # x__opted_out_by__mutmut_5, _7, _11: with AutoStop and AUTOSTOP both opting out, the reason
    # quoted the other spelling's value.
    both = instance(tags={"AUTOSTOP": "off", "AutoStop": "never"})
    excluded = assess(both, POLICY, NOW)
    assert (excluded.outcome, excluded.reason) == (Outcome.OPTED_OUT, "opted out (AutoStop=never)")


def test_an_instance_launched_at_the_window_start_has_every_period_and_is_judged() -> None:
    # x_assess__mutmut_41 (launch >= window start counted as too young).
    start, _ = POLICY.window(NOW)
    judged = assess(Instance("i-1", launch_time=start), POLICY, NOW)
    assert judged.outcome is Outcome.NEEDS_METRICS


def test_durations_round_down_to_whole_minutes() -> None:
    # x_format_duration__mutmut_6: under a minute read "1m".
    assert format_duration(timedelta(seconds=59)) == "0m"
    assert format_duration(timedelta(minutes=61, seconds=59)) == "1h 1m"


# ---- the clock's hour and the stamps are UTC, whatever the local time -----------------------


def test_times_are_utc_whatever_the_local_time_zone(local_time_is_not_utc: None) -> None:
    # x_malformed_report_due__mutmut_3, x_intent__mutmut_19, x__facts__mutmut_10,
    # x_assess__mutmut_27: local time instead of UTC (the daily report hour, the intent's
    # stamp, the launch time in the intent and in a lifetime stop's reason).
    at_seven = NOW.replace(hour=7)
    odd = Assessment(instance("i-odd"), Outcome.TOO_YOUNG, "young", stop_after_error="StopAfter='x'")
    decision = Decision(stop=[], others=[odd])
    assert malformed_report_due(decision, at_seven)
    recorded = intent(decision, POLICY, at_seven, "Owner", [], dry_run=True)
    assert recorded is not None
    assert recorded["at"] == "2024-05-14T07:17:00Z"
    assert recorded["instances"]["i-odd"]["launched"] == "2024-05-11 09:17"
    stop = lifetime_stop("i-1", "2h", running=timedelta(hours=3))
    assert stop.reason == "StopAfter=2h reached: running 3h 0m since 2024-05-14 06:17 UTC"


def test_the_intent_names_the_owner_tag_key_it_was_made_with() -> None:
    # x_intent__mutmut_22, _23: the report falls back to the stack's key without it.
    recorded = intent(Decision(stop=[], others=[]), POLICY, NOW, "Team", [{"id": "i-1"}], dry_run=False)
    assert recorded is not None and recorded["owner_tag_key"] == "Team"


def test_recheck_says_what_it_found() -> None:
    # x_recheck__mutmut_2, _18.
    assert recheck(None) == (Recheck.DROP, "no longer exists")
    assert recheck(instance()) == (Recheck.STOP, "still running")
