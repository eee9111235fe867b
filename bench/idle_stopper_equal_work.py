"""idle_stopper at equal work: half the fleet idle, the cap lifted, against the API's minimum.

The same comparison as issue 22's side-by-side with Cloud Custodian 0.9.53 (moto server, 24 h
of metrics, every second instance idle, both tools allowed to stop every idle one): Custodian
made 2,003 requests for 1,000 instances (10,003 for 5,000); idle_stopper made 1,009 (3,435),
500 of them DescribeInstanceAttribute and 500 CreateTags. This runs the real handler through
the runner in moto; moto keeps no metrics for its instances, so its CloudWatch answers
GetMetricData with 24 hourly points per query - quiet (CPU 1 %, 1 KB an hour) for the idle
half, busy (CPU 50 %) for the rest - and the calls are counted as in AWS.

The API's minimum for the work, N running instances, I idle, P of them stop-protected, cap C:
- DescribeInstances: ceil(N / 1000) pages;
- GetMetricData: ceil(N / 500) for every instance's peak CPU, then ceil(2I / 500) for the
  network series of the I instances whose CPU was quiet (500 queries a call; the busy half is
  decided by its CPU alone): N + 2I metrics asked for, where asking for all three is 3N;
- StopInstances: ceil(S / 1000) for the S = min(I, C) stopped, plus one per protected instance
  EC2 refuses (its attribute is not in DescribeInstances; one call learns it either way);
- CreateTags: one per stop category and 1,000 instances (the tags are the run's: 1 here);
- SNS Publish: 1 digest; the runner's DynamoDB: 6 (see bench/idle_stopper.py), plus 1 PutItem
  for the memory of the busy instances (one item holds about 10,000; the next runs do not ask
  about them until their busy hours leave the window, see bench/idle_stopper_bill.py).

``python -m bench.idle_stopper_equal_work --write`` writes docs/benchmarks-idle-equal-work.md.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import boto3
from moto.cloudwatch.models import CloudWatchBackend
from moto.ec2.models import ec2_backends

from bench.common import ACCOUNT, REGION, ROOT, LambdaContext, measured, pages, sandbox
from bench.idle_stopper import RUNNER_CALLS, scheduled_run

CAP = 1000  # the largest IdleStopperMaxStopsPerRun: one StopInstances call
LAUNCH_BATCH = 500
CUSTODIAN = {1000: 2003, 5000: 10003}  # issue 22's measurement, Cloud Custodian 0.9.53
BEFORE = {1000: 1009, 5000: 3435}  # idle_stopper before issue 22, same measurement


@dataclass(frozen=True)
class Fleet:
    size: int
    idle: set[str]
    protected: set[str]


def _seed(count: int, protected_share: float, now: datetime) -> Fleet:
    ec2 = boto3.client("ec2", region_name=REGION)
    backend = ec2_backends[ACCOUNT][REGION]
    ids: list[str] = []
    for start in range(0, count, LAUNCH_BATCH):
        size = min(LAUNCH_BATCH, count - start)
        reply = ec2.run_instances(ImageId="ami-12c6146b", MinCount=size, MaxCount=size)
        ids += [i["InstanceId"] for i in reply["Instances"]]
    for n, instance_id in enumerate(ids):  # launched days ago, at different times (moto: naive UTC)
        backend.get_instance(instance_id).launch_time = (now - timedelta(days=3, minutes=n)).replace(
            tzinfo=None
        )
    idle = set(ids[::2])
    protected = set(sorted(idle)[: int(count * protected_share)])
    for instance_id in protected:
        backend.get_instance(instance_id).disable_api_stop = True
    return Fleet(count, idle, protected)


def _metrics(fleet: Fleet) -> Any:
    """moto's GetMetricData, answering 24 hourly points per query from the fleet's idle set."""

    def get_metric_data(
        self: Any, queries: list[dict[str, Any]], start_time: datetime, end_time: datetime, scan_by: str = ""
    ) -> list[dict[str, Any]]:
        stamps: list[datetime] = []
        at = start_time
        while at < end_time:
            stamps.append(at)
            at += timedelta(hours=1)
        results = []
        for query in queries:
            stat = query["MetricStat"]
            instance = stat["Metric"]["Dimensions"][0]["Value"]
            quiet = instance in fleet.idle
            if stat["Metric"]["MetricName"] == "CPUUtilization":
                value = 1.0 if quiet else 50.0
            else:
                value = 1_000.0 if quiet else 100_000_000.0
            results.append(
                {
                    "id": query["Id"],
                    "label": stat["Metric"]["MetricName"],
                    "values": [value] * len(stamps),
                    "timestamps": stamps,
                    "status_code": "Complete",
                }
            )
        return results

    return mock.patch.object(CloudWatchBackend, "get_metric_data", get_metric_data)


def minimum(fleet: Fleet) -> dict[str, int]:
    stops = min(len(fleet.idle - fleet.protected), CAP)
    return {
        "ec2.DescribeInstances": pages(fleet.size, 1000),
        "cloudwatch.GetMetricData": pages(fleet.size, 500) + pages(2 * len(fleet.idle), 500),
        "ec2.StopInstances": pages(stops, 1000) + len(fleet.protected),
        "ec2.CreateTags": pages(stops, 1000),
        "sns.Publish": 1,
        **RUNNER_CALLS,
        "dynamodb.PutItem": RUNNER_CALLS["dynamodb.PutItem"] + pages(fleet.size - len(fleet.idle), 10_000),
    }


@dataclass(frozen=True)
class Result:
    fleet: Fleet
    calls: dict[str, int]
    minimum: dict[str, int]
    stopped: set[str]
    seconds: float

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def run(count: int, protected_share: float = 0.0) -> Result:
    from idle_stopper import app

    now = datetime.now(UTC)
    with sandbox():
        fleet = _seed(count, protected_share, now)
        event, env = scheduled_run(CAP)
        with (
            mock.patch.dict(os.environ, env),
            _metrics(fleet),
            contextlib.redirect_stdout(io.StringIO()),
            measured() as (calls, elapsed),
        ):
            app.lambda_handler(event, LambdaContext(900_000))
        states = boto3.client("ec2", region_name=REGION).describe_instances()["Reservations"]
        stopped = {i["InstanceId"] for r in states for i in r["Instances"] if i["State"]["Name"] != "running"}
    return Result(fleet, dict(calls.by_operation()), minimum(fleet), stopped, elapsed[0])


def reference(figures: dict[int, int], r: Result) -> str:
    """The issue's measurement for this fleet (it had no stop-protected instance)."""
    return f"{figures[r.fleet.size]:,}" if r.fleet.size in figures and not r.fleet.protected else "-"


def table(results: list[Result]) -> list[str]:
    lines = [
        "| running | idle | stop-protected | stopped | calls | minimum | by operation | Cloud Custodian "
        "| idle_stopper before |",
        "|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in results:
        ops = ", ".join(f"{k} {v}" for k, v in sorted(r.calls.items()))
        lines.append(
            f"| {r.fleet.size:,} | {len(r.fleet.idle):,} | {len(r.fleet.protected):,} | {len(r.stopped):,} "
            f"| {r.total:,} | {sum(r.minimum.values()):,} | {ops} "
            f"| {reference(CUSTODIAN, r)} | {reference(BEFORE, r)} |"
        )
    return lines


if __name__ == "__main__":
    import sys

    from bench.common import offline_environment

    offline_environment()
    results = [run(1000), run(1000, 0.01), run(10_000)]
    text = "\n".join(
        [f"# {__doc__.splitlines()[0]}", "", *__doc__.splitlines()[2:-2], "", *table(results), ""]
    )
    print(text)
    if "--write" in sys.argv:
        (ROOT / "docs" / "benchmarks-idle-equal-work.md").write_text(text)
