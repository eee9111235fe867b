"""autopilot.schedule: EventBridge schedule expressions read as EventBridge reads them (UTC), and
"did the schedule fire within the last delivery's age", which the runner asks of a scheduled
event before it acts on it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autopilot.schedule import BadSchedule, Schedule

pytestmark = pytest.mark.unit


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "named", "not_named"),
    [
        # the patch sweeper's default: Sundays 03:00 (2026-11-22 is a Sunday)
        (
            "cron(0 3 ? * SUN *)",
            ["2026-11-22 03:00", "2026-11-29 03:00"],
            ["2026-11-22 03:01", "2026-11-23 03:00"],
        ),
        ("cron(0 3 ? * 1 *)", ["2026-11-22 03:00"], ["2026-11-21 03:00"]),  # 1 = Sunday
        (
            "cron(30 2 * * ? *)",
            ["2026-01-01 02:30", "2026-07-19 02:30"],
            ["2026-01-01 02:31", "2026-01-01 03:30"],
        ),
        (
            "cron(0/15 8-10 * * ? *)",
            ["2026-03-03 08:45", "2026-03-03 10:00"],
            ["2026-03-03 11:00", "2026-03-03 08:20"],
        ),
        ("cron(0 8 ? * MON-FRI *)", ["2026-11-27 08:00"], ["2026-11-28 08:00", "2026-11-29 08:00"]),
        ("cron(0 9 ? * 2#1 *)", ["2026-12-07 09:00"], ["2026-12-14 09:00"]),  # first Monday
        ("cron(0 9 ? * 6L *)", ["2026-12-25 09:00"], ["2026-12-18 09:00"]),  # last Friday
        ("cron(0 0 L * ? *)", ["2026-02-28 00:00", "2028-02-29 00:00"], ["2028-02-28 00:00"]),
        ("cron(0 0 15W * ? *)", ["2026-11-16 00:00"], ["2026-11-15 00:00"]),  # the 15th is a Sunday
        ("cron(0 0 1W * ? *)", ["2026-08-03 00:00"], ["2026-07-31 00:00"]),  # never the month before
        ("cron(0 0 LW * ? *)", ["2026-05-29 00:00"], ["2026-05-31 00:00"]),  # May 31st is a Sunday
        ("cron(0 12 1,15 JAN,JUL ? 2027)", ["2027-07-15 12:00"], ["2026-07-15 12:00", "2027-08-01 12:00"]),
        ("cron(* * * * ? *)", ["2026-06-06 06:06"], []),
    ],
)
def test_cron_names_exactly_its_minutes(expression: str, named: list[str], not_named: list[str]) -> None:
    schedule = Schedule.parse(expression)
    assert schedule.anchored
    for text in named:
        assert schedule.names(at(text)), text
    for text in not_named:
        assert not schedule.names(at(text)), text


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("cron(0 3 * * SUN *)", "exactly one of"),
        ("cron(0 3 ? * ? *)", "exactly one of"),
        ("cron(0 3 ? * SUN)", "6 fields"),
        ("cron(60 3 ? * SUN *)", "minutes: '60'"),
        ("cron(0 24 ? * SUN *)", "hours: '24'"),
        ("cron(0 3 ? * FUNDAY *)", "day-of-week"),
        ("cron(0 3 ? * 7-1 *)", "runs backwards"),
        ("cron(0 3 ? * 2#6 *)", "day-of-week"),
        ("rate(1 minutes)", "singular"),
        ("rate(5 minute)", "plural"),
        ("every sunday", "neither cron"),
    ],
)
def test_what_eventbridge_would_refuse_is_refused_naming_the_field(expression: str, message: str) -> None:
    with pytest.raises(BadSchedule, match=message):
        Schedule.parse(expression)


def test_a_rate_names_no_time() -> None:
    schedule = Schedule.parse("rate(5 minutes)")
    assert not schedule.anchored and schedule.period == timedelta(minutes=5)
    assert schedule.fired_within(at("2026-11-22 03:00"), timedelta(hours=2)) is None
    assert Schedule.parse("rate(1 day)").period == timedelta(days=1)


def test_fired_within_is_the_latest_named_minute_of_the_window() -> None:
    weekly = Schedule.parse("cron(0 3 ? * SUN *)")
    window = timedelta(hours=2, minutes=15)
    assert weekly.fired_within(at("2026-11-22 05:14:59"), window) == at("2026-11-22 03:00")
    assert weekly.fired_within(at("2026-11-22 05:15:01"), window) is None  # a forged event, too late
    assert weekly.fired_within(at("2026-11-22 02:59:30"), window) is None  # before it fired
    assert weekly.fired_within(at("2026-11-22 02:56"), window, timedelta(minutes=5)) == at("2026-11-22 03:00")
    assert weekly.fired_within(at("2026-11-25 14:00"), window) is None  # a Wednesday afternoon


@settings(max_examples=200, deadline=None)
@given(
    minutes=st.sets(st.integers(0, 59), min_size=1, max_size=4),
    hours=st.sets(st.integers(0, 23), min_size=1, max_size=3),
    now=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2030, 1, 1)).map(
        lambda d: d.replace(tzinfo=UTC)
    ),
    window_minutes=st.integers(0, 300),
)
def test_fired_within_agrees_with_checking_every_minute(
    minutes: set[int], hours: set[int], now: datetime, window_minutes: int
) -> None:
    """The answer is the latest minute of [now - window, now] the schedule names, as checking
    each minute of the window one by one against the fields says."""
    expression = f"cron({','.join(map(str, sorted(minutes)))} {','.join(map(str, sorted(hours)))} * * ? *)"
    schedule = Schedule.parse(expression)
    window = timedelta(minutes=window_minutes)
    expected = None
    minute = now.replace(second=0, microsecond=0)
    while minute >= now - window:
        if minute.minute in minutes and minute.hour in hours:
            expected = minute
            break
        minute -= timedelta(minutes=1)
    assert schedule.fired_within(now, window) == expected
