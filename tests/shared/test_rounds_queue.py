"""Rounds in the runner (autopilot.runner, autopilot.outbox): a plan larger than one invocation
queues the intents of its next rounds before anything acts, each round takes the next one
(without planning again), what a round did not reach goes back to its place in the queue with
its result, and nothing is lost or done twice - across a killed round, two rounds at once, a
new run, stale queued work and a dry run. On a toy automation against moto."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import boto3
import pytest
from aws_lambda_powertools import Logger, Metrics

from autopilot import outbox as outbox_module
from autopilot import runner
from autopilot.events import parse_scheduled
from autopilot.outbox import QUEUED_KEEPS_SECONDS, Mail, Outbox
from autopilot.recorder import CallRecorder
from autopilot.runner import Automation, Context, Counts, Plan, Run
from conftest import REGION, FakeContext, continuation, ec2_tags

pytestmark = pytest.mark.integration

logger = Logger(service="toy")
metrics = Metrics(namespace="OpsAutopilot", service="toy")
PER_ROUND = 2  # volumes one plan intent holds


class Rounds:
    """Tags volumes Seen=yes, two per intent; ``per_act`` limits how many one act reaches (its
    "time"), ``kill_after`` makes an act die after that many tags."""

    def __init__(self, volumes: list[str]) -> None:
        self.volumes = volumes
        self.tagged: Counter[str] = Counter()  # CreateTags per volume: each exactly once
        self.plans = 0
        self.per_act: int | None = None
        self.kill_after: int | None = None

    def plan(self, run: Run[None, Any]) -> Plan:
        self.plans += 1
        todo = [v for v in self.volumes if self.tagged[v] == 0]
        chunks = [{"volumes": todo[n : n + PER_ROUND]} for n in range(0, len(todo), PER_ROUND)]
        if not chunks:
            return Plan(None, Counts(checked=len(self.volumes)))
        return Plan(chunks[0], Counts(checked=len(self.volumes)), later=chunks[1:])

    def act(self, ctx: Context[None], intent: Mapping[str, Any]) -> dict[str, Any]:
        done, left = [], []
        for n, volume in enumerate(intent["volumes"]):
            if self.kill_after is not None and n == self.kill_after:
                raise RuntimeError("killed")
            if self.per_act is not None and len(done) >= self.per_act:
                left.append(volume)
                continue
            if ctx.resumed and ec2_tags(volume).get("Seen"):
                done.append(volume)  # the killed attempt did it: not again
                continue
            boto3.client("ec2", region_name=REGION).create_tags(
                Resources=[volume], Tags=[{"Key": "Seen", "Value": "yes"}]
            )
            self.tagged[volume] += 1
            done.append(volume)
        return {"tagged": done, "left": left, "dry_run": ctx.dry_run}

    def report(self, ctx: Context[None], intent: Mapping[str, Any], result: Mapping[str, Any]) -> Mail | None:
        return None

    def counts(self, intent: Mapping[str, Any], result: Mapping[str, Any]) -> Counts:
        return Counts(changed=len(result["tagged"]))

    def rest(self, intent: Mapping[str, Any], result: Mapping[str, Any]) -> Mapping[str, Any] | None:
        return {"volumes": result["left"]} if result["left"] else None

    def automation(self) -> Automation[None, Any]:
        return Automation(
            "toy",
            parse_scheduled,
            lambda: None,
            self.plan,
            self.act,
            self.report,
            self.counts,
            rest=self.rest,
        )


@pytest.fixture
def toy(stack_env: dict[str, str], rounds_machine: str) -> Rounds:
    ec2 = boto3.client("ec2", region_name=REGION)
    volumes = [ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=1)["VolumeId"] for _ in range(7)]
    return Rounds(volumes)


def _scheduled(load_event: Any, n: int = 0) -> dict[str, Any]:
    event: dict[str, Any] = load_event("idle_stopper/eventbridge.scheduled")
    event["id"] = f"00000000-0000-0000-0000-{n:012d}"
    return event


def _round(n: int, execution: str = "toy-run") -> dict[str, Any]:
    return continuation(execution, n, "toy")


def _invoke(toy: Rounds, event: dict[str, Any], request: str) -> dict[str, Any]:
    context = FakeContext()
    context.aws_request_id = request  # type: ignore[misc]
    return runner.handle(toy.automation(), event, context, logger, metrics)


def _outbox() -> Outbox:
    import os

    return Outbox(os.environ["OUTBOX_TABLE"], "toy")


def _queued() -> list[dict[str, Any]]:
    box = _outbox()
    list(box.unfinished())
    return [outbox_module._unpack(q.data)["intent"] for q in box.queued or []]


def _all_rounds(toy: Rounds, first: dict[str, Any]) -> int:
    rounds, result = 0, first
    while result["more"]:
        rounds += 1
        assert rounds <= 20, "the rounds do not converge"
        result = _invoke(toy, _round(rounds), f"round-{rounds}")
    return rounds


def test_the_rounds_do_the_queued_work_once_without_planning_again(toy: Rounds, load_event: Any) -> None:
    first = _invoke(toy, _scheduled(load_event), "r1")
    assert first["more"] is True and first["Changed"] == PER_ROUND
    assert _queued() == [{"volumes": toy.volumes[n : n + 2]} for n in (2, 4, 6)]
    assert _all_rounds(toy, first) == 3
    assert toy.plans == 1, "a round planned again"
    assert dict(toy.tagged) == dict.fromkeys(toy.volumes, 1)
    assert _queued() == [] and list(_outbox().unfinished()) == []


def test_what_a_round_did_not_reach_is_taken_by_the_next_round_first(toy: Rounds, load_event: Any) -> None:
    toy.per_act = 1  # each act reaches one of its two volumes
    first = _invoke(toy, _scheduled(load_event), "r1")
    assert _queued()[0] == {"volumes": [toy.volumes[1]]}, "the rest goes back in front of the queue"
    _all_rounds(toy, first)
    assert dict(toy.tagged) == dict.fromkeys(toy.volumes, 1)
    assert _queued() == []


def test_a_round_killed_while_acting_is_finished_by_the_next_and_nothing_is_done_twice(
    toy: Rounds, load_event: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _invoke(toy, _scheduled(load_event), "r1")
    toy.kill_after = 1
    with pytest.raises(RuntimeError, match="killed"):
        _invoke(toy, _round(1), "round-1")
    toy.kill_after = None
    assert [e.status for e in _outbox().unfinished()] == ["acting"], "the taken intent was recorded"
    assert len(_queued()) == 2, "the killed round's intent is not in the queue twice"
    result = _invoke(toy, _round(1), "round-1-retry")  # Step Functions' retry of the round
    rounds = _all_rounds(toy, result)
    assert rounds <= 2 and first["more"]
    assert dict(toy.tagged) == dict.fromkeys(toy.volumes, 1)
    assert _queued() == [] and list(_outbox().unfinished()) == []


def test_two_rounds_at_once_never_take_the_same_work(toy: Rounds, load_event: Any) -> None:
    _invoke(toy, _scheduled(load_event), "r1")
    barrier = threading.Barrier(3)

    def deliver(n: int) -> None:
        barrier.wait()
        _invoke(toy, _round(1, f"forged-{n}"), f"round-{n}")

    threads = [threading.Thread(target=deliver, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert dict(toy.tagged) == dict.fromkeys(toy.volumes, 1), toy.tagged
    assert _queued() == []


def test_a_new_run_supersedes_what_an_earlier_run_left_queued(toy: Rounds, load_event: Any) -> None:
    _invoke(toy, _scheduled(load_event, 1), "r1")  # its rounds never ran (the machine failed)
    assert len(_queued()) == 3
    toy.volumes = toy.volumes[:6]  # the next run sees less to do
    second = _invoke(toy, _scheduled(load_event, 2), "r2")
    assert _queued() == [{"volumes": toy.volumes[4:6]}], "the earlier run's queue was replaced"
    _all_rounds(toy, second)
    assert dict(toy.tagged) == dict.fromkeys(toy.volumes, 1)


def test_queued_work_older_than_a_run_of_rounds_is_dropped_not_done(toy: Rounds, load_event: Any) -> None:
    _invoke(toy, _scheduled(load_event), "r1")
    box = _outbox()
    list(box.unfinished())
    long_ago = f"{time.time() - QUEUED_KEEPS_SECONDS - 60:.3f}"
    for queued in box.queued or []:  # the rounds stopped long ago
        boto3.client("dynamodb", region_name=REGION).update_item(
            TableName=box.table,
            Key={"pk": {"S": "outbox#toy"}, "sk": {"S": queued.sk}},
            UpdateExpression="SET created_at = :then",
            ExpressionAttributeValues={":then": {"N": long_ago}},
        )
    result = _invoke(toy, _round(1), "round-1")  # forged, or a machine restarted by hand
    assert result["more"] is False and result["Changed"] == 0
    assert toy.tagged.total() == PER_ROUND, "stale queued work was done"
    assert _queued() == []


def test_a_round_with_nothing_queued_changes_nothing(toy: Rounds, calls: CallRecorder) -> None:
    result = _invoke(toy, _round(1, "forged"), "round-1")
    assert result["status"] == "done" and result["more"] is False
    assert toy.plans == 0 and calls.count("ec2") == 0


def test_a_dry_run_queues_nothing_and_starts_no_rounds(
    toy: Rounds, load_event: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRY_RUN", "true")
    first = _invoke(toy, _scheduled(load_event), "r1")
    assert first["more"] is False and _queued() == []
    sfn = boto3.client("stepfunctions", region_name=REGION)
    machine = sfn.list_state_machines()["stateMachines"][0]["stateMachineArn"]
    assert sfn.list_executions(stateMachineArn=machine)["executions"] == []
