"""idle_stopper: one hourly run over N running instances, 1% of them past ``StopAfter=1d``.

moto keeps no metric data for its instances, so every other instance has "too little data"
and is left running: the GetMetricData calls are made (and counted) exactly as in AWS, the
decision just never reaches "idle". That is the expensive path: every instance is judged.

Minimum for N running instances, E of them expired (E = N/100), cap C = 10 stops per run:
- DescribeInstances: ceil(N / 1000) pages (server-side filter on running);
- GetMetricData: ceil((N - E) / 500): the peak CPU of every judged instance, 500 queries per
  call; an expired instance needs no metrics, and NetworkIn/NetworkOut are asked for only where
  the CPU leaves idle possible - nowhere here, as moto has no datapoints (too little data
  whatever the network says). One page per call: 500 queries x 24 hourly points = 12,000
  points, under the 100,800 per response;
- DescribeInstanceAttribute: 0. Stop protection is EC2's to judge: StopInstances refuses a
  protected instance, naming it, and the batch goes again without it (one call per protected
  instance; none here);
- StopInstances: 1 (up to 1,000 ids per call);
- CreateTags: one per distinct tag set (CreateTags takes one tag set for up to 1,000 ids). The
  tags are shared by the run: StoppedBy, StoppedReason as its category (idle or lifetime; the
  numbers are in the mail) and StoppedAt as the run's time: 1 call per category, 1 here.
- SNS Publish: 1 digest;
- the runner (autopilot.runner), through which the real handler runs: dynamodb.Query 1
  (earlier runs' unfinished work), the claim on the event (dynamodb.PutItem 1 +
  dynamodb.UpdateItem 1) and, when there is something to stop, the outbox entry of the intent
  (dynamodb.PutItem 1 before acting, dynamodb.UpdateItem 1 after, dynamodb.DeleteItem 1 once
  SNS took the mail): 6 in all, whatever N;
- the run's memory of what it stopped (money saved): dynamodb.PutItem 1 when it stops.
"""

from __future__ import annotations

import contextlib
import io
import os
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import boto3
from moto.ec2.models import ec2_backends

from bench.common import (
    ACCOUNT,
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

CAP = 10
LAUNCH_BATCH = 500
SAMPLE = ROOT / "events" / "idle_stopper" / "eventbridge.scheduled.json"
RUNNER_CALLS = {
    "dynamodb.Query": 1,
    "dynamodb.PutItem": 2,
    "dynamodb.UpdateItem": 2,
    "dynamodb.DeleteItem": 1,
}
RUNNER_CALLS_NOTHING_TO_DO = {"dynamodb.Query": 1, "dynamodb.PutItem": 1, "dynamodb.UpdateItem": 1}
RESULT_FIELDS = {"status", "dry_run", "mails_held"}  # the rest of the handler's result are metrics


def _seed(count: int, now: datetime) -> None:
    ec2 = boto3.client("ec2", region_name=REGION)
    backend = ec2_backends[ACCOUNT][REGION]
    expiring = count // 100
    for start in range(0, count, LAUNCH_BATCH):
        size = min(LAUNCH_BATCH, count - start)
        reply = ec2.run_instances(
            ImageId="ami-12c6146b",
            MinCount=size,
            MaxCount=size,
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "bench"}]}],
        )
        ids = [i["InstanceId"] for i in reply["Instances"]]
        for instance_id in ids:  # launched two days ago (moto stores naive UTC)
            backend.get_instance(instance_id).launch_time = (now - timedelta(days=2)).replace(tzinfo=None)
        if start == 0 and expiring:
            ec2.create_tags(Resources=ids[:expiring], Tags=[{"Key": "StopAfter", "Value": "1d"}])


def scheduled_run(cap: int) -> tuple[dict[str, Any], dict[str, str]]:
    """The sample scheduled event (a fresh id) and the function's environment, in the sandbox:
    its topic and outbox table created, the idle rule of the defaults, ``cap`` stops a run."""
    topic = boto3.client("sns", region_name=REGION).create_topic(Name="bench")["TopicArn"]
    event: dict[str, Any] = sample_event(SAMPLE)
    event["id"] = str(uuid.uuid4())
    env = {
        "STACK_NAME": STACK, "TOPIC_ARN": topic, "DRY_RUN": "false", "AWS_REGION": REGION,
        "OWNER_TAG_KEY": "Owner", "OUTBOX_TABLE": outbox_table(),
        "LOOKBACK_HOURS": "24", "PERIODS_REQUIRED": "23", "CPU_PERCENT": "10", "NETWORK_MB": "5",
        "MAX_STOPS_PER_RUN": str(cap),
    }  # fmt: skip
    return event, env


def minimum(count: int) -> dict[str, int]:
    expired = count // 100
    stops = min(CAP, expired)
    return {
        "ec2.DescribeInstances": pages(count, 1000),
        "cloudwatch.GetMetricData": pages(count - expired, 500),
        "ec2.StopInstances": 1 if stops else 0,
        "ec2.CreateTags": 1 if stops else 0,  # one shared tag set, see above
        "sns.Publish": 1 if stops else 0,
        **(RUNNER_CALLS if stops else RUNNER_CALLS_NOTHING_TO_DO),
        # the run's memory of its stops (money saved: closed when the instance runs again)
        **({"dynamodb.PutItem": RUNNER_CALLS["dynamodb.PutItem"] + 1} if stops else {}),
    }


def run(count: int) -> Run:
    from idle_stopper import app

    now = datetime.now(UTC)
    with sandbox():
        _seed(count, now)
        event, env = scheduled_run(CAP)
        with (
            mock.patch.dict(os.environ, env),
            contextlib.redirect_stdout(io.StringIO()),
            measured() as (calls, elapsed),
        ):
            result = app.lambda_handler(event, LambdaContext(900_000))
    return Run(
        automation="idle_stopper",
        size=count,
        unit="running instances",
        calls=calls.by_operation(),
        minimum=minimum(count),
        seconds=elapsed[0],
        extra={
            "stopped": result["Changed"],
            "metrics_sent": metrics_sent(result),
            "metrics_requested": result.get("MetricsRequested", 3 * count),
        },
    )
