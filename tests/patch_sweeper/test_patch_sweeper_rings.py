"""Rings across invocations: a 3-ring sweep driven by the schedule, SSM's status events and the
hourly tick on a simulated clock; a failed ring halts the sweep; a ring whose last status never
comes is closed by the timeout ("no result"); a change freeze holds the next ring back.

The real handler; EC2, DynamoDB and SNS are moto's; SSM is tests/patch_sweeper/ring_fleet.py."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from patch_sweeper import app, store
from tests.patch_sweeper.ring_fleet import Fleet, install
from tests.patch_sweeper.test_patch_sweeper_handler import (
    TABLE,
    Mailbox,
    env,  # noqa: F401  (fixture)
    launch,
)

pytestmark = pytest.mark.integration

SUNDAY = datetime(2026, 11, 22, 3, 0, 30, tzinfo=UTC)  # the weekly schedule's time


@pytest.fixture
def rings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:  # noqa: F811
    """Ring 0: 2 canaries; ring 1: 3; ring 2: 1 tagged, 3 untagged, 1 with a bad tag (-> last)."""
    monkeypatch.setenv("PATCH_RING_SOAK_HOURS", "24")
    monkeypatch.setenv("PATCH_SWEEP_TIMEOUT_HOURS", "8")
    monkeypatch.setenv("PATCH_RING_SUCCESS_PERCENT", "100")
    return {
        "0": sorted(launch(2, {"PatchRing": "0", "Owner": "canary@example.com"})),
        "1": sorted(launch(3, {"PatchRing": "1", "Owner": "web@example.com"})),
        "2": sorted(
            launch(1, {"PatchRing": "2"})
            + launch(3, {"Owner": "db@example.com"})
            + launch(1, {"PatchRing": "last-please"})
        ),
    }


@pytest.fixture
def fleet(rings: dict[str, list[str]], monkeypatch: pytest.MonkeyPatch) -> Fleet:
    return install(monkeypatch, Fleet(online=[i for ids in rings.values() for i in ids], now=SUNDAY))


def deliver(fleet: Fleet, context: Any) -> list[dict[str, Any]]:
    """SSM's final statuses of every command that ended, each delivered once."""
    return [app.lambda_handler(e, context) for e in fleet.finals()]


def tick(fleet: Fleet, context: Any) -> dict[str, Any]:
    result: dict[str, Any] = app.lambda_handler(fleet.tick(), context)
    return result


def sweep(fleet: Fleet) -> Any:
    sweep_id = store.current_sweep(TABLE)
    assert sweep_id is not None
    return store.load_sweep(TABLE, sweep_id)


def test_three_rings_one_after_the_other_each_after_its_soak(
    fleet: Fleet, rings: dict[str, list[str]], mailbox: Mailbox, lambda_context: Any
) -> None:
    app.lambda_handler(fleet.schedule(), lambda_context)
    assert fleet.patched() == rings["0"]  # the canaries only
    deliver(fleet, lambda_context)
    (first,) = mailbox()
    assert first["subject"] == (
        "[ops-autopilot-test] patch sweep ring 0 (1/3) passed, ring 1 next: 2 patched, 0 failed"
    )
    assert (
        "Ring 1 (3 instances) starts after 2026-11-23 03:00 UTC (PatchSweeperRingSoakHours=24)"
        in first["body"]
    )
    assert "Next: ring 1 after 2026-11-23 03:00 UTC (3)" in first["body"]
    assert all(i in first["body"] for i in rings["1"])  # the advance notice names them ...
    assert "owner web@example.com" in first["body"]  # ... with their owner
    assert "PatchRing is not a ring number (1)" in first["body"]
    assert "PatchRing='last-please': patched in the last ring" in first["body"]

    for hours in (1, 12, 23):  # soaking: the ticks look and send nothing
        fleet.at(SUNDAY.replace(hour=3 + hours) if hours < 21 else datetime(2026, 11, 23, 2, 0, tzinfo=UTC))
        tick(fleet, lambda_context)
    assert fleet.patched() == rings["0"] and len(mailbox()) == 1

    # Told, an owner opts one out before its ring; another instance is terminated meanwhile.
    opted, gone = rings["1"][0], rings["2"][0]
    ec2 = boto3.client("ec2", region_name="eu-west-1")
    ec2.create_tags(Resources=[opted], Tags=[{"Key": "AutoPatch", "Value": "false"}])
    ec2.terminate_instances(InstanceIds=[gone])

    fleet.at(datetime(2026, 11, 23, 3, 5, tzinfo=UTC))
    tick(fleet, lambda_context)
    tick(fleet, lambda_context)  # a second tick (or a forged one) at the same time starts it once
    assert fleet.patched() == sorted(rings["0"] + rings["1"][1:])  # not the opted-out one
    assert all("ring 1 1/1" in c for cid, c in fleet.comments.items() if fleet.commands[cid] == rings["1"])
    deliver(fleet, lambda_context)
    assert mailbox()[-1]["subject"].endswith(
        "patch sweep ring 1 (2/3) passed, ring 2 next: 2 patched, 0 failed"
    )

    fleet.at(datetime(2026, 11, 24, 3, 10, tzinfo=UTC))
    tick(fleet, lambda_context)
    assert fleet.patched() == sorted(rings["0"] + rings["1"][1:] + rings["2"][1:])  # each exactly once
    deliver(fleet, lambda_context)
    last = mailbox()[-1]
    assert last["subject"].endswith("patch sweep ring 2 (3/3) done: 4 patched, 0 failed")
    assert "2 of 2 patched in ring 0 (earlier)." in last["body"]
    assert "2 of 2 patched in ring 1 (earlier)." in last["body"]
    assert "1 instance of the ring left out when it started: no longer running, or opted out" in last["body"]
    assert "Ring 2 was the last: the sweep is done." in last["body"]
    assert sweep(fleet).status == "done"
    fleet.later(days=2)
    tick(fleet, lambda_context)
    assert len(mailbox()) == 3 and len(fleet.commands) == 3


