"""Change freezes: an optional AWS Systems Manager Change Calendar that pauses what changes a
workload while it is CLOSED (PRODUCT.md, "Beyond one topic, one account").

An automation that changes running workloads asks once per run, in ``act``, right before its
first change (:func:`read`: one ``ssm:GetCalendarState``), and skips the changes the freeze
covers: patch_sweeper's commands, idle_stopper's stops, snapshot_rotator's deletions (never
its new snapshots: a backup is what a freeze wants most). Asking in ``act`` and not in
``plan`` means a run killed before acting and finished later by the retry asks again: a stop
recorded while the calendar was OPEN is not carried out once it is CLOSED.

**Closed unless known open.** A calendar that cannot be read (deleted, renamed, not shared,
AccessDenied, throttled past the retries) counts as CLOSED: an automation that cannot tell
whether a freeze is on changes nothing, says so in its mail and counts one Failed (its alarm
fires). Owner tagging and instance_recovery's alarms are not paused: they change no workload,
and a launch's owner tag cannot wait (the event is gone).

The result is plain JSON for the act's result (:meth:`Freeze.as_json`), so the mail the retry
sends says what the first run saw.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from autopilot import aws
from autopilot.aws import error_code
from autopilot.notify import Digest, Item

OPEN, CLOSED, UNREADABLE = "OPEN", "CLOSED", "UNREADABLE"


@dataclass(frozen=True)
class Freeze:
    """What the calendar said at the time of asking."""

    calendar: str
    state: str  # OPEN | CLOSED | UNREADABLE
    until: str = ""  # the calendar's next transition (ISO 8601, UTC), when it has one
    error: str = ""  # why it could not be read (UNREADABLE only)

    @property
    def closed(self) -> bool:
        """True while changes must wait: CLOSED, or not known to be OPEN."""
        return self.state != OPEN

    def as_json(self) -> dict[str, str]:
        return {"calendar": self.calendar, "state": self.state, "until": self.until, "error": self.error}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Freeze:
        return cls(
            calendar=str(data["calendar"]),
            state=str(data["state"]),
            until=str(data.get("until", "")),
            error=str(data.get("error", "")),
        )

    def said(self) -> str:
        """One line for a mail: which calendar, what state, until when."""
        if self.state == UNREADABLE:
            return (
                f"Change calendar {self.calendar} could not be read ({self.error}): treated as CLOSED, "
                "so nothing was changed. Check that the calendar exists in this account and region "
                "and that the function may call ssm:GetCalendarState on it."
            )
        until = f" until {_readable(self.until)}" if self.until else " (no end is scheduled)"
        return f"Change calendar {self.calendar} is {self.state}{until}."


def read(calendar: str) -> Freeze | None:
    """The calendar's state now (1 GetCalendarState), or None when no calendar is configured.

    Never raises for the calendar's sake: what cannot be read is UNREADABLE (closed)."""
    if not calendar:
        return None
    try:
        response = aws.client("ssm").get_calendar_state(CalendarNames=[calendar])
    except ClientError as err:
        return Freeze(calendar, UNREADABLE, error=error_code(err))
    except BotoCoreError as err:  # the endpoint could not be reached, after the retries
        return Freeze(calendar, UNREADABLE, error=type(err).__name__)
    state = str(response.get("State", ""))
    if state not in (OPEN, CLOSED):
        return Freeze(calendar, UNREADABLE, error=f"unexpected state {state[:40]!r}")
    return Freeze(calendar, state, until=_iso(response.get("NextTransitionTime")))


def _iso(value: Any) -> str:
    """NextTransitionTime as ISO 8601 UTC, or '' when absent or not a time."""
    if not value:
        return ""
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return ""
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).isoformat(timespec="seconds")


def _readable(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return iso


def waiting(result: Mapping[str, Any]) -> Freeze | None:
    """The freeze an act's result records (under ``freeze``) when it held changes back, or None."""
    data = result.get("freeze")
    if not isinstance(data, Mapping):
        return None
    found = Freeze.from_json(data)
    return found if found.closed else None


def unreadable(result: Mapping[str, Any]) -> int:
    """1 when the act could not read its calendar (the run's Failed counts it), else 0."""
    found = waiting(result)
    return 1 if found is not None and found.state == UNREADABLE else 0


def section(
    digest: Digest,
    result: Mapping[str, Any],
    what: str,
    items: list[Item],
    after: str = "",
    count: int | None = None,
) -> None:
    """The mail's section for what waits for the freeze to end (nothing when nothing waits);
    ``after`` says what happens to them next (default: the next runs look again); ``count``:
    how many wait, when not every one is an item."""
    found = waiting(result)
    if found is None:
        return
    after = after or (
        "They are looked at again by the first run after the calendar opens."
        if found.state == CLOSED
        else "They are looked at again by the next run that can read the calendar."
    )
    total = len(items) if count is None else count
    digest.section(f"Waiting for the change freeze: {what} ({total})", items, text=[found.said(), after])
