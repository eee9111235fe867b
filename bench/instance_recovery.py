"""instance_recovery: the scheduled run over N running instances, half of them opted in
(``AutoRecover=true``), through the real handler and the shared runner in moto - the first run,
which creates the N/2 recovery alarms, and the second, which finds nothing to change.

    PYTHONPATH=layers/autopilot/python:functions:. python -m bench.instance_recovery [--write]

Minimum for N instances of one type, A = N/2 opted in (what each API allows per call):
- DescribeInstances ceil(N / 1000), DescribeInstanceTypes ceil(types / 100) = 1 (only the
  opted-in instances' types are asked about), DescribeAlarms ceil(alarms / 100): 1 on the first
  run (none yet), ceil(A / 100) on the second;
- first run: PutMetricAlarm A (the API takes one alarm), sns.Publish 1 (the digest of the new
  alarms), the runner's 6 DynamoDB calls (Query, the claim's PutItem and UpdateItem, the
  outbox entry's PutItem, UpdateItem, DeleteItem);
- second run: no write at all but the runner's claim: Query 1, PutItem 1, UpdateItem 1.

moto's DescribeAlarms ignores MaxRecords; here it pages at the API's 100, as CloudWatch does.
"""

from __future__ import annotations

import argparse
import os
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any
from unittest import mock

import boto3
from moto.cloudwatch.responses import CloudWatchResponse

from bench.common import (
    REGION,
    ROOT,
    STACK,
    LambdaContext,
    measured,
    offline_environment,
    outbox_table,
    pages,
    sample_event,
    sandbox,
)

SAMPLE = ROOT / "events" / "instance_recovery" / "eventbridge.scheduled.json"
DOC = ROOT / "docs" / "benchmarks-instance-recovery.md"
SIZES = (100, 1000, 5000)


@dataclass
class Result:
    size: int
    alarms: int
    first: Counter[str]
    second: Counter[str]
    first_minimum: dict[str, int]
    second_minimum: dict[str, int]


_describe_alarms = CloudWatchResponse.describe_alarms


def _paged_alarms(self: Any) -> Any:
    result = _describe_alarms(self)
    items = result.result["MetricAlarms"]
    size = min(int(self._get_param("MaxRecords") or 100), 100)
    start = int(self._get_param("NextToken") or 0)
    page: dict[str, Any] = {"MetricAlarms": items[start : start + size], "CompositeAlarms": []}
    if start + size < len(items):
        page["NextToken"] = str(start + size)
    return type(result)(page)


def minimum(size: int, alarms_before: int, created: int, quiet: bool) -> dict[str, int]:
    reads = {
        "ec2.DescribeInstances": pages(size, 1000),
        "ec2.DescribeInstanceTypes": 1,
        "cloudwatch.DescribeAlarms": pages(alarms_before, 100),
    }
    if quiet:
        return {**reads, "dynamodb.Query": 1, "dynamodb.PutItem": 1, "dynamodb.UpdateItem": 1}
    return {
        **reads,
        "cloudwatch.PutMetricAlarm": created,
        "sns.Publish": 1,
        "dynamodb.Query": 1,
        "dynamodb.PutItem": 2,
        "dynamodb.UpdateItem": 2,
        "dynamodb.DeleteItem": 1,
    }


def run(size: int) -> Result:
    """Two scheduled runs over ``size`` instances, half opted in."""
    with sandbox(), mock.patch.object(CloudWatchResponse, "describe_alarms", _paged_alarms):
        table = outbox_table()
        topic = boto3.client("sns", region_name=REGION).create_topic(Name="bench")["TopicArn"]
        ec2 = boto3.client("ec2", region_name=REGION)
        opted = size // 2
        for count, tags in ((opted, [{"Key": "AutoRecover", "Value": "true"}]), (size - opted, [])):
            for start in range(0, count, 1000):
                n = min(1000, count - start)
                kwargs: dict[str, Any] = {"ImageId": "ami-12c6146b", "MinCount": n, "MaxCount": n}
                if tags:
                    kwargs["TagSpecifications"] = [{"ResourceType": "instance", "Tags": tags}]
                ec2.run_instances(InstanceType="t3.micro", **kwargs)
        env = {
            "STACK_NAME": STACK,
            "TOPIC_ARN": topic,
            "OUTBOX_TABLE": table,
            "DRY_RUN": "false",
            "OWNER_TAG_KEY": "Owner",
            "SCHEDULE": "rate(1 day)",
            "POWERTOOLS_SERVICE_NAME": "instance_recovery",
            "RECOVERY_FOR_ALL": "false",
            "ALARM_PERIOD": "60",
            "ALARM_DATAPOINTS": "2",
        }
        with mock.patch.dict(os.environ, env):
            from instance_recovery import app

            counts = []
            for _ in range(2):
                event = {**sample_event(SAMPLE), "id": str(uuid.uuid4())}
                with measured() as (calls, _elapsed):
                    result = app.lambda_handler(event, LambdaContext(600_000))
                assert result["status"] == "done", result
                counts.append(Counter(calls.by_operation()))
        return Result(
            size,
            opted,
            counts[0],
            counts[1],
            minimum(size, 0, opted, quiet=False),
            minimum(size, opted, 0, quiet=True),
        )


def _ops(calls: Counter[str]) -> str:
    return ", ".join(f"{op} {n:,}" for op, n in sorted(calls.items()))


def render(results: list[Result]) -> str:
    lines = [
        "# instance_recovery: calls per scheduled run against the API's minimum",
        "",
        "`python -m bench.instance_recovery --write` (the real handler through the runner in moto;",
        "N running instances of one type, half tagged `AutoRecover=true`). The minimum is what each",
        "API allows per call (module docstring of bench/instance_recovery.py): PutMetricAlarm takes",
        "one alarm, DescribeAlarms pages at 100, DescribeInstances at 1,000.",
        "",
        "| instances | alarms | run | calls | minimum | by operation |",
        "|---:|---:|---|---:|---:|---|",
    ]
    for r in results:
        for label, calls, least in (
            ("first (creates the alarms)", r.first, r.first_minimum),
            ("second (nothing to change)", r.second, r.second_minimum),
        ):
            lines.append(
                f"| {r.size:,} | {r.alarms:,} | {label} | {sum(calls.values()):,} | "
                f"{sum(least.values()):,} | {_ops(calls)} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--write", action="store_true", help=f"write {DOC.relative_to(ROOT)}")
    parser.add_argument("sizes", nargs="*", type=int, default=list(SIZES))
    args = parser.parse_args()
    offline_environment()
    results = [run(size) for size in args.sizes]
    text = render(results)
    print(text)
    for r in results:
        assert r.first == Counter(r.first_minimum), (r.size, r.first, r.first_minimum)
        assert r.second == Counter(r.second_minimum), (r.size, r.second, r.second_minimum)
    if args.write:
        DOC.write_text(text)


if __name__ == "__main__":
    main()
