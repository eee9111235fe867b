"""instance_recovery: the reliability scenario.

A small fleet - opted-in instances, one opted out, one not opted in - the
real handler on its real scheduled event (with its own event id), and a check that all of the
work got done: an alarm for each opted-in eligible instance, none for the others. Found by
tests/reliability/scenarios.py, which runs the fault-injection, idempotency and bad-input
suites on it."""

from __future__ import annotations

import uuid
from typing import Any

import boto3

from conftest import REGION, STACK, FakeContext
from reliability.scenarios import Ctx, Scenario, launch
from reliability.scenarios import event as sample_event

# Environment of the bad-input tests (besides the stack's own): the least the handler needs.
BAD_INPUT_ENV: dict[str, str] = {"RECOVERY_FOR_ALL": "false", "ALARM_PERIOD": "60", "ALARM_DATAPOINTS": "2"}
# The sample event of a normal run (events/instance_recovery/...).
VALID_SAMPLE = "eventbridge.scheduled"


def alarms() -> dict[str, dict[str, Any]]:
    found = boto3.client("cloudwatch", region_name=REGION).describe_alarms(
        AlarmNamePrefix=f"{STACK}-recover-"
    )
    return {a["Dimensions"][0]["Value"]: a for a in found["MetricAlarms"]}


def scenario(ctx: Ctx) -> Scenario:
    from instance_recovery import app

    ctx.env(POWERTOOLS_SERVICE_NAME="instance_recovery", OWNER_TAG_KEY="Owner", **BAD_INPUT_ENV)
    watched = launch(3, {"AutoRecover": "true", "Owner": "alice@example.com"})
    left_alone = launch(1, {"AutoRecover": "false"}) + launch(1)
    events = [{**sample_event("instance_recovery/eventbridge.scheduled"), "id": str(uuid.uuid4())}]

    def invoke() -> dict[str, Any]:
        result: dict[str, Any] = {}
        for event in events:
            result = app.lambda_handler(event, FakeContext())
        return result

    def verify() -> None:
        found = alarms()
        for instance_id in watched:
            assert instance_id in found, instance_id
            assert found[instance_id]["AlarmActions"][0] == f"arn:aws:automate:{REGION}:ec2:recover"
        for instance_id in left_alone:
            assert instance_id not in found, instance_id

    return Scenario(
        "instance_recovery",
        invoke,
        verify,
        resources=watched,
        mails=ctx.mailbox,
        expected_mails=1,  # the first scheduled run: the alarms it created
    )
