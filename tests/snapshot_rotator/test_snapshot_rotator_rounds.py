"""Rounds: a run with more work than one invocation (more than one outbox item holds, or than
its time allows) queues the rest as the intents of its next rounds and starts the stack's state
machine, which invokes the function again at once with continuation events, each taking the
next queued intent, until none is left. Before, the rest waited for the next day, and at 3,000
volumes the backlog grew every day (issue 16). Against moto: the real handler, the real runner,
moto's Step Functions."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

import conftest
from autopilot import runner
from autopilot.recorder import CallRecorder
from conftest import REGION, FakeContext
from snapshot_rotator import run

pytestmark = pytest.mark.integration

Mailbox = Callable[[], list[dict[str, Any]]]
VOLUMES = 6


def invoke(event: dict[str, Any], request: str = "r1") -> dict[str, Any]:
    from snapshot_rotator.app import lambda_handler

    context = FakeContext()
    context.aws_request_id = request  # type: ignore[misc]
    result: dict[str, Any] = lambda_handler(event, context)
    return result


def continuation(execution: str, round_: int, automation: str = "snapshot_rotator") -> dict[str, Any]:
    return conftest.continuation(execution, round_, automation)


@pytest.fixture
def machine(rounds_machine: str) -> str:
    return rounds_machine


@pytest.fixture
def big(fleet: Any, rotator_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Six opted-in volumes with five daily backups each (keep 2), and an outbox budget that
    holds the plan of about two volumes: one run cannot do it all."""
    monkeypatch.setenv("KEEP_NEWEST", "2")
    now = datetime.now(UTC)
    from datetime import timedelta

    vols = sorted(fleet.volume({"Backup": "true"}) for _ in range(VOLUMES))
    for vol in vols:
        for day in range(1, 6):
            fleet.snapshot(vol, now - timedelta(days=day))
    monkeypatch.setattr(run, "INTENT_BUDGET", 700)
    return vols


def executions(arn: str) -> list[dict[str, Any]]:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    found = sfn.list_executions(stateMachineArn=arn)["executions"]
    return [sfn.describe_execution(executionArn=e["executionArn"]) for e in found]


def test_a_run_too_large_for_one_item_continues_in_rounds_until_all_is_done(
    big: list[str], machine: str, fleet: Any, load_event: Any, mailbox: Mailbox, calls: CallRecorder
) -> None:
    scheduled = load_event("snapshot_rotator/eventbridge.scheduled")
    first = invoke(scheduled)
    assert first["more"] is True and first["LeftForNextRun"] > 0, first
    (execution,) = executions(machine)
    assert execution["name"] == f"snapshot_rotator-{scheduled['id']}"
    assert json.loads(execution["input"]) == {
        "automation": "snapshot_rotator",
        "account": scheduled["account"],
        "region": scheduled["region"],
        "round": 1,
    }
    assert mailbox() == [], "work that continues at once is not a warning mail"
    listed = {op: calls.count("ec2", op) for op in ("DescribeSnapshots", "DescribeVolumes", "DescribeImages")}
    rounds = 0
    result = first
    while result["more"]:
        rounds += 1
        assert rounds <= 10, "the rounds do not converge"
        result = invoke(continuation(execution["name"], rounds), f"r{rounds + 1}")
        assert result["status"] == "done"
    assert rounds >= 2
    assert {op: calls.count("ec2", op) for op in listed} == listed, "a round listed again: it takes the queue"
    creates = [p["VolumeId"] for p in calls.of("ec2", "CreateSnapshot")]
    assert sorted(creates) == big, "every volume snapshotted exactly once over the rounds"
    for vol in big:
        assert len(fleet.snapshots(vol)) == 2 + 1, f"{vol}: retention not finished by the rounds"
    assert len(executions(machine)) == 1, "a round started another machine"
    assert mailbox() == []


def test_a_retried_delivery_starts_no_second_machine(
    big: list[str], machine: str, load_event: Any, calls: CallRecorder
) -> None:
    scheduled = load_event("snapshot_rotator/eventbridge.scheduled")
    invoke(scheduled)
    assert runner._start_rounds(
        "snapshot_rotator", runner.ScheduledRun(scheduled["id"], datetime.now(UTC), "1", REGION), _Log()
    )
    assert len(executions(machine)) == 1


def test_without_a_machine_the_rest_waits_for_the_next_run_and_says_so(
    big: list[str], rotator_env: dict[str, str], load_event: Any, mailbox: Mailbox
) -> None:
    result = invoke(load_event("snapshot_rotator/eventbridge.scheduled"))
    assert result["more"] is True and result["Failed"] == 1
    (mail,) = mailbox()
    assert "Left for the next run" in mail["body"] and mail["attributes"]["severity"] == "warning"


@pytest.mark.parametrize(
    ("detail", "why"),
    [
        ({"automation": "idle_stopper", "round": 1}, "continuation of 'idle_stopper'"),
        ({"automation": "snapshot_rotator", "round": 0}, "a round is 1-48"),
        ({"automation": "snapshot_rotator", "round": True}, "a round is 1-48"),
        ({"automation": "snapshot_rotator"}, "has no 'round'"),
    ],
)
def test_a_malformed_continuation_changes_nothing(
    big: list[str], machine: str, detail: dict[str, Any], why: str, calls: CallRecorder
) -> None:
    event = {**continuation("x", 1), "detail": detail}
    result = invoke(event)
    assert result["status"] == "ignored" and why in result["reason"]
    assert calls.count("ec2") == 0


def test_an_automation_without_rounds_refuses_a_continuation(
    stack_env: dict[str, str], calls: CallRecorder
) -> None:
    from idle_stopper.app import lambda_handler

    result = lambda_handler(continuation("x", 1, "idle_stopper"), FakeContext())
    assert result["status"] == "ignored" and "scheduled event" in result["reason"]
    assert calls.count("ec2") == 0


def test_mutating_calls_are_paced_at_the_refill_rate(
    fleet: Any, make_context: Any, _paced_on_a_simulated_clock: list[float]
) -> None:
    """300 expired snapshots: EC2's DeleteSnapshot bucket (burst 200, refill 5/s; the pacer
    assumes it empty at the start: the round before may have emptied it) makes the run wait
    300 / 5 = 60 s, on the simulated clock, instead of being refused and retried; the 3 creates
    go on their own bucket, between the deletions, and add no time of their own."""
    from datetime import timedelta

    vols = [fleet.volume({"Backup": "true"}) for _ in range(3)]
    for vol in vols:
        for day in range(1, 102):
            fleet.snapshot(vol, datetime(2026, 11, 23, 3, 0, tzinfo=UTC) - timedelta(days=day))
    ctx = make_context(keep_newest=1, seconds=900)
    plan = run.plan(ctx)
    assert plan.intent is not None and len(plan.intent["delete"]) == 300
    result = run.act(ctx, plan.intent)
    assert len(result["deleted"]) == 300
    assert result["paced_seconds"] == pytest.approx(300 / 5, abs=0.5)
    assert _paced_on_a_simulated_clock[0] == pytest.approx(60, abs=0.5)


class _Log:
    def info(self, *_: Any, **__: Any) -> None: ...

    def warning(self, *_: Any, **__: Any) -> None: ...

    def error(self, *_: Any, **__: Any) -> None: ...
