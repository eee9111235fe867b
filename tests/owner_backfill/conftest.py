"""owner_backfill test helpers: CloudTrail's event history (demo.cloudtrail.History: moto has
no LookupEvents) answering the function's client, the runner's clock a day after moto made
the resources (so that they are not "recent"), and the LookupEvents pacer on a simulated clock
(so that 2 calls a second cost no wall time)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from autopilot import aws, pacing, runner
from conftest import REGION
from demo.cloudtrail import History
from owner_backfill import service

LATER = timedelta(days=1)  # the runner's clock, this long after moto created the resources


@pytest.fixture
def env(stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "owner_backfill")
    monkeypatch.setenv("OWNER_BACKFILL", "true")
    _own_moto_snapshots()
    return stack_env


def _own_moto_snapshots() -> None:
    """moto's bundled AMIs come with snapshots of this account: give them an owner, so that
    each test sees only the resources it made."""
    client = boto3.client("ec2", region_name=REGION)
    ids = [s["SnapshotId"] for s in client.describe_snapshots(OwnerIds=["self"])["Snapshots"]]
    ids += [i["ImageId"] for i in client.describe_images(Owners=["self"])["Images"]]
    for start in range(0, len(ids), 1000):
        client.create_tags(Resources=ids[start : start + 1000], Tags=[{"Key": "Owner", "Value": "moto"}])


class SimulatedClock:
    def __init__(self) -> None:
        self.now = 1_000.0
        self.slept = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


@pytest.fixture
def paced(monkeypatch: pytest.MonkeyPatch) -> SimulatedClock:
    sim = SimulatedClock()
    monkeypatch.setattr(pacing, "clock", sim.clock)
    monkeypatch.setattr(pacing, "sleep", sim.sleep)
    monkeypatch.setattr(service, "PACER", pacing.Pacer({"LookupEvents": (1, service.LOOKUPS_PER_SECOND)}))
    return sim


@pytest.fixture
def history(env: dict[str, str], paced: SimulatedClock) -> Iterator[History]:
    found = History()
    client = aws.client("cloudtrail")
    found.install(client)
    yield found
    found.uninstall(client)


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> datetime:
    """The runner's clock: a day after now (moto's resources were made now)."""
    at = datetime.now(UTC) + LATER
    monkeypatch.setattr(runner, "clock", lambda: at)
    return at


@pytest.fixture
def scheduled(later: datetime) -> Callable[[], dict[str, Any]]:
    """A scheduled event of the function's rule, delivered at the runner's clock, own id."""

    def make() -> dict[str, Any]:
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": "123456789012",
            "time": later.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": REGION,
            "resources": [f"arn:aws:events:{REGION}:123456789012:rule/ops-autopilot-owner-backfill"],
            "detail": {},
        }

    return make


@pytest.fixture
def ec2() -> Any:
    return boto3.client("ec2", region_name=REGION)


def tags_of(ec2: Any, resource_id: str) -> dict[str, str]:
    found = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [resource_id]}])["Tags"]
    return {t["Key"]: t["Value"] for t in found}


def created(ec2: Any, resource_id: str) -> datetime:
    """When moto says the resource was created."""
    kind = resource_id.split("-", maxsplit=1)[0]
    if kind == "i":
        item = ec2.describe_instances(InstanceIds=[resource_id])["Reservations"][0]["Instances"][0]
        return item["NetworkInterfaces"][0]["Attachment"]["AttachTime"]
    if kind == "vol":
        return ec2.describe_volumes(VolumeIds=[resource_id])["Volumes"][0]["CreateTime"]
    if kind == "snap":
        return ec2.describe_snapshots(SnapshotIds=[resource_id])["Snapshots"][0]["StartTime"]
    when = ec2.describe_images(ImageIds=[resource_id])["Images"][0]["CreationDate"]
    return datetime.fromisoformat(when.replace("Z", "+00:00"))
