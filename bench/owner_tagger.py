"""owner_tagger: one CloudTrail RunInstances event launching N instances (the real sample event
``events/owner_tagger/cloudtrail.run_instances.sso_user.json``, pointed at N moto instances),
through the real handler and the shared runner.

Its calls depend on the instances in one event, not on the fleet: a month costs
(launch events) x (calls per event). Each moto instance has a root volume and one ENI, so an
event with N instances has R = 3 N resources to tag, all with the same owner.

Minimum for N instances per event:
- DescribeInstances: ceil(N / 1000) (the volume ids are not in the event; 1,000 InstanceIds
  per call, the API's limit);
- DescribeTags: 0 (the event's launch data says nothing was tagged with an owner at launch);
- CreateTags: ceil(3 N / 1000) (one tag set, up to 1,000 resource ids per call);
- the runner (autopilot.runner), per event: dynamodb.Query 1 (earlier runs' unfinished work),
  the claim on the event (dynamodb.PutItem 1 + dynamodb.UpdateItem 1) and the outbox entry of
  the intent (dynamodb.PutItem 1 before acting, dynamodb.UpdateItem 1 after, dynamodb.DeleteItem
  1 once its mail, none here, is settled): 6 in all, whatever N;
- sns.Publish: 0 (tagging is silent).
"""

from __future__ import annotations

import contextlib
import io
import os
import uuid
from typing import Any
from unittest import mock

import boto3

from bench.common import (
    REGION,
    ROOT,
    STACK,
    LambdaContext,
    Run,
    measured,
    metrics_sent,
    outbox_table,
    pages,
    sample_event,
    sandbox,
)
from demo.cloudtrail import run_instances_event

SAMPLE = ROOT / "events" / "owner_tagger" / "cloudtrail.run_instances.sso_user.json"
RUNNER_CALLS = {
    "dynamodb.Query": 1,
    "dynamodb.PutItem": 2,
    "dynamodb.UpdateItem": 2,
    "dynamodb.DeleteItem": 1,
}


def _event_for(instances: list[Any]) -> dict[str, Any]:
    """The sample event, its instancesSet replaced by the moto instances (ids and ENIs)."""
    event = run_instances_event(sample_event(SAMPLE), instances)
    event["id"] = str(uuid.uuid4())
    return event


def minimum(instances: int) -> dict[str, int]:
    return {
        "ec2.DescribeInstances": pages(instances, 1000),
        "ec2.CreateTags": pages(3 * instances, 1000),
        **RUNNER_CALLS,
    }


def run(instances: int) -> Run:
    from owner_tagger import app

    with sandbox():
        topic = boto3.client("sns", region_name=REGION).create_topic(Name="bench")["TopicArn"]
        launched = boto3.client("ec2", region_name=REGION).run_instances(
            ImageId="ami-12c6146b", MinCount=instances, MaxCount=instances, InstanceType="t3.micro"
        )["Instances"]
        event = _event_for(launched)
        env = {
            "STACK_NAME": STACK,
            "TOPIC_ARN": topic,
            "DRY_RUN": "false",
            "OWNER_TAG_KEY": "Owner",
            "OUTBOX_TABLE": outbox_table(),
        }
        with (
            mock.patch.dict(os.environ, env),
            contextlib.redirect_stdout(io.StringIO()),
            measured() as (calls, elapsed),
        ):
            result = app.lambda_handler(event, LambdaContext(60_000))
    return Run(
        automation="owner_tagger",
        size=instances,
        unit="instances in one RunInstances event",
        calls=calls.by_operation(),
        minimum=minimum(instances),
        seconds=elapsed[0],
        extra={"tagged": result["Changed"], "metrics_sent": metrics_sent(result)},
    )
