"""snapshot_rotator and a change freeze: while the Change Calendar is CLOSED (or cannot be
read) new snapshots are still made and no snapshot is deleted; the mail says what waits, and
the first run after the calendar opens deletes what expired meanwhile (PRODUCT.md)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from autopilot.recorder import CallRecorder

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
DAY = timedelta(days=1)
CALENDAR = "freeze-calendar"
Rotate = Callable[..., Any]


def _day(fleet: Any, rotate: Rotate, now: datetime, **kwargs: Any) -> Any:
    before = set(fleet.backend.snapshots)
    rotation = rotate(now=now, keep_newest=2, keep_days=0, change_calendar=CALENDAR, **kwargs)
    fleet.backdate_new(before, now)
    return rotation


def test_a_freeze_keeps_backing_up_deletes_nothing_and_the_first_open_run_catches_up(
    fleet: Any, rotate: Rotate, api: Any, change_calendar: Any
) -> None:
    vol = fleet.volume({"Backup": "true", "Name": "app"})
    start = NOW - 10 * DAY
    for day in range(4):  # open: the newest 2 (and the run's own) kept, the rest deleted
        _day(fleet, rotate, start + day * DAY)
    deleted_open = len(api.of("DeleteSnapshot"))
    assert deleted_open == 1

    change_calendar.set_state(CALENDAR, "CLOSED", "2026-11-20T00:00:00Z")
    for day in range(4, 7):
        with CallRecorder() as calls:
            rotation = _day(fleet, rotate, start + day * DAY)
        assert rotation.created == 1  # backups go on
        assert calls.count("ec2", "DeleteSnapshot") == 0
        assert calls.count("ssm", "GetCalendarState") == 1
        assert rotation.mail is not None
        assert "Waiting for the change freeze: snapshots not deleted" in rotation.mail.body
        assert "Change calendar freeze-calendar is CLOSED until 2026-11-20 00:00 UTC." in rotation.mail.body
        assert "deletions wait: change freeze" in rotation.mail.subject
    assert len(api.of("DeleteSnapshot")) == deleted_open

    change_calendar.set_state(CALENDAR, "OPEN")
    _day(fleet, rotate, start + 7 * DAY)
    ours = [s for s in fleet.snapshots(vol).values() if s["Tags"].get("ManagedBy")]
    assert len(ours) == 2 + 1  # caught up: the newest 2 and the run's own
    assert len(api.of("DeleteSnapshot")) == deleted_open + 4


def test_a_calendar_that_cannot_be_read_holds_deletions_and_counts_a_failure(
    fleet: Any, rotate: Rotate, api: Any, change_calendar: Any
) -> None:
    fleet.volume({"Backup": "true"})
    start = NOW - 10 * DAY
    for day in range(3):
        _day(fleet, rotate, start + day * DAY)
    change_calendar.FAILING[CALENDAR] = "AccessDeniedException"
    deleted = len(api.of("DeleteSnapshot"))
    rotation = _day(fleet, rotate, start + 3 * DAY)
    assert len(api.of("DeleteSnapshot")) == deleted and rotation.created == 1
    assert rotation.metrics["Failed"] == 1
    assert rotation.mail is not None
    assert "could not be read (AccessDeniedException): treated as CLOSED" in rotation.mail.body


def test_no_calendar_call_on_a_run_with_nothing_to_delete(
    fleet: Any, rotate: Rotate, change_calendar: Any
) -> None:
    fleet.volume({"Backup": "true"})
    with CallRecorder() as calls:
        _day(fleet, rotate, NOW)
    assert calls.count("ssm", "GetCalendarState") == 0
