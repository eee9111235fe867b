"""Memory in the runner (autopilot.runner, autopilot.outbox): what one run's plan remembers
(``Plan.memory``), the next run's plan gets (``Run.memory``); it is read by the runner's one
unfinished-work Query (no read of its own), written only when it changed, spread over as many
items as it needs, and never taken for unfinished or queued work. On a toy automation against
moto."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import pytest
from aws_lambda_powertools import Logger, Metrics

from autopilot import outbox as outbox_module
from autopilot import runner
from autopilot.events import parse_scheduled
from autopilot.outbox import Outbox
from autopilot.recorder import CallRecorder
from autopilot.runner import Automation, Context, Counts, Plan, Run
from conftest import FakeContext

pytestmark = pytest.mark.integration

logger = Logger(service="memo")
metrics = Metrics(namespace="OpsAutopilot", service="memo")


class Remembering:
    """A plan that remembers ``self.next`` and records what each run was given."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.next: Mapping[str, Any] | None = None

    def plan(self, run: Run[None, Any]) -> Plan:
        self.seen.append(dict(run.memory))
        return Plan({"at": "now"}, Counts(checked=1), memory=self.next)

    def automation(self) -> Automation[None, Any]:
        def act(ctx: Context[None], intent: Mapping[str, Any]) -> dict[str, Any]:
            return {}

        return Automation(
            "memo", parse_scheduled, lambda: None, self.plan, act, lambda *_: None, lambda *_: Counts()
        )


def _invoke(toy: Remembering, load_event: Any, n: int) -> dict[str, Any]:
    event: dict[str, Any] = load_event("idle_stopper/eventbridge.scheduled")
    event["id"] = f"00000000-0000-0000-0000-{n:012d}"
    context = FakeContext()
    context.aws_request_id = f"r{n}"  # type: ignore[misc]
    return runner.handle(toy.automation(), event, context, logger, metrics)


def _box() -> Outbox:
    box = Outbox(os.environ["OUTBOX_TABLE"], "memo")
    assert list(box.unfinished()) == [], "memory is never unfinished work"
    assert box.queued == [], "memory is never queued work"
    return box


def test_the_next_run_gets_what_the_last_one_remembered(stack_env: dict[str, str], load_event: Any) -> None:
    toy = Remembering()
    toy.next = {"i-1": 100, "i-2": [1, 2]}
    _invoke(toy, load_event, 1)
    toy.next = None  # keeps it
    _invoke(toy, load_event, 2)
    toy.next = {"i-2": [3]}
    _invoke(toy, load_event, 3)
    _invoke(toy, load_event, 4)
    assert toy.seen == [{}, {"i-1": 100, "i-2": [1, 2]}, {"i-1": 100, "i-2": [1, 2]}, {"i-2": [3]}]


def test_a_dry_run_remembers_too(
    stack_env: dict[str, str], load_event: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRY_RUN", "true")
    toy = Remembering()
    toy.next = {"i-1": 1}
    _invoke(toy, load_event, 1)
    _invoke(toy, load_event, 2)
    assert toy.seen[1] == {"i-1": 1}, "what was seen is memory, not an action"


def test_only_what_changed_is_written(stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox_module, "MEMO_ITEM_BYTES", 26)  # '"i-0":0' is 8 bytes: 3 an item
    box = _box()
    memory = {f"i-{n}": n for n in range(7)}  # 3 items: i-0 i-1 i-2 | i-3 i-4 i-5 | i-6
    assert box.remember(memory) == 3
    box = _box()
    assert box.memory == memory, "read back whole by the unfinished-work Query"
    with CallRecorder() as calls:
        assert box.remember(memory) == 0
    assert calls.by_operation() == {}, "unchanged memory costs no call"
    assert box.remember({**memory, "i-4": 9}) == 1, "one key changed: its item only"
    assert _box().memory == {**memory, "i-4": 9}
    assert box.remember({f"i-{n}": n for n in range(2)}) == 3, "one item rewritten, two deleted"
    assert _box().memory == {"i-0": 0, "i-1": 1}
    assert box.remember({}) == 1
    assert _box().memory == {}


def test_memory_is_kept_beside_unfinished_and_queued_work(stack_env: dict[str, str]) -> None:
    box = _box()
    box.remember({"i-1": 1})
    entry = box.record("run", {"x": 1}, lease_until=0.0)  # a run that died at once
    box.queue(box.slots("run", 2)[1:], [{"y": 2}])
    again = Outbox(os.environ["OUTBOX_TABLE"], "memo")
    assert [e.sk for e in again.unfinished()] == [entry.sk]
    assert [outbox_module._unpack(q.data)["intent"] for q in again.queued or []] == [{"y": 2}]
    assert again.memory == {"i-1": 1}
