"""idle_stopper's trigger (idle_stopper.event): the scheduled event, and nothing else."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from autopilot.events import BadEvent
from idle_stopper import event

pytestmark = pytest.mark.unit


def test_the_scheduled_sample_is_a_run(load_event: Callable[[str], dict[str, Any]]) -> None:
    trigger = event.parse(load_event("idle_stopper/eventbridge.scheduled"))
    assert trigger.id == "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa"
    assert trigger.account == "123456789012" and trigger.region == "eu-west-1"


def test_eventbridge_scheduler_is_a_run_too(load_event: Callable[[str], dict[str, Any]]) -> None:
    scheduled = load_event("idle_stopper/eventbridge.scheduled")
    scheduled["source"] = "aws.scheduler"
    assert event.parse(scheduled).id == scheduled["id"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"source": "aws.ec2"}, "expected a scheduled event"),
        ({"detail-type": "EC2 Instance State-change Notification"}, "expected a scheduled event"),
        ({"id": 7}, "event.id is int"),
        ({"time": "yesterday"}, "not an ISO 8601 time"),
    ],
)
def test_anything_else_is_a_bad_event(
    load_event: Callable[[str], dict[str, Any]], change: dict[str, Any], reason: str
) -> None:
    scheduled = {**load_event("idle_stopper/eventbridge.scheduled"), **change}
    with pytest.raises(BadEvent, match=reason):
        event.parse(scheduled)


def test_the_state_change_sample_is_not_a_run(load_event: Callable[[str], dict[str, Any]]) -> None:
    with pytest.raises(BadEvent, match="expected a scheduled event"):
        event.parse(load_event("idle_stopper/eventbridge.not_scheduled"))
