"""The trigger of snapshot_rotator: an EventBridge scheduled event (``SnapshotRotatorSchedule``).

Only its id matters (the runner claims the run by it); the event's time is not used as "now"
(PRODUCT.md rule 7: the run's time is the clock's, ``run.now``).
"""

from __future__ import annotations

from typing import Any

from autopilot.events import ScheduledRun, parse_scheduled

Trigger = ScheduledRun


def parse(event: Any) -> Trigger:
    """The scheduled event as a :class:`ScheduledRun`; BadEvent for any other event."""
    return parse_scheduled(event)
