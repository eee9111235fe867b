"""A Change Calendar for the tests and the demo: moto implements no ssm:GetCalendarState, so
this adds it to moto's SSM responses (in-process and in a moto server alike).

The calendars are a registry here, not iCalendar documents: ``CALENDARS[name] = (state,
next transition)``. A name not in it answers like AWS for a missing document
(``InvalidDocument``); ``FAILING`` names answer with the error code given, to test a calendar
that cannot be read. The request is checked as AWS would (CalendarNames given); the answer is
what the API returns: State, AtTime, NextTransitionTime (absent when none is scheduled).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from moto.ssm.exceptions import InvalidDocument, SSMException
from moto.ssm.responses import SimpleSystemManagerResponse

CALENDARS: dict[str, tuple[str, str]] = {}
FAILING: dict[str, str] = {}
ASKED: list[list[str]] = []  # the CalendarNames of every call, in order


def _get_calendar_state(self: SimpleSystemManagerResponse) -> str:
    names = self._get_param("CalendarNames") or []
    ASKED.append(list(names))
    if not names:
        raise SSMException("ValidationException", "CalendarNames is required")
    states = []
    for name in names:
        if name in FAILING:
            raise SSMException(FAILING[name], f"{FAILING[name]} for {name}")
        if name not in CALENDARS:
            raise InvalidDocument(f"Document {name} does not exist")
        states.append(CALENDARS[name])
    closed = [s for s in states if s[0] == "CLOSED"]
    state, until = (closed or states)[0]
    answer = {"State": state, "AtTime": self._get_param("AtTime") or ""}
    if until:
        answer["NextTransitionTime"] = until
    return json.dumps(answer)


SimpleSystemManagerResponse.get_calendar_state = _get_calendar_state  # type: ignore[attr-defined]


def set_state(name: str, state: str, until: str = "") -> None:
    CALENDARS[name] = (state, until)


def reset() -> None:
    CALENDARS.clear()
    FAILING.clear()
    ASKED.clear()


@contextmanager
def calendar(name: str, state: str, until: str = "") -> Iterator[None]:
    reset()
    set_state(name, state, until)
    try:
        yield
    finally:
        reset()
