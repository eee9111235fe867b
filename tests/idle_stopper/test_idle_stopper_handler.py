"""idle_stopper end to end against moto: instances in moto's EC2, metrics written into moto's
CloudWatch with put_metric_data, the real handler on the real sample event, the mail read back."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto.ec2.models import ec2_backends

from autopilot.config import ConfigError
from idle_stopper import app, service
from idle_stopper.config import IdleStopperConfig
from idle_stopper.decision import Policy

pytestmark = pytest.mark.integration

ACCOUNT = "123456789012"
REGION = "eu-west-1"
AMI = "ami-12c6146b"
NOW = datetime.now(UTC).replace(microsecond=0)
POLICY = Policy(lookback_periods=24, periods_required=23, cpu_percent=10.0, network_mb=5.0)


@pytest.fixture
def env(stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    variables = {
        "POWERTOOLS_SERVICE_NAME": "idle_stopper",
        "LOOKBACK_HOURS": "24",
        "PERIODS_REQUIRED": "23",
        "CPU_PERCENT": "10",
        "NETWORK_MB": "5",
        "MAX_STOPS_PER_RUN": "10",
        "OWNER_TAG_KEY": "Owner",
    }
    for key, value in variables.items():
        monkeypatch.setenv(key, value)
    return {**stack_env, **variables}


@pytest.fixture
def event(load_event: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    scheduled = load_event("idle_stopper/eventbridge.scheduled")
    # moto launches instances "now", so the run happens now too (with launch times moved back)
    scheduled["time"] = NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    # a malformed StopAfter alone mails once a day; keep these runs out of that hour
    if NOW.hour == 7:
        scheduled["time"] = (NOW + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return scheduled


def run_time(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["time"].replace("Z", "+00:00"))


def launch(
    name: str,
    *,
    count: int = 1,
    tags: dict[str, str] | None = None,
    age: timedelta = timedelta(days=3),
    spot: bool = False,
    protected: bool = False,
) -> list[str]:
    ec2 = boto3.client("ec2", region_name=REGION)
    all_tags = {"Name": name, "Owner": f"{name}@example.com", **(tags or {})}
    kwargs: dict[str, Any] = {
        "ImageId": AMI,
        "MinCount": count,
        "MaxCount": count,
        "InstanceType": "t3.micro",
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in all_tags.items()]}
        ],
    }
    if spot:
        kwargs["InstanceMarketOptions"] = {"MarketType": "spot"}
    if protected:
        kwargs["DisableApiStop"] = True
    ids = [i["InstanceId"] for i in ec2.run_instances(**kwargs)["Instances"]]
    for instance_id in ids:
        backend_instance(instance_id).launch_time = (NOW - age).replace(tzinfo=None)
    return ids


def backend_instance(instance_id: str) -> Any:
    """moto cannot launch an instance in the past; its backend object can be told it did."""
    return ec2_backends[ACCOUNT][REGION].get_instance(instance_id)


def write_metrics(
    instance_id: str, now: datetime, *, cpu: float = 1.5, net: float = 200_000.0, busy: Iterable[int] = ()
) -> None:
    """One datapoint per metric in each of the window's periods (busy ones: 80% CPU)."""
    busy = set(busy)
    data = []
    for index, start in enumerate(POLICY.period_starts(now)):
        stamp = start + timedelta(minutes=7)
        dims = [{"Name": "InstanceId", "Value": instance_id}]
        data += [
            {"MetricName": "CPUUtilization", "Dimensions": dims, "Timestamp": stamp,
             "Value": 80.0 if index in busy else cpu, "Unit": "Percent"},
            {"MetricName": "NetworkIn", "Dimensions": dims, "Timestamp": stamp,
                 "Value": net / 2, "Unit": "Bytes"},
            {"MetricName": "NetworkOut", "Dimensions": dims, "Timestamp": stamp,
                 "Value": net / 2, "Unit": "Bytes"},
        ]  # fmt: skip
    boto3.client("cloudwatch", region_name=REGION).put_metric_data(Namespace="AWS/EC2", MetricData=data)


def queries_per_call(calls: Any) -> list[int]:
    return [len(p["MetricDataQueries"]) for p in calls.of("cloudwatch", "GetMetricData")]


