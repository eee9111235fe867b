"""The shared runner and its outbox (autopilot.runner, autopilot.outbox) on a toy automation:
claim, record before acting, resume a run killed between two steps, hold a mail SNS refused,
standard metrics always emitted."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import boto3
import pytest
from aws_lambda_powertools import Logger, Metrics
from botocore.exceptions import ClientError

from autopilot import runner
from autopilot.events import parse_scheduled
from autopilot.notify import Digest, Item
from autopilot.outbox import Mail, Outbox, OutboxError
from autopilot.runner import Automation, Context, Counts, Plan, Run
from conftest import REGION, STACK, FakeContext, ec2_tags

pytestmark = pytest.mark.integration

logger = Logger(service="toy")
metrics = Metrics(namespace="OpsAutopilot", service="toy")


class Toy:
    """Tags the volumes named in ``volumes`` with Seen=<run>, one CreateTags per volume."""

    def __init__(self, volumes: list[str]) -> None:
        self.volumes = volumes
        self.acts: list[bool] = []  # resumed flag of every act call
        self.fail_after: int | None = None  # raise after this many CreateTags (a "kill")
        self.fail_resumed = False  # finishing an earlier run's intent fails, always

    def plan(self, run: Run[None, Any]) -> Plan:
        todo = [v for v in self.volumes if "Seen" not in ec2_tags(v)]
        intent = {"volumes": todo} if todo else None
        return Plan(intent, Counts(checked=len(self.volumes), skipped=len(self.volumes) - len(todo)))

    def act(self, ctx: Context[None], intent: Mapping[str, Any]) -> dict[str, Any]:
        self.acts.append(ctx.resumed)
        if ctx.resumed and self.fail_resumed:
            raise RuntimeError("permanently broken")
        done = []
        for n, volume in enumerate(intent["volumes"]):
            if self.fail_after is not None and n == self.fail_after:
                raise RuntimeError("killed")
            boto3.client("ec2", region_name=REGION).create_tags(
                Resources=[volume], Tags=[{"Key": "Seen", "Value": "yes"}]
            )
            done.append(volume)
        return {"tagged": done}

    def report(self, ctx: Context[None], intent: Mapping[str, Any], result: Mapping[str, Any]) -> Mail | None:
        digest = Digest("toy", ctx.common.stack_name, ctx.common.region)
        digest.section("Tagged", [Item(v) for v in result["tagged"]])
        return digest.mail(f"{len(result['tagged'])} volumes tagged", "Toy run.", "info")

    def counts(self, intent: Mapping[str, Any], result: Mapping[str, Any]) -> Counts:
        return Counts(changed=len(result["tagged"]))

    def automation(self) -> Automation[None, Any]:
        return Automation("toy", parse_scheduled, lambda: None, self.plan, self.act, self.report, self.counts)


@pytest.fixture
def toy(stack_env: dict[str, str]) -> Toy:
    ec2 = boto3.client("ec2", region_name=REGION)
    volumes = [ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=1)["VolumeId"] for _ in range(3)]
    return Toy(volumes)


def _event(load_event: Any, n: int = 0) -> dict[str, Any]:
    event: dict[str, Any] = load_event("idle_stopper/eventbridge.scheduled")
    event["id"] = f"00000000-0000-0000-0000-{n:012d}"
    return event


def _invoke(toy: Toy, event: dict[str, Any], request: str = "r1") -> dict[str, Any]:
    context = FakeContext()
    context.aws_request_id = request  # type: ignore[misc]
    return runner.handle(toy.automation(), event, context, logger, metrics)


def _entries() -> list[Any]:
    return list(Outbox(stack_env_table(), "toy").unfinished())


def stack_env_table() -> str:
    import os

    return os.environ["OUTBOX_TABLE"]


def _sns_refuses(monkeypatch: pytest.MonkeyPatch, code: str) -> list[bool]:
    """SNS refuses every Publish (with ``code``) while the returned switch's [0] is True."""
    sns_down = [True]
    real_publish = runner.publish

    def publish(*args: Any, **kwargs: Any) -> str:
        if sns_down[0]:
            raise ClientError({"Error": {"Code": code, "Message": "refused"}}, "Publish")
        return real_publish(*args, **kwargs)

    monkeypatch.setattr(runner, "publish", publish)
    return sns_down


def test_a_run_records_acts_mails_and_leaves_nothing_behind(toy: Toy, load_event: Any, mailbox: Any) -> None:
    result = _invoke(toy, _event(load_event))
    assert result["Changed"] == 3 and result["Checked"] == 3
    assert all(ec2_tags(v).get("Seen") for v in toy.volumes)
    mails = mailbox()
    assert len(mails) == 1 and mails[0]["subject"].startswith(f"[{STACK}] 3 volumes tagged")
    assert mails[0]["attributes"] == {"automation": "toy", "severity": "info"}
    assert _entries() == []


def test_the_same_event_again_does_nothing(toy: Toy, load_event: Any, mailbox: Any) -> None:
    event = _event(load_event)
    _invoke(toy, event)
    again = _invoke(toy, event, request="r2")
    assert again["status"] == "duplicate"
    assert toy.acts == [False] and len(mailbox()) == 1


