"""EventBridge schedule expressions, read the way EventBridge reads them, so a function can tell
whether "now" is a time its own schedule names.

Why: anyone allowed to invoke a function can hand it a well-formed scheduled event with a fresh
time. For an automation on a ``cron(...)`` schedule (the weekly patch sweep that may reboot, the
nightly snapshots) the clock can say whether the schedule fired within the last delivery's
retries: :meth:`Schedule.fired_within`. A ``rate(...)`` schedule starts counting from when the
rule was created, so it names no times to compare with (:attr:`Schedule.anchored` is False).

The six cron fields, in UTC (EventBridge rules have no time zone): minutes (0-59), hours
(0-23), day of month (1-31, ``L``, ``W``, ``LW``), month (1-12 or JAN-DEC), day of week (1-7 =
SUN-SAT or the names, ``L``, ``#``), year (1970-2199). ``,`` ``-`` ``*`` ``/`` everywhere; one
of the two day fields must be ``?``. Anything else is a :class:`BadSchedule` naming the field.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

MONTHS = {name: i for i, name in enumerate(("JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                            "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), start=1)}  # fmt: skip
DAYS = {name: i for i, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"), start=1)}
_RATE = re.compile(r"rate\((\d{1,9}) (minute|minutes|hour|hours|day|days)\)")
_CRON = re.compile(r"cron\(([^()]+)\)")
_RATE_UNITS = {"minute": 60, "hour": 3600, "day": 86400}


class BadSchedule(ValueError):
    """Not a schedule expression EventBridge accepts (the message names the field)."""


DayTest = Callable[[datetime], bool]


@dataclass(frozen=True)
class Schedule:
    expression: str
    anchored: bool  # True for cron(...): it names times; False for rate(...)
    period: timedelta | None = None  # rate(...) only
    _minutes: frozenset[int] = frozenset()
    _hours: frozenset[int] = frozenset()
    _months: frozenset[int] = frozenset()
    _years: frozenset[int] = frozenset()
    _day: DayTest | None = None

    @classmethod
    def parse(cls, expression: str) -> Schedule:
        text = expression.strip()
        if rate := _RATE.fullmatch(text):
            value, unit = int(rate.group(1)), rate.group(2).rstrip("s")
            if value < 1 or (value == 1) != (not rate.group(2).endswith("s")):
                raise BadSchedule(f"{expression!r}: rate(1 {unit}) is singular, rate(N {unit}s) plural")
            return cls(text, anchored=False, period=timedelta(seconds=value * _RATE_UNITS[unit]))
        cron = _CRON.fullmatch(text)
        if cron is None:
            raise BadSchedule(f"{expression!r} is neither cron(...) nor rate(...)")
        fields = cron.group(1).split()
        if len(fields) != 6:
            raise BadSchedule(f"{expression!r}: cron needs 6 fields (min hour day month weekday year)")
        minute, hour, dom, month, dow, year = fields
        if (dom == "?") == (dow == "?"):
            raise BadSchedule(f"{expression!r}: exactly one of day-of-month and day-of-week must be '?'")
        return cls(
            text,
            anchored=True,
            _minutes=_values(minute, 0, 59, {}, "minutes"),
            _hours=_values(hour, 0, 23, {}, "hours"),
            _months=_values(month, 1, 12, MONTHS, "month"),
            _years=_values(year, 1970, 2199, {}, "year"),
            _day=_day_of_month(dom) if dow == "?" else _day_of_week(dow),
        )

    def names(self, when: datetime) -> bool:
        """Does this cron schedule fire in ``when``'s minute (UTC)?"""
        if not self.anchored or self._day is None:
            return False
        t = when.astimezone(UTC)
        return (
            t.minute in self._minutes
            and t.hour in self._hours
            and t.month in self._months
            and t.year in self._years
            and self._day(t)
        )

    def fired_within(
        self, now: datetime, before: timedelta, after: timedelta = timedelta()
    ) -> datetime | None:
        """The latest minute in [now - before, now + after] this cron schedule names, or None.
        (``after`` allows for the clocks of EventBridge and the function to differ a little.)
        A rate(...) schedule names no times: always None; check :attr:`anchored` first."""
        if not self.anchored:
            return None
        minute = (now + after).astimezone(UTC).replace(second=0, microsecond=0)
        earliest = now - before
        while minute >= earliest:
            if self.names(minute):
                return minute
            minute -= timedelta(minutes=1)
        return None