def states() -> dict[str, str]:
    reservations = boto3.client("ec2", region_name=REGION).describe_instances()["Reservations"]
    return {i["InstanceId"]: i["State"]["Name"] for r in reservations for i in r["Instances"]}


def tags_of(instance_id: str) -> dict[str, str]:
    ec2 = boto3.client("ec2", region_name=REGION)
    found = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [instance_id]}])["Tags"]
    return {t["Key"]: t["Value"] for t in found}


@pytest.fixture
def fleet(event: dict[str, Any]) -> dict[str, str]:
    """One instance of each kind; all idle by their metrics unless said otherwise."""
    now = run_time(event)
    ids = {
        "idle": launch("dev-box", age=timedelta(days=4))[0],
        "idle-burst": launch("test-box", age=timedelta(days=2))[0],
        "busy": launch("build-box")[0],
        "asg": launch("web", tags={"aws:autoscaling:groupName": "web-asg"})[0],
        "eks": launch("node", tags={"eks:cluster-name": "prod"})[0],
        "spot": launch("spot-box", spot=True)[0],
        "opted-out": launch("db-box", tags={"AutoStop": "False"})[0],
        "lifetime": launch("demo-box", tags={"StopAfter": "2h"}, age=timedelta(hours=3))[0],
        "malformed": launch("odd-box", tags={"StopAfter": "8 hours"})[0],
        "young": launch("new-box", age=timedelta(hours=5))[0],
        "protected": launch("pet-box", protected=True)[0],
        "no-data": launch("quiet-box")[0],
    }
    for kind, instance_id in ids.items():
        if kind == "no-data":
            continue
        write_metrics(
            instance_id,
            now,
            cpu=60.0 if kind == "busy" else 1.5,
            busy=[20] if kind == "idle-burst" else (),
        )
    return ids


def test_stops_idle_and_expired_instances_only_tags_them_and_mails_once(
    env: dict[str, str],
    event: dict[str, Any],
    fleet: dict[str, str],
    mailbox: Any,
    calls: Any,
    lambda_context: Any,
) -> None:
    result = app.lambda_handler(event, lambda_context)

    stopped = {k for k, i in fleet.items() if states()[i] != "running"}
    assert stopped == {"idle", "idle-burst", "lifetime", "malformed"}
    assert result["Changed"] == 4 and result["Failed"] == 0
    assert result["SkippedStopProtected"] == 1 and result["SkippedSpot"] == 1
    assert result["SkippedAutoScaling"] == 1 and result["SkippedKubernetes"] == 1
    assert result["SkippedOptedOut"] == 1 and result["SkippedTooYoung"] == 1
    assert result["SkippedTooLittleData"] == 1 and result["MalformedStopAfter"] == 1

    tags = tags_of(fleet["idle"])
    assert tags["StoppedBy"] == "ops-autopilot/ops-autopilot-test"
    assert tags["StoppedReason"].startswith("idle: 24 of 24 hours quiet - peak CPU 1.5 pct")
    assert tags["StoppedAt"] == run_time(event).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert tags_of(fleet["idle-burst"])["StoppedReason"].startswith(
        "idle: 23 of 24 hours quiet - peak CPU 80.0 pct"
    )
    assert tags_of(fleet["lifetime"])["StoppedReason"].startswith(
        "lifetime: StopAfter=2h reached after 3h 0m running"
    )
    for kind in fleet.keys() - stopped:
        assert "StoppedBy" not in tags_of(fleet[kind]), kind

    mails = mailbox()
    assert len(mails) == 1
    mail = mails[0]
    assert mail["subject"] == "[ops-autopilot-test] 4 instances stopped (3 idle, 1 past StopAfter)"
    assert mail["attributes"] == {"automation": "idle_stopper", "severity": "info"}
    body = mail["body"]
    for kind in ("idle", "idle-burst", "lifetime", "malformed", "protected"):
        assert fleet[kind] in body, kind
    for kind in ("busy", "asg", "spot", "opted-out", "young", "no-data", "eks"):
        assert fleet[kind] not in body, kind
    assert "dev-box@example.com" in body and "(dev-box)" in body
    assert "StopAfter='8 hours' is not a whole number" in body
    assert "AutoStop=false" in body and "start-instances" in body
    assert (
        f"https://{REGION}.console.aws.amazon.com/ec2/home?region={REGION}#InstanceDetails:instanceId="
        in body
    )

    # the budget: one of each, the attribute looked up for the 4 stops and the protected one
    assert calls.count("ec2", "DescribeInstances") == 1
    assert calls.of("ec2", "DescribeInstances")[0]["Filters"] == [
        {"Name": "instance-state-name", "Values": ["running"]}
    ]
    assert queries_per_call(calls) == [3 * 6]  # idle, idle-burst, busy, malformed, protected, no-data
    assert calls.count("ec2", "DescribeInstanceAttribute") == 5
    assert calls.count("ec2", "StopInstances") == 1
    # one call per distinct tag set: the two instances idle all day with the same peaks share one
    assert calls.count("ec2", "CreateTags") == 3
    assert calls.count("sns", "Publish") == 1