def test_two_concurrent_deliveries_act_once(toy: Toy, load_event: Any, mailbox: Any) -> None:
    event = _event(load_event)
    barrier = threading.Barrier(2)
    results: list[dict[str, Any]] = []

    def deliver(request: str) -> None:
        barrier.wait()
        results.append(_invoke(toy, event, request))

    threads = [threading.Thread(target=deliver, args=(f"r{n}",)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(toy.acts) == 1, results
    assert len(mailbox()) == 1


def test_a_run_killed_between_two_steps_is_finished_and_mailed_by_the_retry(
    toy: Toy, load_event: Any, mailbox: Any
) -> None:
    event = _event(load_event)
    toy.fail_after = 1  # the first volume is tagged, then the function "dies"
    with pytest.raises(RuntimeError, match="killed"):
        _invoke(toy, event, request="r1")
    assert mailbox() == []
    assert [e.status for e in _entries()] == ["acting"]  # the intent was recorded before acting
    toy.fail_after = None
    _invoke(toy, event, request="r2")  # Lambda's retry of the same event
    assert toy.acts == [False, True]  # the retry finished the recorded intent first
    assert all(ec2_tags(v).get("Seen") for v in toy.volumes)
    mails = mailbox()
    assert len(mails) == 1 and "3 volumes tagged" in mails[0]["subject"], mails
    assert _entries() == []


def test_a_mail_sns_refused_is_sent_by_the_next_run(
    toy: Toy, load_event: Any, mailbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sns_down = _sns_refuses(monkeypatch, "KMSDisabledException")
    with pytest.raises(OutboxError):
        _invoke(toy, _event(load_event, 1))
    assert all(ec2_tags(v).get("Seen") for v in toy.volumes)  # the work is done ...
    assert [e.status for e in _entries()] == ["acted"]  # ... and its mail kept
    sns_down[0] = False
    _invoke(toy, _event(load_event, 2), request="r2")  # the next scheduled run
    mails = mailbox()
    assert len(mails) == 1 and "3 volumes tagged" in mails[0]["subject"]
    assert toy.acts == [False]  # nothing was done twice
    assert _entries() == []


def test_a_malformed_event_emits_no_zero_count_only_the_malformed_event(toy: Toy, load_event: Any) -> None:
    seen: list[tuple[str, float]] = []

    class Recording:
        def add_metric(self, name: str, unit: Any, value: float) -> None:
            seen.append((name, value))

    result = runner.handle(toy.automation(), {"source": "x"}, FakeContext(), logger, Recording())
    assert result["status"] == "ignored"
    assert dict(seen) == {"MalformedEvents": 1}


def _two_attempts_that_cannot_finish(toy: Toy, load_event: Any, mailbox: Any) -> None:
    """A run killed midway (r1), then two runs (r2, r3) that try to finish its work first, fail,
    and start nothing new: the next run is the third attempt."""
    toy.fail_after = 1
    with pytest.raises(RuntimeError, match="killed"):
        _invoke(toy, _event(load_event, 1))
    toy.fail_after, toy.fail_resumed = None, True
    for n in (2, 3):
        with pytest.raises(OutboxError, match="could not be finished"):
            _invoke(toy, _event(load_event, n), request=f"r{n}")
        assert toy.acts[-1] is True and mailbox() == []


def test_work_that_cannot_be_finished_blocks_new_work_then_is_given_up_with_a_mail(
    toy: Toy, load_event: Any, mailbox: Any
) -> None:
    _two_attempts_that_cannot_finish(toy, load_event, mailbox)
    _invoke(toy, _event(load_event, 4), request="r4")  # third attempt: given up, then new work
    assert toy.acts[-2:] == [True, False]
    mails = mailbox()
    assert [m["attributes"]["severity"] for m in mails] == ["critical", "info"], mails
    assert "could not finish a run, given up" in mails[0]["subject"]
    assert "3 invocations tried" in mails[0]["body"] and toy.volumes[2] in mails[0]["body"]
    assert "2 volumes tagged" in mails[1]["subject"]
    assert all(ec2_tags(v).get("Seen") for v in toy.volumes)
    assert _entries() == []


def test_given_up_work_whose_mail_sns_refused_is_only_mailed_later_never_tried_again(
    toy: Toy, load_event: Any, mailbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Giving up is recorded before its mail is sent: when SNS refuses the given-up mail, the
    next run sends it - it does not take the entry for unfinished work and act a fourth time."""
    _two_attempts_that_cannot_finish(toy, load_event, mailbox)
    sns_down = _sns_refuses(monkeypatch, "Throttling")
    with pytest.raises(OutboxError, match="not accepted by SNS"):
        _invoke(toy, _event(load_event, 4), request="r4")  # given up (mail refused), new work done
    acts = list(toy.acts)
    assert acts[-2:] == [True, False] and mailbox() == []
    sns_down[0] = False
    _invoke(toy, _event(load_event, 5), request="r5")
    assert toy.acts == acts  # nothing acted again: neither the given-up work nor the new work
    mails = mailbox()
    assert sorted(m["attributes"]["severity"] for m in mails) == ["critical", "info"], mails
    given_up = [m for m in mails if m["attributes"]["severity"] == "critical"]
    assert "could not finish a run, given up" in given_up[0]["subject"]
    assert "3 invocations tried" in given_up[0]["body"]
    assert _entries() == []


def test_the_retry_of_a_run_whose_mail_sns_refused_sends_it_and_does_nothing_again(
    toy: Toy, load_event: Any, mailbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lambda retries the same event after the OutboxError: the claim says the work is done, so
    the retry only sends the held mail - it neither acts nor builds the same news again."""
    sns_down = _sns_refuses(monkeypatch, "Throttling")
    event = _event(load_event, 7)
    with pytest.raises(OutboxError):
        _invoke(toy, event, request="r1")
    sns_down[0] = False
    again = _invoke(toy, event, request="r2")
    assert again["status"] == "duplicate"
    assert toy.acts == [False]
    assert len(mailbox()) == 1
    assert _entries() == []