def _values(text: str, low: int, high: int, names: dict[str, int], field: str) -> frozenset[int]:
    """The numbers a cron field names: lists of ``*``, ``n``, ``a-b``, each optionally ``/step``."""
    found: set[int] = set()
    for part in text.upper().split(","):
        found |= _part(part, low, high, names, field)
    return frozenset(found)


def _part(part: str, low: int, high: int, names: dict[str, int], field: str) -> set[int]:
    base, _, step_text = part.partition("/")
    step = _number(step_text, 1, high - low + 1, {}, field) if step_text else 1
    if base == "*":
        start, end = low, high
    elif "-" in base:
        a, _, b = base.partition("-")
        start, end = _number(a, low, high, names, field), _number(b, low, high, names, field)
        if end < start:
            raise BadSchedule(f"{field}: range {part!r} runs backwards")
    else:
        start = _number(base, low, high, names, field)
        end = high if step_text else start
    return set(range(start, end + 1, step))


def _number(text: str, low: int, high: int, names: dict[str, int], field: str) -> int:
    if text in names:
        return names[text]
    if not text.isdigit() or not low <= int(text) <= high:
        raise BadSchedule(f"{field}: {text!r} is not a value from {low} to {high}")
    return int(text)


def _weekday(t: datetime) -> int:
    """EventBridge's day-of-week number: 1 = Sunday ... 7 = Saturday."""
    return (t.weekday() + 1) % 7 + 1


def _last_day(t: datetime) -> int:
    return calendar.monthrange(t.year, t.month)[1]


def _nearest_weekday(t: datetime, day: int) -> int:
    """The weekday (Mon-Fri) nearest ``day`` of ``t``'s month, never crossing into another month."""
    day = min(day, _last_day(t))
    weekday = datetime(t.year, t.month, day).weekday()
    if weekday == 5:  # Saturday: the Friday before, or the Monday after on the 1st
        return day - 1 if day > 1 else day + 2
    if weekday == 6:  # Sunday: the Monday after, or the Friday before on the last day
        return day + 1 if day < _last_day(t) else day - 2
    return day


def _day_of_month(text: str) -> DayTest:
    spec = text.upper()
    if spec == "L":
        return lambda t: t.day == _last_day(t)
    if spec == "LW":
        return lambda t: t.day == _nearest_weekday(t, _last_day(t))
    if spec.endswith("W"):
        day = _number(spec[:-1], 1, 31, {}, "day-of-month")
        return lambda t: t.day == _nearest_weekday(t, day)
    days = _values(spec, 1, 31, {}, "day-of-month")
    return lambda t: t.day in days


def _day_of_week(text: str) -> DayTest:
    spec = text.upper()
    if "#" in spec:
        day_text, _, nth_text = spec.partition("#")
        day, nth = _number(day_text, 1, 7, DAYS, "day-of-week"), _number(nth_text, 1, 5, {}, "day-of-week")
        return lambda t: _weekday(t) == day and (t.day - 1) // 7 + 1 == nth
    if spec == "L":
        return lambda t: _weekday(t) == 7  # as in Quartz: L alone is the week's last day, Saturday
    if spec.endswith("L"):
        day = _number(spec[:-1], 1, 7, DAYS, "day-of-week")
        return lambda t: _weekday(t) == day and t.day + 7 > _last_day(t)
    days = _values(spec, 1, 7, DAYS, "day-of-week")
    return lambda t: _weekday(t) in days
