"""owner_backfill: the trigger.

Its EventBridge schedule (``OwnerBackfillSchedule``). Any other event is
:class:`autopilot.events.BadEvent`: the runner logs it once and changes nothing."""

from __future__ import annotations

from typing import Any

from autopilot.events import ScheduledRun, parse_scheduled

Trigger = ScheduledRun


def parse(event: Any) -> ScheduledRun:
    """The scheduled event (its id, time, account and region), or BadEvent."""
    return parse_scheduled(event)
