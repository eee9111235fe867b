"""owner_backfill in the sandbox.

Resources made a day ago without an owner tag, and CloudTrail's record of who made them (a
simulated event history: the sandbox has no LookupEvents); the real scheduled event through the
real handler - a dry run, the real run that writes the owners and mails the pass's summary, and
the next run, which has nothing left to look for."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from autopilot import runner
from demo.cloudtrail import History, answering, iam_user, record
from demo.sandbox import Sandbox, sample_event, step

TITLE = "owners for what already exists, from CloudTrail's history of who created it"
ENV = {"OWNER_BACKFILL": "true"}  # the function's own environment (template.yaml: OwnerBackfill)
LATER = timedelta(days=1)  # the story's clock: a day after the sandbox made the resources


@contextmanager
def _a_day_later() -> Iterator[datetime]:
    at = datetime.now(UTC) + LATER
    saved = runner.clock
    runner.clock = lambda: at
    try:
        yield at
    finally:
        runner.clock = saved


def _event(at: datetime) -> dict[str, Any]:
    event = sample_event("owner_backfill/eventbridge.scheduled")
    return {**event, "id": str(uuid.uuid4()), "time": at.strftime("%Y-%m-%dT%H:%M:%SZ")}


def _made(sb: Sandbox, history: History) -> dict[str, str]:
    ec2 = sb.client("ec2")

    def launch(tags: dict[str, str] | None = None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "ImageId": "ami-12c6146b",
            "MinCount": 1,
            "MaxCount": 1,
            "InstanceType": "t3.micro",
        }
        if tags:
            kwargs["TagSpecifications"] = [
                {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
            ]
        instance: dict[str, Any] = ec2.run_instances(**kwargs)["Instances"][0]
        return instance

    def made_at(instance: dict[str, Any]) -> datetime:
        when: datetime = instance["NetworkInterfaces"][0]["Attachment"]["AttachTime"]
        return when + timedelta(seconds=2)

    # moto's bundled AMIs come with snapshots of this account and no history: given an owner
    # here, so that the story is about the resources below.
    bundled = [s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]]
    for start in range(0, len(bundled), 1000):
        ec2.create_tags(Resources=bundled[start : start + 1000], Tags=[{"Key": "Owner", "Value": "moto"}])
    print(f"  ({len(bundled)} snapshots of the sandbox's bundled AMIs get Owner=moto first)")
    ids: dict[str, str] = {}
    web = launch()
    history.add(record("RunInstances", [web["InstanceId"]], iam_user("bob"), made_at(web)))
    ids["web (bob launched it)"] = web["InstanceId"]
    owned = launch({"Owner": "team-x"})
    history.add(record("RunInstances", [owned["InstanceId"]], iam_user("mallory"), made_at(owned)))
    ids["owned (Owner=team-x already)"] = owned["InstanceId"]
    orphan = launch()
    ids["orphan (no event kept)"] = orphan["InstanceId"]
    volume = ec2.create_volume(AvailabilityZone="eu-west-1a", Size=8)
    history.add(record("CreateVolume", [volume["VolumeId"]], iam_user("carol"), volume["CreateTime"]))
    ids["data volume (carol)"] = volume["VolumeId"]
    for label, resource_id in ids.items():
        print(f"  {label:<30} {resource_id}")
    return ids


def _invoke(sb: Sandbox, at: datetime, dry_run: bool = False) -> None:
    result = sb.invoke("owner_backfill", _event(at), {**sb.base_env(dry_run), **ENV})
    counts = {k: result.get(k) for k in ("Checked", "Changed", "Skipped", "Failed", "LookupCalls")}
    print(f"  handler: status={result['status']} {counts}")
    sb.print_mails()


def _owners(sb: Sandbox, ids: dict[str, str]) -> None:
    ec2 = sb.client("ec2")
    for label, resource_id in ids.items():
        found = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [resource_id]}])["Tags"]
        owner = next((t["Value"] for t in found if t["Key"] == "Owner"), "-")
        print(f"  {label:<30} {resource_id}  Owner={owner}")


def run(sb: Sandbox) -> None:
    history = History()
    step("Resources without an owner tag, and CloudTrail's record of who made them")
    ids = _made(sb, history)
    with _a_day_later() as at, answering(history):
        step("A day later, a dry run: the mail says which owners would be written")
        _invoke(sb, at, dry_run=True)
        step("The real run (DryRun=false): owners written, the pass's one summary mailed")
        _invoke(sb, at)
        _owners(sb, ids)
        step("The next run: nothing is left to look for (the orphan is remembered), no mail")
        _invoke(sb, at)
