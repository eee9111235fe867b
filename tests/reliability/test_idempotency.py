"""Retries and duplicate events are harmless: every automation invoked twice with the same
event does its work once - one after the other (a retry) and at the same time (a duplicate
delivery, two threads) - and mails once."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from autopilot.recorder import CallRecorder
from reliability.faults import FaultInjector
from reliability.scenarios import BUILDERS, NAMES, Ctx, Scenario


def _build(name: str, ctx: Ctx) -> Scenario:
    scenario = BUILDERS[name](ctx)
    FaultInjector(fakes=scenario.fakes).install(ctx.monkeypatch)  # no faults: SSM answers moto lacks
    return scenario


pytestmark = [pytest.mark.integration, pytest.mark.slow]


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
    # the second run only reads (patch_sweeper's DynamoDB claims are conditional writes that fail)
    allowed = {"dynamodb.PutItem", "dynamodb.UpdateItem"} if name == "patch_sweeper" else set()
    assert set(_mutations(again)) <= allowed, _mutations(again)


CONCURRENT = [
    pytest.param(
        name,
        marks=pytest.mark.xfail(
            strict=True,
            reason="known gap: two runs at the same instant both snapshot (no lock: the rotator keeps "
            "no state table and CreateSnapshot(s) takes no idempotency token). A retry after a "
            "failure is safe (previous test); only simultaneous duplicate deliveries are not.",
        ),
    )
    if name == "snapshot_rotator"
    else name
    for name in NAMES
]


@pytest.mark.parametrize("name", CONCURRENT)
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
    if name == "website_health_check":
        # each run mails the sites whose state change it won (conditional writes): every
        # change is mailed exactly once, possibly split over the two runs' digests
        for url in scenario.resources[1:]:
            assert sum(url in m["subject"] + m["body"] for m in mails) == 1, url
    else:
        assert len(mails) == scenario.expected_mails
    counts = calls.by_operation()
    if name == "patch_sweeper":
        assert counts["ssm.SendCommand"] == 1
    if name == "snapshot_rotator":
        assert counts["ec2.CreateSnapshot"] == len(scenario.resources)
    if name == "idle_stopper":
        stopped = [i for p in calls.of("ec2", "StopInstances") for i in p["InstanceIds"]]
        assert sorted(set(stopped)) == sorted(scenario.resources)
