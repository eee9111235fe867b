"""Retries and duplicate events are harmless: every automation invoked twice with the same
event does its work once - one after the other (a retry) and at the same time (a duplicate
delivery, two threads) - and mails once. Every automation under functions/ is covered
(its tests/<name>/scenario.py)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from autopilot.recorder import CallRecorder
from reliability.faults import FaultInjector
from reliability.scenarios import BUILDERS, NAMES, Ctx, Scenario

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# A second delivery of an event already handled makes one write: the runner's claim attempt
# (a conditional PutItem that fails), which is how it learns the event was handled.
CLAIM_ATTEMPT = {"dynamodb.PutItem"}


def _build(name: str, ctx: Ctx) -> Scenario:
    scenario = BUILDERS[name](ctx)
    FaultInjector(fakes=scenario.fakes).install(ctx.monkeypatch)  # no faults: SSM answers moto lacks
    return scenario


def _mutations(calls: CallRecorder) -> list[str]:
    return [f"{c.service}.{c.operation}" for c in calls.mutating()]


@pytest.mark.parametrize("name", NAMES)
def test_the_same_event_twice_does_the_work_once(name: str, ctx: Ctx) -> None:
    scenario = _build(name, ctx)
    scenario.invoke()
    scenario.verify()
    mails = len(scenario.mails())
    assert mails == scenario.expected_mails
    if "settle" in scenario.extra:
        scenario.extra["settle"]()  # as in AWS, a retry soon after finds this run's snapshots pending
    with CallRecorder() as again:
        scenario.invoke()
    scenario.verify()
    assert len(scenario.mails()) == mails, "the second run mailed again"
    assert set(_mutations(again)) <= CLAIM_ATTEMPT, _mutations(again)


@pytest.mark.parametrize("name", NAMES)
def test_two_concurrent_deliveries_do_the_work_once(name: str, ctx: Ctx) -> None:
    scenario = _build(name, ctx)
    results: list[Any] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def run() -> None:
        start.wait()
        try:
            results.append(scenario.invoke())
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    with CallRecorder() as calls:
        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert not errors, errors
    scenario.verify()
    mails = scenario.mails()
    assert len(mails) == scenario.expected_mails, [m["subject"] for m in mails]
    scenario.check_concurrent(calls, mails)
