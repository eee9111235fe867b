"""idle_stopper's act under failure, through the real handler and the runner against moto: a run
killed between two AWS calls is finished by the retry from its recorded intent, a mail SNS
refused is sent by the next run, and finishing an interrupted run looks at every instance
again before stopping it (PRODUCT.md safety rule 4)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from autopilot import aws, runner
from autopilot.config import CommonConfig
from autopilot.outbox import OutboxError
from autopilot.recorder import CallRecorder
from autopilot.runner import Context
from autopilot.runtime import Deadline
from idle_stopper import app, run
from idle_stopper.config import Config

pytestmark = pytest.mark.integration

REGION = "eu-west-1"
STOPPED_TAGS = {"StoppedBy", "StoppedReason", "StoppedAt"}
NOW = datetime(2024, 5, 14, 9, 17, tzinfo=UTC)


class Killed(RuntimeError):
    """The function "dies" here (an exception out of an AWS call, as a crash or timeout would
    end the invocation between two calls)."""


@contextmanager
def killed_at(service: str, operation: str) -> Iterator[list[dict[str, Any]]]:
    """The first ``service.operation`` call raises Killed before it reaches AWS; yields the
    parameters of the call that was cut off."""
    cut: list[dict[str, Any]] = []

    def hook(svc: str, op: str, params: dict[str, Any]) -> None:
        if (svc, op) == (service, operation) and not cut:
            cut.append(params)
            raise Killed(f"killed at {operation}")

    aws.call_hooks.append(hook)
    try:
        yield cut
    finally:
        aws.call_hooks.remove(hook)


def entries() -> list[Any]:
    """The outbox entries idle_stopper left (finished ones are deleted; its memory items, the
    stops it remembers for the money saved, are no entries)."""
    client = boto3.client("dynamodb", region_name=REGION)
    items = client.query(
        TableName=os.environ["OUTBOX_TABLE"],
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "outbox#idle_stopper"}},
    )["Items"]
    return [i["status"]["S"] for i in items if i["status"]["S"] != "memo"]


def stopped_ids(calls: CallRecorder) -> list[str]:
    """Every instance id named in a StopInstances call, once per call that named it."""
    return [i for params in calls.of("ec2", "StopInstances") for i in params["InstanceIds"]]


# ---- (a) killed between StopInstances and CreateTags ---------------------------------------


def test_killed_between_stop_and_tag_the_retry_tags_and_mails_once_and_stops_nothing_twice(
    event: dict[str, Any], expiring: list[str], mailbox: Any, ec2: Any
) -> None:
    with CallRecorder() as calls:
        with killed_at("ec2", "CreateTags"), pytest.raises(Killed):
            app.lambda_handler(event, ec2.context("request-1"))
        assert all(ec2.states()[i] == "stopped" for i in expiring)  # stopped ...
        assert all(not STOPPED_TAGS & ec2.tags_of(i).keys() for i in expiring)  # ... not tagged
        assert mailbox() == []
        assert entries() == ["acting"]  # the intent was recorded before acting

        result = app.lambda_handler(event, ec2.context("request-2"))  # Lambda's retry, same event

    assert result["status"] == "done" and result["Changed"] == 3
    for instance_id in expiring:
        assert ec2.tags_of(instance_id).keys() >= STOPPED_TAGS, instance_id
        assert ec2.tags_of(instance_id)["StoppedAt"] == ec2.now.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert ec2.tags_of(expiring[0])["StoppedReason"] == "lifetime"
    assert ec2.tags_of(expiring[2])["StoppedReason"] == "idle"
    mails = mailbox()
    assert len(mails) == 1, [m["subject"] for m in mails]
    assert mails[0]["subject"] == "[ops-autopilot-test] 3 instances stopped (1 idle, 2 past StopAfter)"
    assert all(i in mails[0]["body"] for i in expiring)
    assert "interrupted; a later invocation finished it" in mails[0]["body"]
    assert sorted(stopped_ids(calls)) == sorted(expiring)  # one StopInstances per instance, ever
    assert entries() == []


def test_killed_before_the_stop_the_retry_stops_each_instance_once(
    event: dict[str, Any], expiring: list[str], mailbox: Any, ec2: Any
) -> None:
    with CallRecorder() as calls:
        with killed_at("ec2", "StopInstances") as cut, pytest.raises(Killed):
            app.lambda_handler(event, ec2.context("request-1"))
        assert sorted(cut[0]["InstanceIds"]) == sorted(expiring)
        assert all(ec2.states()[i] == "running" for i in expiring)
        result = app.lambda_handler(event, ec2.context("request-2"))

    assert result["Changed"] == 3
    assert all(ec2.states()[i] == "stopped" and "StoppedBy" in ec2.tags_of(i) for i in expiring)
    # the call cut off before it reached EC2 (the recorder saw it), then the retry's: one each
    assert [sorted(p["InstanceIds"]) for p in calls.of("ec2", "StopInstances")] == [sorted(expiring)] * 2
    assert calls.count("ec2", "DescribeInstanceAttribute") == 3  # the re-check's (the plan lets EC2 judge)
    assert len(mailbox()) == 1 and entries() == []


# ---- (b) SNS refuses the mail of a run that stopped instances -----------------------------


def test_a_mail_sns_refused_is_sent_by_the_next_run_and_nothing_is_stopped_twice(
    new_event: Callable[[], dict[str, Any]],
    expiring: list[str],
    mailbox: Any,
    ec2: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sns_down = [True]
    real_publish = runner.publish

    def publish(*args: Any, **kwargs: Any) -> str:
        if sns_down[0]:
            raise ClientError(
                {"Error": {"Code": "KMSDisabledException", "Message": "key disabled"}}, "Publish"
            )
        return real_publish(*args, **kwargs)

    monkeypatch.setattr(runner, "publish", publish)
    with CallRecorder() as calls:
        with pytest.raises(OutboxError):
            app.lambda_handler(new_event(), ec2.context("request-1"))
        assert all(ec2.tags_of(i).keys() >= STOPPED_TAGS for i in expiring)  # the work is done ...
        assert entries() == ["acted"]  # ... and its mail kept
        assert mailbox() == []

        sns_down[0] = False
        result = app.lambda_handler(new_event(), ec2.context("request-2"))  # the next scheduled run

    mails = mailbox()
    assert len(mails) == 1
    assert mails[0]["subject"] == "[ops-autopilot-test] 3 instances stopped (1 idle, 2 past StopAfter)"
    assert all(i in mails[0]["body"] for i in expiring)
    assert sorted(stopped_ids(calls)) == sorted(expiring)  # stopped once, by the first run
    assert calls.count("ec2", "CreateTags") == 2  # tagged once (two tag sets), by the first run
    assert result["Changed"] == 0 and result["mails_held"] == 0
    assert entries() == []


# ---- finishing an interrupted run looks again first ----------------------------------------


def test_an_instance_opted_out_before_the_retry_is_not_stopped(
    event: dict[str, Any], expiring: list[str], mailbox: Any, ec2: Any
) -> None:
    with killed_at("ec2", "StopInstances"), pytest.raises(Killed):
        app.lambda_handler(event, ec2.context("request-1"))
    kept, *others = expiring
    ec2.tag(kept, AutoStop="off")  # someone opts it out while the run is down

    result = app.lambda_handler(event, ec2.context("request-2"))

    assert ec2.states()[kept] == "running" and "StoppedBy" not in ec2.tags_of(kept)
    assert all(ec2.states()[i] == "stopped" and "StoppedBy" in ec2.tags_of(i) for i in others)
    assert result["Changed"] == 2 and result["SkippedChanged"] == 1
    (mail,) = mailbox()
    assert mail["subject"] == "[ops-autopilot-test] 2 instances stopped (1 idle, 1 past StopAfter)"
    assert "Not stopped after all" in mail["body"]
    assert "Left alone: opted out (AutoStop=off) since the decision; it is running" in mail["body"]


def test_an_instance_stopped_and_then_opted_out_is_not_tagged(
    event: dict[str, Any], expiring: list[str], mailbox: Any, ec2: Any
) -> None:
    """The IAM role denies CreateTags on opted-out instances: the retry does not even try."""
    with killed_at("ec2", "CreateTags"), pytest.raises(Killed):
        app.lambda_handler(event, ec2.context("request-1"))
    kept, *others = expiring
    ec2.tag(kept, AutoStop="never")

    with CallRecorder() as calls:
        app.lambda_handler(event, ec2.context("request-2"))

    assert "StoppedBy" not in ec2.tags_of(kept)
    assert all("StoppedBy" in ec2.tags_of(i) for i in others)
    assert kept not in {r for p in calls.of("ec2", "CreateTags") for r in p["Resources"]}
    assert calls.count("ec2", "StopInstances") == 0  # all three were stopped by the first run
    assert "it is stopped, left as it is" in mailbox()[0]["body"]


def test_stop_protection_switched_on_before_the_retry_is_respected(
    event: dict[str, Any], expiring: list[str], mailbox: Any, ec2: Any
) -> None:
    with killed_at("ec2", "StopInstances"), pytest.raises(Killed):
        app.lambda_handler(event, ec2.context("request-1"))
    protected = expiring[0]
    boto3.client("ec2", region_name=REGION).modify_instance_attribute(
        InstanceId=protected, DisableApiStop={"Value": True}
    )
    result = app.lambda_handler(event, ec2.context("request-2"))
    assert ec2.states()[protected] == "running"
    # the resumed stop set leaves it out (re-checked); the new plan after it offers it to EC2,
    # which refuses it: never stopped, no Failed
    assert result["SkippedStopProtected"] == 1
    assert result["Failed"] == 0 and result["Changed"] == 2
    assert "Left alone: stop protection is on now" in mailbox()[0]["body"]


def test_an_instance_terminated_before_the_retry_is_dropped(
    event: dict[str, Any], expiring: list[str], mailbox: Any, ec2: Any
) -> None:
    with killed_at("ec2", "StopInstances"), pytest.raises(Killed):
        app.lambda_handler(event, ec2.context("request-1"))
    gone = expiring[0]
    boto3.client("ec2", region_name=REGION).terminate_instances(InstanceIds=[gone])
    result = app.lambda_handler(event, ec2.context("request-2"))
    assert result["Changed"] == 2 and result["Failed"] == 0
    assert "Left alone: state is now terminated" in mailbox()[0]["body"]


# ---- act on its own: dry run, resume in dry run ----------------------------------------------


def _context(dry_run: bool, resumed: bool) -> Context[Config]:
    common = replace(CommonConfig.from_env(), dry_run=dry_run)
    return Context("idle_stopper", Config.from_env(), common, NOW, Deadline(300), resumed=resumed)


def _intent(ids: list[str], dry_run: bool) -> dict[str, Any]:
    return {
        "at": "2024-05-14T09:17:00Z",
        "dry_run": dry_run,
        "stop": [
            {"id": i, "outcome": "StopLifetime", "stop_after": "2h", "running_seconds": 86400} for i in ids
        ],
    }


@pytest.mark.parametrize("resumed", [False, True])
def test_act_in_dry_run_makes_no_call_at_all(
    env: dict[str, str], expiring: list[str], calls: Any, resumed: bool
) -> None:
    result = run.act(_context(dry_run=True, resumed=resumed), _intent(expiring, dry_run=False))
    assert result["dry_run"] is True and result["stopped"] == expiring
    assert calls.calls == []


def test_a_dry_run_intent_is_never_carried_out_for_real(
    env: dict[str, str], expiring: list[str], calls: Any, ec2: Any
) -> None:
    """An intent recorded in dry run and finished after DryRun was switched off stays a dry run."""
    result = run.act(_context(dry_run=False, resumed=True), _intent(expiring, dry_run=True))
    assert result["dry_run"] is True
    assert calls.calls == [] and all(ec2.states()[i] == "running" for i in expiring)
