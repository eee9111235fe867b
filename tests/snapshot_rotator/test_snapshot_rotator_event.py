"""The trigger (event.py): the scheduled event, and anything else turned down."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from autopilot.events import BadEvent
from snapshot_rotator.event import parse

pytestmark = pytest.mark.unit


def test_the_sample_scheduled_event(load_event: Callable[[str], dict[str, Any]]) -> None:
    trigger = parse(load_event("snapshot_rotator/eventbridge.scheduled"))
    assert trigger.id == "3b5c6f0e-7c1a-4a8e-9d0b-2f1e8c7a6d54" and trigger.account == "123456789012"


@pytest.mark.parametrize(
    "event",
    [{"not": "an event"}, [], {"source": "aws.events", "detail-type": "Scheduled Event"}],
)
def test_anything_else_is_a_bad_event(event: Any, load_event: Callable[[str], dict[str, Any]]) -> None:
    with pytest.raises(BadEvent):
        parse(event)
    with pytest.raises(BadEvent, match="scheduled event"):
        parse(load_event("snapshot_rotator/eventbridge.malformed_not_scheduled"))
