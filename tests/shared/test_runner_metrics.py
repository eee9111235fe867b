"""What the runner sends as metrics (autopilot.runner._emit), with a toy automation against
moto: only what an alarm or the dashboard reads (the four, and the automation's
``Automation.metrics``), zeros left out - but Checked, which every run that got to its end
sends even at zero: its samples are the runs completed that the silence alarm counts, so a run
that found nothing to check still tells the alarm it ran, and nothing else does."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from autopilot import runner
from autopilot.events import parse_scheduled
from autopilot.runner import Automation, Context, Counts, Plan, Run
from conftest import FakeContext

pytestmark = pytest.mark.integration


class Log:
    def info(self, message: str, extra: Mapping[str, Any] | None = None) -> None:
        pass

    warning = error = exception = info


class Recording:
    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def add_metric(self, name: str, unit: Any, value: Any) -> None:
        self.seen.append((name, value))


def toy(counts: Counts, metrics: frozenset[str] = frozenset(), always: frozenset[str] = frozenset()) -> Any:
    def plan(run: Run[Any, Any]) -> Plan:
        return Plan(None, counts, [])

    def act(ctx: Context[Any], intent: Mapping[str, Any]) -> dict[str, Any]:
        raise AssertionError("nothing to act on")

    return Automation(
        "toy", parse_scheduled, lambda: {}, plan, act, lambda *_: None, lambda *_: Counts(),
        metrics=metrics, always_sent=always,
    )  # fmt: skip


def invoke(automation: Any, event: dict[str, Any]) -> list[tuple[str, Any]]:
    recording = Recording()
    context = FakeContext()
    context.aws_request_id = "req-metrics"  # type: ignore[misc]
    runner.handle(automation, event, context, Log(), recording)
    return recording.seen


@pytest.fixture
def event(load_event: Any, stack_env: dict[str, str]) -> dict[str, Any]:
    event: dict[str, Any] = load_event("idle_stopper/eventbridge.scheduled")
    event["id"] = "00000000-0000-0000-0000-000000000077"
    return event


def test_a_run_that_found_nothing_sends_checked_zero_and_nothing_else(event: dict[str, Any]) -> None:
    assert invoke(toy(Counts()), event) == [("Checked", 0)]


def test_a_duplicate_delivery_is_no_run_and_sends_no_checked(event: dict[str, Any]) -> None:
    automation = toy(Counts())
    assert invoke(automation, event) == [("Checked", 0)]
    assert invoke(automation, dict(event)) == []  # the same event again: no sample, no run


def test_only_the_automations_named_numbers_are_sent_the_rest_are_logged(event: dict[str, Any]) -> None:
    counts = Counts(checked=3, skipped=1, extra={"Watched": 2, "Unread": 5, "Quiet": 0, "Kept": 0})
    seen = invoke(toy(counts, frozenset({"Watched", "Quiet", "Kept"}), frozenset({"Kept"})), event)
    assert seen == [("Checked", 3), ("Skipped", 1), ("Watched", 2), ("Kept", 0)]
