"""The health check's trigger: an EventBridge scheduled event (``WebsiteHealthCheckSchedule``).

Anything else - another source or detail-type, a missing or mistyped field - is
:class:`autopilot.events.BadEvent`: the runner logs it once and changes nothing. The event's
time is only logged; "now" is the clock's (``autopilot.runner.clock``).
"""

from __future__ import annotations

from typing import Any

from autopilot.events import ScheduledRun, parse_scheduled

Trigger = ScheduledRun


def parse(event: Any) -> Trigger:
    """The scheduled run (id, time, account, region), or BadEvent saying what is wrong."""
    return parse_scheduled(event)
