"""idle_stopper with owner digests and a warning: 200 idle instances of 20 owners (10 each, the
Owner tag an address), IdleStopperWarningHours=24, MailSenderAddress set - the warning run, then
the run 24 hours later (SIMULATED clock) that stops them; every call counted through the real
handler (moto, in-process).

    PYTHONPATH=layers/autopilot/python:functions:. .venv/bin/python -m bench.idle_stopper_owners

Minimum per run with R recipients (the API's):
- sesv2.SendEmail: R - one digest per recipient, each with its own text. SES's SendBulkEmail
  takes 50 destinations a call but one stored template for all of them (per-destination
  replacement data): ceil(R/50) with a template holding the whole body as data. Not done (a
  template resource and its IAM for every stack); the table shows the gap;
- ssm.GetParameter: 1 (the routing map, read each run that has something to route);
- the warning run: ec2.CreateTags 1 (every warned instance shares the planned time: 1,000 ids a
  call); the stop run: StopInstances 1, CreateTags 1 (the stopped tags), DeleteTags 1 (the
  planned-stop tag), as for any stop, and the runner's calls and 1 SNS Publish each.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import boto3
from moto.ec2.models import ec2_backends

from bench.common import (
    ACCOUNT,
    REGION,
    STACK,
    LambdaContext,
    measured,
    offline_environment,
    outbox_table,
    sandbox,
)
from bench.idle_stopper import SAMPLE
from idle_stopper.decide import Policy

INSTANCES, OWNERS = 200, 20
SENDER = "ops-autopilot@example.com"
NOW = datetime(2026, 3, 10, 14, 25, tzinfo=UTC)
POLICY = Policy()
SES_PER_1000 = 0.10  # USD, outbound e-mail (https://aws.amazon.com/ses/pricing/)


def _seed(now: datetime) -> list[str]:
    ec2 = boto3.client("ec2", region_name=REGION)
    backend: Any = ec2_backends[ACCOUNT][REGION]
    ids: list[str] = []
    for owner in range(OWNERS):
        tags = [
            {"Key": "Owner", "Value": f"owner{owner:02d}@example.com"},
            {"Key": "Name", "Value": f"box-{owner}"},
        ]
        made = ec2.run_instances(
            ImageId="ami-12c6146b",
            MinCount=INSTANCES // OWNERS,
            MaxCount=INSTANCES // OWNERS,
            InstanceType="t3.medium",
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        )["Instances"]
        ids += [i["InstanceId"] for i in made]
    for instance_id in ids:
        backend.get_instance(instance_id).launch_time = (now - timedelta(days=5)).replace(tzinfo=None)
    return ids


def _quiet(ids: list[str], now: datetime) -> None:
    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    data: list[dict[str, Any]] = []
    for instance_id in ids:
        dims = [{"Name": "InstanceId", "Value": instance_id}]
        for start in POLICY.period_starts(now):
            stamp = start + timedelta(minutes=7)
            data += [
                {"MetricName": name, "Dimensions": dims, "Timestamp": stamp, "Value": value}
                for name, value in (("CPUUtilization", 1.0), ("NetworkIn", 1e5), ("NetworkOut", 1e5))
            ]
    for n in range(0, len(data), 1000):
        cloudwatch.put_metric_data(Namespace="AWS/EC2", MetricData=data[n : n + 1000])


def measure() -> dict[str, Any]:
    """Calls of the warning run and of the stop run, by operation."""
    import json

    from autopilot import runner
    from idle_stopper import app

    figures: dict[str, Any] = {}
    with sandbox():
        ids = _seed(NOW)
        boto3.client("ses", region_name=REGION).verify_email_identity(EmailAddress=SENDER)
        boto3.client("ssm", region_name=REGION).put_parameter(
            Name="/bench/mail-routing", Type="String", Value="{}"
        )
        topic = boto3.client("sns", region_name=REGION).create_topic(Name="bench")["TopicArn"]
        env = {
            "STACK_NAME": STACK,
            "TOPIC_ARN": topic,
            "DRY_RUN": "false",
            "OWNER_TAG_KEY": "Owner",
            "OUTBOX_TABLE": outbox_table(),
            "LOOKBACK_HOURS": "24",
            "PERIODS_REQUIRED": "23",
            "CPU_PERCENT": "10",
            "NETWORK_MB": "5",
            "MAX_STOPS_PER_RUN": "1000",
            "WARNING_HOURS": "24",
            "MAIL_FROM": SENDER,
            "MAIL_ROUTING_PARAMETER": "/bench/mail-routing",
        }
        for name, when in (("warn", NOW), ("stop", NOW + timedelta(hours=24))):
            _quiet(ids, when)
            event = json.loads(SAMPLE.read_text())
            event.update(id=str(uuid.uuid4()), time=when.strftime("%Y-%m-%dT%H:%M:%SZ"))
            with (
                mock.patch.dict(os.environ, env),
                mock.patch.object(runner, "clock", lambda when=when: when),
                contextlib.redirect_stdout(io.StringIO()),
                measured() as (calls, _),
            ):
                app.lambda_handler(event, LambdaContext(300_000))
            figures[name] = dict(sorted(Counter(calls.by_operation()).items()))
        states = boto3.client("ec2", region_name=REGION).describe_instances(InstanceIds=ids)["Reservations"]
        figures["stopped"] = sum(i["State"]["Name"] != "running" for r in states for i in r["Instances"])
    return figures


def lines(figures: dict[str, Any]) -> list[str]:
    """The section of docs/benchmarks.md."""
    bulk = math.ceil(OWNERS / 50)
    out = [
        "## Owner digests and warn-then-stop (idle_stopper)",
        "",
        f"{INSTANCES} idle instances of {OWNERS} owners (each Owner tag an address), "
        "IdleStopperWarningHours=24, MailSenderAddress set: the run that warns, and the run 24 hours "
        f"later (SIMULATED clock) that stops them ({figures['stopped']} stopped) - through the real handler "
        "(`python -m bench.idle_stopper_owners`).",
        "",
        "| Run | Calls | SES SendEmail (minimum) | SSM GetParameter |",
        "|---|---|---|---|",
    ]
    for name in ("warn", "stop"):
        calls = figures[name]
        ops = ", ".join(f"{k} {v}" for k, v in calls.items())
        out.append(
            f"| {name} | {sum(calls.values())}: {ops} | {calls.get('sesv2.SendEmail', 0)} ({bulk}) "
            f"| {calls.get('ssm.GetParameter', 0)} |"
        )
    monthly = 30 * OWNERS * SES_PER_1000 / 1000
    out += [
        "",
        f"SendEmail's minimum is SES's SendBulkEmail: 50 destinations a call, {bulk} for {OWNERS} owners, "
        "with one stored template whose per-destination data holds each digest; this sends one SendEmail "
        f"per recipient ({OWNERS}x the calls, the same number of mails and the same price). Cost: SES bills "
        f"${SES_PER_1000:.2f} per 1,000 mails - a digest a day to each of {OWNERS} owners is "
        f"${monthly:.2f} a month; the GetParameter is free (standard parameters). The warning adds one "
        "CreateTags and one DeleteTags a warned batch (EC2 calls: no charge). Off by default "
        "(MailSenderAddress empty): no SES call at all, the reference account's cost above is unchanged.",
    ]
    return out


def main() -> None:
    offline_environment()
    figures = measure()
    print(figures)
    print("\n".join(lines(figures)))
    assert figures["stopped"] == INSTANCES


if __name__ == "__main__":
    main()