def test_a_failed_ring_halts_the_sweep_and_the_next_rings_are_never_sent(
    fleet: Fleet, rings: dict[str, list[str]], mailbox: Mailbox, lambda_context: Any
) -> None:
    fleet.failing.add(rings["0"][1])
    app.lambda_handler(fleet.schedule(), lambda_context)
    deliver(fleet, lambda_context)
    (mail,) = mailbox()
    assert mail["subject"].endswith("patch sweep ring 0 (1/3) HALTED: 1 patched, 1 failed")
    assert (
        "The sweep HALTED: ring 0 fell below PatchSweeperRingSuccessPercent=100, so rings 1, 2 (8 instances)"
        in mail["body"]
    )
    assert rings["0"][1] in mail["body"] and "E: dpkg was interrupted" in mail["body"]  # why
    for day in range(1, 7):  # a week of ticks: nothing more is sent, nothing mailed
        fleet.at(datetime(2026, 11, 22 + day, 4, 0, tzinfo=UTC))
        tick(fleet, lambda_context)
    assert fleet.patched() == rings["0"] and len(mailbox()) == 1
    assert sweep(fleet).status == "halted"


def test_a_ring_whose_last_status_never_comes_is_closed_by_the_timeout_as_no_result(
    fleet: Fleet, rings: dict[str, list[str]], mailbox: Mailbox, lambda_context: Any
) -> None:
    fleet.silent.update(rings["0"])  # the command never ends: no status event
    app.lambda_handler(fleet.schedule(), lambda_context)
    deliver(fleet, lambda_context)
    fleet.at(datetime(2026, 11, 22, 10, 0, tzinfo=UTC))  # 7 hours: still waiting
    assert tick(fleet, lambda_context)["Failed"] == 0 and mailbox() == []
    fleet.at(datetime(2026, 11, 22, 11, 1, tzinfo=UTC))  # 8 hours after the ring started
    result = tick(fleet, lambda_context)
    assert result["NoResult"] == 2 and result["Failed"] == 2
    (mail,) = mailbox()
    assert mail["subject"].endswith("patch sweep ring 0 (1/3) HALTED: 0 patched, 2 failed, 2 no result")
    assert "1 command gave no last status within the timeout (PatchSweeperTimeoutHours)" in mail["body"]
    assert "no result: still InProgress at the timeout" in mail["body"]
    fleet.silent.clear()  # the late status event changes nothing: the ring was judged
    deliver(fleet, lambda_context)
    fleet.later(days=2)
    tick(fleet, lambda_context)
    assert len(mailbox()) == 1 and fleet.patched() == rings["0"]


