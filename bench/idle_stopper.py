"""idle_stopper: one hourly run over N running instances, 1% of them past ``StopAfter=1d``.

moto keeps no metric data for its instances, so every other instance has "too little data"
and is left running: the GetMetricData calls are made (and counted) exactly as in AWS, the
decision just never reaches "idle". That is the expensive path: every instance is judged.

Minimum for N running instances, E of them expired (E = N/100), cap C = 10 stops per run:
- DescribeInstances: ceil(N / 1000) pages (server-side filter on running);
- GetMetricData: ceil(3 (N - E) / 500): k = 3 series (CPU, NetworkIn, NetworkOut) per judged
  instance, 500 queries per call; an expired instance needs no metrics. One page per call:
  500 queries x 24 hourly points = 12,000 points, under the 100,800 per response;
- DescribeInstanceAttribute: min(C, E): DisableApiStop is not in DescribeInstances and the
  attribute call takes one instance;
- StopInstances: 1 (up to 1,000 ids per call);
- CreateTags: one per distinct tag set (CreateTags takes one tag set for up to 1,000 ids). Here
  every stop is a lifetime stop with the same StopAfter, so all share StoppedBy/StoppedAt/
  StoppedReason: 1 call. (Idle stops carry each instance's own numbers in StoppedReason, so
  those need one call each, at most C per run.)
- SNS Publish: 1 digest.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
from moto.ec2.models import ec2_backends

from autopilot.events import ScheduledRun
from autopilot.runtime import Deadline
from bench.common import ACCOUNT, REGION, STACK, Run, measured, pages, sandbox
from idle_stopper.app import execute
from idle_stopper.config import IdleStopperConfig

CAP = 10
LAUNCH_BATCH = 500


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


def minimum(count: int) -> dict[str, int]:
    expired = count // 100
    stops = min(CAP, expired)
    return {
        "ec2.DescribeInstances": pages(count, 1000),
        "cloudwatch.GetMetricData": pages(3 * (count - expired), 500),
        "ec2.DescribeInstanceAttribute": stops,
        "ec2.StopInstances": 1 if stops else 0,
        "ec2.CreateTags": 1 if stops else 0,  # one shared tag set, see above
        "sns.Publish": 1 if stops else 0,
    }


def run(count: int) -> Run:
    now = datetime.now(UTC)
    with sandbox():
        topic = boto3.client("sns", region_name=REGION).create_topic(Name="bench")["TopicArn"]
        _seed(count, now)
        config = IdleStopperConfig.from_env(
            {
                "STACK_NAME": STACK, "TOPIC_ARN": topic, "DRY_RUN": "false", "AWS_REGION": REGION,
                "LOOKBACK_HOURS": "24", "PERIODS_REQUIRED": "23", "CPU_PERCENT": "10", "NETWORK_MB": "5",
                "MAX_STOPS_PER_RUN": str(CAP), "OWNER_TAG_KEY": "Owner",
            }
        )  # fmt: skip
        scheduled = ScheduledRun(id="bench", time=now, account=ACCOUNT, region=REGION)
        with measured() as (calls, elapsed):
            outcome = execute(config, scheduled, Deadline(remaining_at_start=900))
    return Run(
        automation="idle_stopper",
        size=count,
        unit="running instances",
        calls=calls.by_operation(),
        minimum=minimum(count),
        seconds=elapsed[0],
        extra={"stopped": len(outcome.stopped), "metric_names": len(outcome.metrics())},
    )
