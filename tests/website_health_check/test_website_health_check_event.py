"""event.py: the schedule's event is the only trigger; anything else changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from autopilot.events import BadEvent
from autopilot.recorder import CallRecorder
from conftest import FakeContext
from website_health_check import app, event

Load = Callable[..., dict[str, Any]]


@pytest.mark.unit
def test_the_scheduled_sample_parses_into_its_run(load_event: Load) -> None:
    run = event.parse(load_event("website_health_check/eventbridge.scheduled", as_delivered_now=False))
    assert run.id == "89d1a02d-5ec7-412e-82f5-13505f849b41"
    assert run.time == datetime(2026, 11, 23, 10, 5, tzinfo=UTC)
    assert (run.account, run.region) == ("123456789012", "eu-west-1")


@pytest.mark.unit
@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"source": "aws.ec2"}, "expected a scheduled event"),
        ({"detail-type": "Object Created"}, "expected a scheduled event"),
        ({"time": "yesterday"}, "not an ISO 8601 time"),
        ({"id": 7}, "event.id is int"),
    ],
)
def test_anything_but_a_schedule_is_a_bad_event(
    load_event: Load, change: dict[str, Any], reason: str
) -> None:
    with pytest.raises(BadEvent, match=reason):
        event.parse({**load_event("website_health_check/eventbridge.scheduled"), **change})


@pytest.mark.integration
def test_malformed_event_changes_nothing(health_env: dict[str, str], calls: CallRecorder) -> None:
    result = app.lambda_handler({"detail-type": "Scheduled Event"}, FakeContext())  # type: ignore[arg-type]
    assert result["status"] == "ignored" and "source" in result["reason"]
    assert calls.calls == []


@pytest.mark.integration
def test_an_event_of_another_kind_is_ignored(
    health_env: dict[str, str], load_event: Load, calls: CallRecorder
) -> None:
    sample = load_event("website_health_check/eventbridge.not_a_schedule")
    assert app.lambda_handler(sample, FakeContext())["status"] == "ignored"  # type: ignore[arg-type]
    assert calls.calls == []


@pytest.mark.integration
def test_another_accounts_schedule_is_ignored(
    health_env: dict[str, str], load_event: Load, calls: CallRecorder
) -> None:
    sample = {**load_event("website_health_check/eventbridge.scheduled"), "account": "999988887777"}
    result = app.lambda_handler(sample, FakeContext())  # type: ignore[arg-type]
    assert result["status"] == "ignored" and "999988887777" in result["reason"]
    assert calls.calls == []