def test_a_change_freeze_holds_the_next_ring_back_with_one_mail(
    fleet: Fleet,
    rings: dict[str, list[str]],
    mailbox: Mailbox,
    lambda_context: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHANGE_CALENDAR", "freeze-calendar")
    app.lambda_handler(fleet.schedule(), lambda_context)
    deliver(fleet, lambda_context)
    fleet.calendar = "CLOSED"
    for hour in (4, 5, 6):  # the ring is due, the calendar closed: it waits, one mail only
        fleet.at(datetime(2026, 11, 23, hour, 0, tzinfo=UTC))
        result = tick(fleet, lambda_context)
        assert result["SkippedChangeFreeze"] == 3
    assert fleet.patched() == rings["0"]
    mails = mailbox()
    assert len(mails) == 2
    assert mails[1]["subject"].endswith(
        "patch sweep ring 1 waits: change freeze, 3 instances not patched yet"
    )
    assert "Change calendar freeze-calendar is CLOSED" in mails[1]["body"]
    fleet.calendar = "OPEN"
    fleet.at(datetime(2026, 11, 23, 7, 0, tzinfo=UTC))
    tick(fleet, lambda_context)
    assert fleet.patched() == sorted(rings["0"] + rings["1"])


def test_a_tick_with_no_sweep_reads_one_item_and_changes_nothing(
    fleet: Fleet, mailbox: Mailbox, lambda_context: Any
) -> None:
    from autopilot.recorder import CallRecorder

    with CallRecorder() as calls:
        result = tick(fleet, lambda_context)
    assert result["status"] == "done" and fleet.commands == {} and mailbox() == []
    assert calls.count("dynamodb", "GetItem") == 1 and calls.count("ssm", "SendCommand") == 0


def test_a_dry_run_says_the_rings_in_order_and_stores_nothing(
    fleet: Fleet, mailbox: Mailbox, lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRY_RUN", "true")
    app.lambda_handler(fleet.schedule(), lambda_context)
    (mail,) = mailbox()
    assert (
        "In 3 rings (PatchRing), one after the other: ring 0 (2 instances), then ring 1 (3 instances), "
        "then ring 2 (5 instances)." in mail["body"]
    )
    assert fleet.commands == {} and store.current_sweep(TABLE) is None


class Metrics:
    """Stands for Powertools' Metrics: what the runner adds."""

    def __init__(self) -> None:
        self.added: list[tuple[str, float]] = []

    def add_metric(self, name: str, unit: Any, value: float) -> None:
        self.added.append((name, value))


def test_the_hourly_tick_does_not_count_as_a_run_for_the_silence_alarm(
    fleet: Fleet, mailbox: Mailbox, lambda_context: Any
) -> None:
    """PatchSweeperSilenceAlarm counts the runs completed (Checked's samples): a tick every hour
    must not keep it quiet when the weekly sweep stopped running."""
    from autopilot import runner

    tick_metrics, sweep_metrics = Metrics(), Metrics()
    runner.handle(app.AUTOMATION, fleet.tick(), lambda_context, app.logger, tick_metrics)
    assert "Checked" not in [name for name, _ in tick_metrics.added]
    runner.handle(app.AUTOMATION, fleet.schedule(), lambda_context, app.logger, sweep_metrics)
    assert ("Checked", 10) in sweep_metrics.added


def test_a_new_weekly_sweep_replaces_an_unfinished_one_and_says_so(
    fleet: Fleet, rings: dict[str, list[str]], mailbox: Mailbox, lambda_context: Any
) -> None:
    app.lambda_handler(fleet.schedule(), lambda_context)
    deliver(fleet, lambda_context)  # ring 0 passed; ring 1 soaks ...
    fleet.at(datetime(2026, 11, 29, 3, 0, 30, tzinfo=UTC))  # ... and a week later nobody started it
    next_week = {**fleet.schedule(), "id": "7b1d2f0e-9c8a-4e6b-a5d4-3c2b1a0f9e8d"}
    app.lambda_handler(next_week, lambda_context)
    deliver(fleet, lambda_context)
    mail = mailbox()[-1]
    assert (
        "This sweep replaced an unfinished one: the previous sweep (started 2026-11-22 03:00 UTC) was "
        "still soaking after ring 0 of 3" in mail["body"]
    )
    fleet.at(datetime(2026, 11, 30, 3, 10, tzinfo=UTC))
    tick(fleet, lambda_context)  # the new sweep's ring 1, once; the old one's never
    assert fleet.patched().count(rings["1"][0]) == 1


def test_a_ring_due_after_the_stack_went_dry_run_sends_nothing(
    fleet: Fleet,
    rings: dict[str, list[str]],
    mailbox: Mailbox,
    lambda_context: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PRODUCT.md rule 3 on the ring start: DryRun=true between two rings changes nothing."""
    app.lambda_handler(fleet.schedule(), lambda_context)
    deliver(fleet, lambda_context)
    monkeypatch.setenv("DRY_RUN", "true")
    fleet.at(datetime(2026, 11, 23, 3, 5, tzinfo=UTC))
    tick(fleet, lambda_context)
    assert fleet.patched() == rings["0"] and sweep(fleet).ring_index == 0 and len(mailbox()) == 1
