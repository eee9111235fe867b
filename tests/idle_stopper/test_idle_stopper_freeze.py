"""idle_stopper and a change freeze (PRODUCT.md: an optional Change Calendar pauses every
mutating action while CLOSED, and the digests say so), through the real handler and the
runner against moto, the calendar answered by tests/change_calendar.py."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from autopilot.recorder import CallRecorder
from idle_stopper import app
from tests.idle_stopper.test_idle_stopper_run import Killed, entries, killed_at, stopped_ids

pytestmark = pytest.mark.integration

UNTIL = "2026-03-12T00:00:00Z"
UNTIL_AGE = timedelta(hours=5)


def test_a_closed_calendar_stops_nothing_and_the_mail_says_what_waits_and_until_when(
    event: dict[str, Any], expiring: list[str], mailbox: Any, ec2: Any, change_calendar: Any
) -> None:
    change_calendar.set_state("freeze-calendar", "CLOSED", UNTIL)
    with CallRecorder() as calls:
        result = app.lambda_handler(event, ec2.context())

    assert stopped_ids(calls) == [] and calls.count("ec2", "CreateTags") == 0
    assert all(ec2.states()[i] == "running" for i in expiring)
    assert calls.count("ssm", "GetCalendarState") == 1
    assert result["Changed"] == 0 and result["Skipped"] >= 3 and result["Failed"] == 0
    (mail,) = mailbox()
    assert "not stopped: change freeze" in mail["subject"]
    assert "Waiting for the change freeze: not stopped (3)" in mail["body"]
    assert "Change calendar freeze-calendar is CLOSED until 2026-03-12 00:00 UTC." in mail["body"]
    assert all(i in mail["body"] for i in expiring)
    assert set(entries()) <= {"memo"}  # finished (the memo: what the mail said waits)


def test_an_open_calendar_lets_the_stops_happen(
    event: dict[str, Any], expiring: list[str], mailbox: Any, ec2: Any, change_calendar: Any
) -> None:
    with CallRecorder() as calls:
        result = app.lambda_handler(event, ec2.context())

    assert sorted(stopped_ids(calls)) == sorted(expiring) and result["Changed"] == 3
    assert calls.count("ssm", "GetCalendarState") == 1
    assert "change freeze" not in mailbox()[0]["body"]


def test_a_calendar_that_cannot_be_read_counts_as_closed_and_as_a_failure(
    event: dict[str, Any], expiring: list[str], mailbox: Any, ec2: Any, change_calendar: Any
) -> None:
    change_calendar.reset()  # the calendar was deleted: InvalidDocument
    with CallRecorder() as calls:
        result = app.lambda_handler(event, ec2.context())

    assert stopped_ids(calls) == [] and result["Failed"] == 1
    (mail,) = mailbox()
    assert "could not be read (InvalidDocument): treated as CLOSED" in mail["body"]


def test_a_stop_recorded_while_open_is_not_carried_out_once_the_calendar_closed(
    event: dict[str, Any], expiring: list[str], mailbox: Any, ec2: Any, change_calendar: Any
) -> None:
    """The calendar is asked when acting, so the retry of a run killed before its stop asks
    again: the freeze that began meanwhile holds the recorded stop back."""
    with killed_at("ec2", "StopInstances"), pytest.raises(Killed):
        app.lambda_handler(event, ec2.context("request-1"))
    change_calendar.set_state("freeze-calendar", "CLOSED", UNTIL)

    with CallRecorder() as calls:
        app.lambda_handler(event, ec2.context("request-2"))

    assert stopped_ids(calls) == []
    assert all(ec2.states()[i] == "running" for i in expiring)
    # one mail: the retry's fresh plan says what waits (the resumed intent, planned before the
    # freeze, has nothing done to tell)
    (mail,) = mailbox()
    assert "Waiting for the change freeze: not stopped (3)" in mail["body"]


def test_in_dry_run_the_mail_says_the_freeze_would_hold_the_stops_back(
    event: dict[str, Any],
    expiring: list[str],
    mailbox: Any,
    ec2: Any,
    change_calendar: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DRY_RUN", "true")
    change_calendar.set_state("freeze-calendar", "CLOSED")
    app.lambda_handler(event, ec2.context())

    (mail,) = mailbox()
    assert "Waiting for the change freeze: would not be stopped (3)" in mail["body"]
    assert "is CLOSED (no end is scheduled)" in mail["body"]
    assert "Would stop:" not in mail["body"]


def test_no_calendar_call_when_there_is_nothing_to_stop(
    event: dict[str, Any], ec2: Any, change_calendar: Any
) -> None:
    ec2.launch("db")  # too little data: kept
    with CallRecorder() as calls:
        app.lambda_handler(event, ec2.context())
    assert calls.count("ssm", "GetCalendarState") == 0


def test_a_freeze_is_mailed_once_not_every_hour_and_again_when_the_list_changes(
    new_event: Any, expiring: list[str], mailbox: Any, ec2: Any, change_calendar: Any
) -> None:
    change_calendar.set_state("freeze-calendar", "CLOSED", UNTIL)
    app.lambda_handler(new_event(), ec2.context("request-1"))
    app.lambda_handler(new_event(), ec2.context("request-2"))
    assert len(mailbox()) == 1  # the second run holds the same three back: nothing new to say

    ec2.tag(expiring[0], AutoStop="off")  # one fewer waits: the list changed, but nothing is new
    app.lambda_handler(new_event(), ec2.context("request-3"))
    assert len(mailbox()) == 1
    newcomer = ec2.launch("late-builder", tags={"StopAfter": "1h"}, age=UNTIL_AGE)[0]
    app.lambda_handler(new_event(), ec2.context("request-4"))
    mails = mailbox()  # every mail so far
    assert len(mails) == 2 and newcomer in mails[1]["body"]
    assert "Waiting for the change freeze: not stopped (3)" in mails[1]["body"]
