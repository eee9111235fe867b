"""idle_stopper test helpers: instances in moto's EC2 (launched in the past), metrics written into
moto's CloudWatch, the clock pinned, and scheduled events with their own ids."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto.ec2.models import ec2_backends

from autopilot import runner
from conftest import FakeContext
from idle_stopper.decide import Policy

ACCOUNT = "123456789012"
REGION = "eu-west-1"
AMI = "ami-12c6146b"
# The run's time, fixed: the runner's clock is pinned to it (the ``env`` fixture) and the fleet
# is launched and measured relative to it (moto's backend is told the launch times). Outside
# the 07:00 UTC hour, when a malformed StopAfter alone mails (a test sets that hour itself).
NOW = datetime(2026, 3, 10, 14, 25, 41, tzinfo=UTC)
POLICY = Policy(lookback_periods=24, periods_required=23, cpu_percent=10.0, network_mb=5.0)
ENV = {
    "POWERTOOLS_SERVICE_NAME": "idle_stopper",
    "LOOKBACK_HOURS": "24",
    "PERIODS_REQUIRED": "23",
    "CPU_PERCENT": "10",
    "NETWORK_MB": "5",
    "MAX_STOPS_PER_RUN": "10",
}


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[datetime], None]:
    """clock(when): the runner's clock (autopilot.runner.clock, the run's "now") reads ``when``."""

    def set_to(when: datetime) -> None:
        monkeypatch.setattr(runner, "clock", lambda: when)

    return set_to


@pytest.fixture
def env(
    stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, clock: Callable[[datetime], None]
) -> dict[str, str]:
    """The function's environment (the stack's, OWNER_TAG_KEY=Owner, and its own), the clock at NOW."""
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    clock(NOW)
    return {**stack_env, **ENV}


@pytest.fixture
def new_event(load_event: Callable[[str], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """new_event() -> the scheduled sample event of a new run: its own id, the clock's time."""

    def make() -> dict[str, Any]:
        scheduled = load_event("idle_stopper/eventbridge.scheduled")
        scheduled["id"] = str(uuid.uuid4())
        return scheduled

    return make


@pytest.fixture
def event(env: dict[str, str], new_event: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The scheduled event of a new run, dated by the pinned clock (hence ``env`` first)."""
    return new_event()


class Ec2:
    """Arranging and checking moto's EC2 and CloudWatch (plain boto3 clients, not seen by the
    call recorder). The fixture ``ec2`` is one of these."""

    now = NOW
    policy = POLICY

    @staticmethod
    def context(request_id: str = "request-1") -> FakeContext:
        """A Lambda context of one invocation (a retry of the same event has a new request id)."""
        ctx = FakeContext()
        ctx.aws_request_id = request_id  # type: ignore[misc]
        return ctx

    @staticmethod
    def launch(
        name: str,
        *,
        count: int = 1,
        tags: dict[str, str] | None = None,
        age: timedelta = timedelta(days=3),
        spot: bool = False,
        protected: bool = False,
        owner_key: str = "Owner",
    ) -> list[str]:
        ec2 = boto3.client("ec2", region_name=REGION)
        all_tags = {"Name": name, owner_key: f"{name}@example.com", **(tags or {})}
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
            Ec2.backend_instance(instance_id).launch_time = (NOW - age).replace(tzinfo=None)
        return ids

    @staticmethod
    def backend_instance(instance_id: str) -> Any:
        """moto cannot launch an instance in the past; its backend object can be told it did."""
        return ec2_backends[ACCOUNT][REGION].get_instance(instance_id)

    @staticmethod
    def write_metrics(
        instance_id: str,
        now: datetime = NOW,
        *,
        cpu: float = 1.5,
        net: float = 200_000.0,
        busy: Iterable[int] = (),
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

    @staticmethod
    def states() -> dict[str, str]:
        reservations = boto3.client("ec2", region_name=REGION).describe_instances()["Reservations"]
        return {i["InstanceId"]: i["State"]["Name"] for r in reservations for i in r["Instances"]}

    @staticmethod
    def tags_of(instance_id: str) -> dict[str, str]:
        ec2 = boto3.client("ec2", region_name=REGION)
        found = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [instance_id]}])["Tags"]
        return {t["Key"]: t["Value"] for t in found}

    @staticmethod
    def tag(instance_id: str, **tags: str) -> None:
        boto3.client("ec2", region_name=REGION).create_tags(
            Resources=[instance_id], Tags=[{"Key": k, "Value": v} for k, v in tags.items()]
        )


@pytest.fixture
def ec2() -> Ec2:
    return Ec2()


@pytest.fixture
def fleet(ec2: Ec2) -> dict[str, str]:
    """One instance of each kind; all idle by their metrics unless said otherwise."""
    ids = {
        "idle": ec2.launch("dev-box", age=timedelta(days=4))[0],
        "idle-burst": ec2.launch("test-box", age=timedelta(days=2))[0],
        "busy": ec2.launch("build-box")[0],
        "asg": ec2.launch("web", tags={"aws:autoscaling:groupName": "web-asg"})[0],
        "eks": ec2.launch("node", tags={"eks:cluster-name": "prod"})[0],
        "spot": ec2.launch("spot-box", spot=True)[0],
        "opted-out": ec2.launch("db-box", tags={"AutoStop": "False"})[0],
        "lifetime": ec2.launch("demo-box", tags={"StopAfter": "2h"}, age=timedelta(hours=3))[0],
        "malformed": ec2.launch("odd-box", tags={"StopAfter": "8 hours"})[0],
        "young": ec2.launch("new-box", age=timedelta(hours=5))[0],
        "protected": ec2.launch("pet-box", protected=True)[0],
        "no-data": ec2.launch("quiet-box")[0],
    }
    for kind, instance_id in ids.items():
        if kind == "no-data":
            continue
        ec2.write_metrics(
            instance_id, cpu=60.0 if kind == "busy" else 1.5, busy=[20] if kind == "idle-burst" else ()
        )
    return ids


@pytest.fixture
def expiring(env: dict[str, str], ec2: Any) -> list[str]:
    """Three instances past StopAfter (two lifetime stops with one tag set, one idle), one kept."""
    ids = ec2.launch("builder", count=2, tags={"StopAfter": "2h"}, age=timedelta(days=1))
    idle = ec2.launch("dev-box")[0]
    ec2.write_metrics(idle)
    ec2.launch("db")  # no metrics: too little data, kept
    return [*ids, idle]
