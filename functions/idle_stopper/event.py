"""The event idle_stopper runs on: EventBridge's scheduled event (``IdleStopperSchedule``).

Only its id matters (the runner claims the run by it); its ``time`` is never used as "now":
the run's time is the clock's (PRODUCT.md safety rule 7).
"""

from __future__ import annotations

from typing import Any

from autopilot.events import ScheduledRun, parse_scheduled

Trigger = ScheduledRun


def parse(event: Any) -> Trigger:
    """A scheduled event (source ``aws.events`` or ``aws.scheduler``, detail-type ``Scheduled
    Event``) into its :class:`~autopilot.events.ScheduledRun`; BadEvent for anything else."""
    return parse_scheduled(event)
