"""idle_stopper's CloudWatch bill: metrics asked for per hourly run, and dollars a month.

GetMetricData is billed per metric asked for ($0.01 per 1,000), whatever the number of periods
each returns: asking for one hour costs what asking for 24 does. So the saving is in not
asking. Each run asks for the peak CPU of every instance it judges, for NetworkIn and NetworkOut
only where the CPU left idle possible, and for nothing about an instance it remembers busy
(a busy hour still in the window: it cannot be idle yet; memory in the outbox table, read by
the runner's one Query and written only when it changed).

The fleet (real handler, moto, the clock moved an hour per run, GetMetricData answered from the
profile below, every idle instance allowed to stop): N instances, launched days ago -
- 60 % busy: CPU 50 % every hour;
- 20 % talkers: CPU 2 %, 100 MB of network every hour (quiet CPU, busy network);
- 10 % bursty: CPU 60 % one hour in eight, else quiet (3 busy hours a day: never idle);
- 10 % idle: quiet; stopped by the first run.

References: idle_stopper before issue 22 asked for 3 metrics of every judged instance every
run; issue 22 measured it at about 1.5x Cloud Custodian's bill at N = 1,000, i.e. Custodian's
policy asks for 2 metrics per running instance per run. A month is 730 hourly runs.

``python -m bench.idle_stopper_bill --write`` writes docs/benchmarks-idle-bill.md.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import boto3
from moto.cloudwatch.models import CloudWatchBackend
from moto.ec2.models import ec2_backends

from bench import prices
from bench.common import ACCOUNT, REGION, ROOT, LambdaContext, measured, metrics_sent, sandbox
from bench.idle_stopper import scheduled_run

RUNS_A_MONTH = 730
CAP = 1000
LAUNCH_BATCH = 500
CUSTODIAN_METRICS_PER_INSTANCE = 2
BEFORE_METRICS_PER_INSTANCE = 3
MB = 1_000_000


PROFILES = ("busy",) * 6 + ("talker",) * 2 + ("bursty", "idle")


def kind(n: int) -> str:
    """The profile of the n-th instance: 6 busy, 2 talkers, 1 bursty and 1 idle in every ten."""
    return PROFILES[n % 10]


def _value(profile: str, n: int, metric: str, at: datetime) -> float:
    hour = int(at.timestamp() // 3600)
    cpu = metric == "CPUUtilization"
    if profile == "busy":
        return 50.0 if cpu else 1 * MB
    if profile == "talker":
        return 2.0 if cpu else 100 * MB
    if profile == "bursty":
        return (60.0 if hour % 8 == n % 8 else 2.0) if cpu else 0.1 * MB
    return 1.0 if cpu else 0.001 * MB


def _metrics(profiles: dict[str, tuple[str, int]]) -> Any:
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
            profile, n = profiles[stat["Metric"]["Dimensions"][0]["Value"]]
            name = stat["Metric"]["MetricName"]
            results.append(
                {
                    "id": query["Id"],
                    "label": name,
                    "values": [_value(profile, n, name, s) for s in stamps],
                    "timestamps": stamps,
                    "status_code": "Complete",
                }
            )
        return results

    return mock.patch.object(CloudWatchBackend, "get_metric_data", get_metric_data)


def _seed(count: int, now: datetime) -> dict[str, tuple[str, int]]:
    ec2 = boto3.client("ec2", region_name=REGION)
    backend = ec2_backends[ACCOUNT][REGION]
    ids: list[str] = []
    for start in range(0, count, LAUNCH_BATCH):
        size = min(LAUNCH_BATCH, count - start)
        reply = ec2.run_instances(ImageId="ami-12c6146b", MinCount=size, MaxCount=size)
        ids += [i["InstanceId"] for i in reply["Instances"]]
    for n, instance_id in enumerate(ids):
        backend.get_instance(instance_id).launch_time = (now - timedelta(days=3, minutes=n)).replace(
            tzinfo=None
        )
    return {instance_id: (kind(n), n) for n, instance_id in enumerate(ids)}


@dataclass(frozen=True)
class Hour:
    running: int
    metrics: int  # asked for (what GetMetricData bills)
    calls: int  # GetMetricData requests
    remembered: int
    memory_writes: int
    memory_bytes: int  # the memory items' size as stored
    metrics_sent: int = 0  # custom metrics the run sent (bench.common.metrics_sent)
    total_calls: int = 0  # AWS calls of every kind
    seconds: float = 0.0  # in-process wall time (moto's work included)


@dataclass(frozen=True)
class Result:
    size: int
    hours: list[Hour]
    stopped: set[str]
    idle: set[str]

    def steady(self, first: int) -> float:
        later = self.hours[first:]
        return sum(h.metrics for h in later) / len(later)


def _memory_bytes() -> int:
    table = os.environ["OUTBOX_TABLE"]
    items = boto3.client("dynamodb", region_name=REGION).scan(TableName=table)["Items"]
    return sum(len(i["data"]["B"]) for i in items if i.get("status", {}).get("S") == "memo")


def run(count: int, hours: int, on_hour: Callable[[int], None] | None = None) -> Result:
    from autopilot import runner
    from idle_stopper import app

    start = datetime.now(UTC).replace(minute=20, second=0, microsecond=0)
    log: list[Hour] = []
    with sandbox():
        profiles = _seed(count, start)
        event, env = scheduled_run(CAP)
        with mock.patch.dict(os.environ, env), _metrics(profiles), contextlib.redirect_stdout(io.StringIO()):
            for hour in range(hours):
                now = start + timedelta(hours=hour)
                delivered = {
                    **event,
                    "id": f"{event['id'][:-4]}{hour:04d}",
                    "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
                context = LambdaContext(900_000)
                context.aws_request_id = f"bench-{hour}"
                with mock.patch.object(runner, "clock", lambda now=now: now), measured() as (calls, elapsed):
                    result = app.lambda_handler(delivered, context)
                by_op = calls.by_operation()
                log.append(
                    Hour(
                        running=int(result["Checked"]),
                        metrics=int(result["MetricsRequested"]),
                        calls=by_op.get("cloudwatch.GetMetricData", 0),
                        remembered=int(result["RememberedBusy"]),
                        memory_writes=sum(
                            1
                            for c in calls.of("dynamodb", "PutItem")
                            if c["Item"].get("status", {}).get("S") == "memo"
                        ),
                        memory_bytes=_memory_bytes(),
                        metrics_sent=metrics_sent(result),
                        total_calls=calls.count(),
                        seconds=elapsed[0],
                    )
                )
                if on_hour:
                    on_hour(hour)
        states = boto3.client("ec2", region_name=REGION).describe_instances()["Reservations"]
        stopped = {i["InstanceId"] for r in states for i in r["Instances"] if i["State"]["Name"] != "running"}
    idle = {i for i, (profile, _) in profiles.items() if profile == "idle"}
    return Result(count, log, stopped, idle)


@dataclass(frozen=True)
class Steady:
    """Per hourly run after the first day (every instance asked again since the first run)."""

    metrics_requested: float
    metrics_sent: float  # custom metrics sent, on average (a metric is billed per hour sent)
    calls: float
    seconds: float


STEADY_FROM = 24


def steady_state(count: int, hours: int = 48) -> Steady:
    """The reference fleet's hourly run once the first day is over (the cost model's)."""
    later = run(count, hours).hours[STEADY_FROM:]
    n = len(later)
    return Steady(
        metrics_requested=sum(h.metrics for h in later) / n,
        metrics_sent=sum(h.metrics_sent for h in later) / n,
        calls=sum(h.total_calls for h in later) / n,
        seconds=sum(h.seconds for h in later) / n,
    )


def dollars(metrics_per_run: float) -> float:
    return metrics_per_run * RUNS_A_MONTH * prices.CW_GET_METRIC_DATA_PER_METRIC


def report(r: Result) -> list[str]:
    steady_from = STEADY_FROM  # the second day: every instance has been asked again since the first run
    running = r.hours[-1].running
    steady = r.steady(steady_from)
    before = BEFORE_METRICS_PER_INSTANCE * running
    custodian = CUSTODIAN_METRICS_PER_INSTANCE * running
    writes = sum(h.memory_writes for h in r.hours[steady_from:]) / len(r.hours[steady_from:])
    size_kb = max(h.memory_bytes for h in r.hours) / 1024
    memory_dollars = RUNS_A_MONTH * (
        writes * math.ceil(size_kb) * prices.DDB_WRITE_REQUEST_UNIT
        + math.ceil(size_kb / 4) * prices.DDB_READ_REQUEST_UNIT
    )
    lines = [
        f"## N = {r.size:,} instances, {len(r.hours)} hourly runs",
        "",
        f"The first run stopped {len(r.stopped & r.idle):,} of the {len(r.idle):,} idle instances "
        f"(and nothing else: {len(r.stopped - r.idle)}); {running:,} stay running.",
        "",
        "| run | running | metrics asked for | GetMetricData calls | remembered busy | memory writes |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    shown = [0, 1, 2, 3, 12, 23, 24, 25, 36, len(r.hours) - 1]
    for n in sorted({s for s in shown if s < len(r.hours)}):
        h = r.hours[n]
        lines.append(
            f"| {n + 1} | {h.running:,} | {h.metrics:,} | {h.calls} | {h.remembered:,} | {h.memory_writes} |"
        )
    lines += [
        "",
        f"| per hourly run, after the first day | metrics | $ a month ({RUNS_A_MONTH} runs) |",
        "|---|---:|---:|",
        f"| idle_stopper now (average of runs {steady_from + 1}-{len(r.hours)}) | {steady:,.0f} "
        f"| {dollars(steady):,.2f} |",
        f"| idle_stopper before issue 22 (3 per instance) | {before:,} | {dollars(before):,.2f} |",
        f"| Cloud Custodian, issue 22's measurement (2 per instance) | {custodian:,} "
        f"| {dollars(custodian):,.2f} |",
        "",
        f"The memory: at most {size_kb:,.1f} KB stored, {writes:.2f} writes a run after the first day "
        f"(DynamoDB on demand: ${memory_dollars:,.4f} a month for its writes and the Query's reads).",
        "",
    ]
    return lines


if __name__ == "__main__":
    import sys

    from bench.common import offline_environment

    offline_environment()
    results = [run(1000, 48)]
    doc = __doc__.splitlines()
    text = "\n".join([f"# {doc[0]}", "", *doc[2:-2], "", *(line for r in results for line in report(r))])
    print(text)
    if "--write" in sys.argv:
        (ROOT / "docs" / "benchmarks-idle-bill.md").write_text(text)