def test_second_run_changes_nothing_and_says_nothing(
    env: dict[str, str],
    event: dict[str, Any],
    fleet: dict[str, str],
    mailbox: Any,
    calls: Any,
    lambda_context: Any,
) -> None:
    app.lambda_handler(event, lambda_context)
    first = len(calls.calls)
    mails = len(mailbox())
    result = app.lambda_handler(event, lambda_context)
    assert result["Changed"] == 0 and result["Checked"] == 8  # the 4 stopped are no longer running
    later = calls.calls[first:]
    assert [c.operation for c in later if c.operation in ("StopInstances", "CreateTags", "Publish")] == []
    assert len(mailbox()) == mails


def test_dry_run_decides_the_same_and_changes_nothing(
    env: dict[str, str],
    event: dict[str, Any],
    fleet: dict[str, str],
    mailbox: Any,
    calls: Any,
    lambda_context: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DRY_RUN", "true")
    result = app.lambda_handler(event, lambda_context)
    assert set(states().values()) == {"running"}
    assert [c.operation for c in calls.mutating()] == ["Publish"]
    assert result["Changed"] == 0 and result["WouldStop"] == 4
    mail = mailbox()[0]
    assert (
        mail["subject"]
        == "[ops-autopilot-test] DRY RUN: 4 instances would be stopped (3 idle, 1 past StopAfter)"
    )
    assert "DRY RUN: nothing was changed" in mail["body"]
    assert fleet["idle"] in mail["body"]


def test_cap_limits_the_stops_and_the_mail_says_so(
    env: dict[str, str],
    event: dict[str, Any],
    fleet: dict[str, str],
    mailbox: Any,
    lambda_context: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAX_STOPS_PER_RUN", "2")
    result = app.lambda_handler(event, lambda_context)
    stopped = {k for k, i in fleet.items() if states()[i] != "running"}
    # lifetime first, then the longest running idle instance
    assert stopped == {"lifetime", "idle"}
    # the protected one is never even looked up: the cap was filled before its turn
    assert result["SkippedOverCap"] == 3
    assert "this run's limit of 2 stops was reached" in mailbox()[0]["body"]


def test_a_refused_stop_is_reported_and_the_others_still_stop(
    env: dict[str, str],
    event: dict[str, Any],
    mailbox: Any,
    calls: Any,
    lambda_context: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Stop protection switched on between the check and the stop: StopInstances refuses the
    whole batch with OperationNotPermitted; the others are retried alone and stop."""
    now = run_time(event)
    idle = launch("dev", count=2)
    protected = launch("pet", protected=True)[0]
    for instance_id in [*idle, protected]:
        write_metrics(instance_id, now)
    monkeypatch.setattr(service, "is_stop_protected", lambda instance_id, failures: False)

    result = app.lambda_handler(event, lambda_context)

    assert result["Failed"] == 1 and result["Changed"] == 2
    assert {i: s for i, s in states().items() if s == "running"} == {protected: "running"}
    assert "StoppedBy" not in tags_of(protected)
    assert calls.count("ec2", "StopInstances") == 1 + 3  # the batch, then one by one
    mail = mailbox()[0]
    assert (
        mail["subject"]
        == "[ops-autopilot-test] 2 instances stopped (2 idle); 1 instance could not be handled"
    )
    assert mail["attributes"]["severity"] == "warning"
    assert "Could not stop: OperationNotPermitted" in mail["body"]
    assert protected in mail["body"]


def test_instance_store_root_is_never_stopped(
    env: dict[str, str], event: dict[str, Any], mailbox: Any, lambda_context: Any
) -> None:
    instance_id = launch("old-school")[0]
    backend_instance(instance_id).root_device_type = "instance-store"  # moto launches EBS roots only
    write_metrics(instance_id, run_time(event))
    result = app.lambda_handler(event, lambda_context)
    assert states()[instance_id] == "running"
    assert result["SkippedInstanceStore"] == 1
    assert mailbox() == []


def test_malformed_event_changes_nothing(
    env: dict[str, str], load_event: Callable[[str], dict[str, Any]], calls: Any, lambda_context: Any
) -> None:
    launch("dev")
    result = app.lambda_handler(load_event("idle_stopper/eventbridge.not_scheduled"), lambda_context)
    assert result["status"] == "ignored" and "expected a scheduled event" in result["reason"]
    assert calls.calls == []


def test_malformed_stop_after_alone_mails_once_a_day(
    env: dict[str, str], event: dict[str, Any], mailbox: Any, lambda_context: Any
) -> None:
    launch("odd", tags={"StopAfter": "1.5h"}, age=timedelta(hours=5))
    app.lambda_handler(event, lambda_context)
    assert mailbox() == []  # not the daily report hour (see the event fixture)
    event["time"] = run_time(event).replace(hour=7).strftime("%Y-%m-%dT%H:%M:%SZ")
    app.lambda_handler(event, lambda_context)
    mails = mailbox()
    assert [m["subject"] for m in mails] == ["[ops-autopilot-test] 1 instance with a malformed StopAfter tag"]


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PERIODS_REQUIRED", "25", "above LOOKBACK_HOURS"),
        ("LOOKBACK_HOURS", "0", "below the minimum"),
        ("MAX_STOPS_PER_RUN", "500", "above the maximum"),
        ("CPU_PERCENT", "ten", "not a number"),
        ("OWNER_TAG_KEY", "", "OWNER_TAG_KEY is required"),
    ],
)
def test_bad_configuration_fails_loudly(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=message):
        IdleStopperConfig.from_env()


def test_budget_for_300_instances(
    env: dict[str, str], event: dict[str, Any], mailbox: Any, calls: Any, lambda_context: Any
) -> None:
    """N = 300 running instances, k = 3 metrics: ceil(N·k/500) GetMetricData calls, one
    DescribeInstances page, one StopInstances, CreateTags bounded by the stops."""
    now = run_time(event)
    ids = launch("fleet", count=290)
    expiring = launch("short-lived", count=5, tags={"StopAfter": "1d"}, age=timedelta(days=2))
    launch("asg", count=5, tags={"aws:autoscaling:groupName": "web"})
    for instance_id in ids[:2]:  # moto's GetMetricData scans every datapoint per query: keep it small
        write_metrics(instance_id, now)

    result = app.lambda_handler(event, lambda_context)

    judged = 290  # the expiring ones need no metrics, the ASG ones are excluded first
    assert result["Checked"] == 300
    assert calls.count("cloudwatch", "GetMetricData") == math.ceil(judged * 3 / 500) == 2
    assert queries_per_call(calls) == [500, judged * 3 - 500]
    assert calls.count("ec2", "DescribeInstances") == math.ceil(300 / 1000)
    assert calls.of("ec2", "DescribeInstances")[0]["MaxResults"] == 1000
    assert calls.count("ec2", "DescribeInstanceAttribute") == 7
    assert calls.count("ec2", "StopInstances") == 1
    assert calls.count("ec2", "CreateTags") <= 7
    assert calls.count("sns", "Publish") == 1
    assert len(calls.calls) == 2 + 1 + 7 + 1 + calls.count("ec2", "CreateTags") + 1
    assert result["Changed"] == 7
    assert {i for i, s in states().items() if s != "running"} == {*ids[:2], *expiring}
