"""Benchmark (not a test): AWS calls and wall time of one idle_stopper run for 1,000 and 5,000
running instances in moto (in-process), 1% of them past StopAfter.

    PYTHONPATH=layers/autopilot/python:functions:tests \
        .venv/bin/python tests/idle_stopper/bench_idle_stopper.py

Wall time here is moto's, not AWS's; the call counts are what the run costs in any account."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

import boto3
from moto import mock_aws
from moto.ec2.models import ec2_backends

from autopilot import aws
from autopilot.events import ScheduledRun
from autopilot.recorder import CallRecorder
from autopilot.runtime import Deadline
from idle_stopper.app import execute
from idle_stopper.config import IdleStopperConfig

REGION = "eu-west-1"


def bench(count: int) -> None:
    aws.reset_clients()
    with mock_aws():
        topic = boto3.client("sns", region_name=REGION).create_topic(Name="bench")["TopicArn"]
        env = {
            "STACK_NAME": "bench", "TOPIC_ARN": topic, "DRY_RUN": "false", "AWS_REGION": REGION,
            "LOOKBACK_HOURS": "24", "PERIODS_REQUIRED": "23", "CPU_PERCENT": "10", "NETWORK_MB": "5",
            "MAX_STOPS_PER_RUN": "10", "OWNER_TAG_KEY": "Owner",
        }  # fmt: skip
        ec2 = boto3.client("ec2", region_name=REGION)
        now = datetime.now(UTC)
        backend = ec2_backends["123456789012"][REGION]
        expiring = count // 100
        for start in range(0, count, 500):
            size = min(500, count - start)
            ids = [
                i["InstanceId"]
                for i in ec2.run_instances(
                    ImageId="ami-12c6146b", MinCount=size, MaxCount=size,
                    TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "b"}]}],
                )["Instances"]
            ]  # fmt: skip
            for instance_id in ids:
                backend.get_instance(instance_id).launch_time = (now - timedelta(days=2)).replace(tzinfo=None)
            if start == 0:
                ec2.create_tags(Resources=ids[:expiring], Tags=[{"Key": "StopAfter", "Value": "1d"}])
        config = IdleStopperConfig.from_env(env)
        run = ScheduledRun(id="bench", time=now, account="123456789012", region=REGION)
        started = time.perf_counter()
        with CallRecorder() as calls:
            execute(config, run, Deadline(remaining_at_start=900))
        elapsed = time.perf_counter() - started
        print(f"{count} instances: {len(calls.calls)} calls in {elapsed:.1f} s (moto)")  # noqa: T201
        for operation, n in sorted(calls.by_operation().items()):
            print(f"  {operation}: {n}")  # noqa: T201


if __name__ == "__main__":
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    for n in (1000, 5000):
        bench(n)
