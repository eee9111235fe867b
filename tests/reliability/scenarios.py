"""One realistic moto scenario per automation: set up a small fleet, run the real handler on
its real sample event, and check that all of the work got done.

    scenario = build("idle_stopper", ctx)
    scenario.invoke()        # one complete run (patch_sweeper: the sweep and its command events)
    scenario.verify()        # every resource ended up as it should

Used by the fault-injection and idempotency tests.
"""

from __future__ import annotations

import copy
import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends

from conftest import EVENTS, REGION, STACK, FakeContext
from demo.cloudtrail import run_instances_event

AMI = "ami-12c6146b"
NAMES = ("idle_stopper", "owner_tagger", "patch_sweeper", "snapshot_rotator", "website_health_check")


def event(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return data


def ec2() -> Any:
    return boto3.client("ec2", region_name=REGION)


def backend() -> Any:
    return ec2_backends[DEFAULT_ACCOUNT_ID][REGION]


def tags_of(resource_id: str) -> dict[str, str]:
    found = ec2().describe_tags(Filters=[{"Name": "resource-id", "Values": [resource_id]}])["Tags"]
    return {t["Key"]: t["Value"] for t in found}


def launch(count: int, tags: dict[str, str] | None = None, age: timedelta | None = None) -> list[str]:
    kwargs: dict[str, Any] = {
        "ImageId": AMI,
        "MinCount": count,
        "MaxCount": count,
        "InstanceType": "t3.micro",
    }
    kwargs["Placement"] = {"AvailabilityZone": f"{REGION}a"}
    if tags:
        kwargs["TagSpecifications"] = [
            {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
        ]
    ids = [str(i["InstanceId"]) for i in ec2().run_instances(**kwargs)["Instances"]]
    if age is not None:
        for instance_id in ids:
            backend().get_instance(instance_id).launch_time = (datetime.now(UTC) - age).replace(tzinfo=None)
    return ids


@dataclass
class Scenario:
    name: str
    invoke: Callable[[], dict[str, Any]]
    verify: Callable[[], None]
    resources: list[str] = field(default_factory=list)  # the ids the work is about
    fakes: dict[tuple[str, str], Callable[[dict[str, Any]], dict[str, Any]]] = field(default_factory=dict)
    mails: Callable[[], list[dict[str, Any]]] = lambda: []
    expected_mails: int = 0  # mails of one complete run (a second run adds none)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Ctx:
    monkeypatch: pytest.MonkeyPatch
    mailbox: Callable[[], list[dict[str, Any]]]
    tmp_path: Path
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def env(self, **values: str) -> None:
        for key, value in values.items():
            self.monkeypatch.setenv(key, value)


# -- idle_stopper ---------------------------------------------------------------------------
def idle_stopper(ctx: Ctx) -> Scenario:
    from idle_stopper import app

    ctx.env(
        POWERTOOLS_SERVICE_NAME="idle_stopper",
        LOOKBACK_HOURS="24",
        PERIODS_REQUIRED="23",
        CPU_PERCENT="10",
        NETWORK_MB="5",
        MAX_STOPS_PER_RUN="10",
        OWNER_TAG_KEY="Owner",
    )
    expired = launch(3, {"Name": "builder", "Owner": "ci@example.com", "StopAfter": "2h"}, timedelta(days=3))
    keep = launch(1, {"Name": "db"}, timedelta(days=3))  # no metrics: too little data, kept
    scheduled = event("idle_stopper/eventbridge.scheduled")
    scheduled["time"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def verify() -> None:
        states = {
            i["InstanceId"]: i["State"]["Name"]
            for r in ec2().describe_instances()["Reservations"]
            for i in r["Instances"]
        }
        for instance_id in expired:
            assert states[instance_id] in {"stopping", "stopped"}, instance_id
            assert tags_of(instance_id).get("StoppedBy"), instance_id
        assert states[keep[0]] == "running"
        assert "StoppedBy" not in tags_of(keep[0])

    return Scenario(
        "idle_stopper",
        lambda: app.lambda_handler(scheduled, FakeContext()),
        verify,
        resources=expired,
        mails=ctx.mailbox,
        expected_mails=1,
    )


# -- owner_tagger ---------------------------------------------------------------------------
def owner_tagger(ctx: Ctx) -> Scenario:
    from owner_tagger import app

    ctx.env(POWERTOOLS_SERVICE_NAME="owner_tagger", OWNER_TAG_KEY="Owner")
    ids = launch(3)
    instances = [i for r in ec2().describe_instances(InstanceIds=ids)["Reservations"] for i in r["Instances"]]
    created = run_instances_event(event("owner_tagger/cloudtrail.run_instances.iam_user"), instances)
    targets = [i["InstanceId"] for i in instances]
    targets += [m["Ebs"]["VolumeId"] for i in instances for m in i["BlockDeviceMappings"]]
    targets += [n["NetworkInterfaceId"] for i in instances for n in i["NetworkInterfaces"]]

    def verify() -> None:
        owners = {t: tags_of(t).get("Owner") for t in targets}
        assert None not in owners.values(), owners
        assert len(set(owners.values())) == 1, owners

    return Scenario(
        "owner_tagger",
        lambda: app.lambda_handler(created, FakeContext()),
        verify,
        resources=targets,
        mails=ctx.mailbox,
        expected_mails=0,
        extra={"instances": [i["InstanceId"] for i in instances], "event": created},
    )


# -- snapshot_rotator -----------------------------------------------------------------------
def snapshot_rotator(ctx: Ctx) -> Scenario:
    from snapshot_rotator import app

    ctx.env(POWERTOOLS_SERVICE_NAME="snapshot_rotator", KEEP_NEWEST="2", SUMMARY_MAIL="true")
    now = datetime.now(UTC)
    volumes: list[str] = []
    old: dict[str, list[str]] = {}
    for n in range(3):
        volume = ec2().create_volume(
            AvailabilityZone=f"{REGION}a",
            Size=8,
            TagSpecifications=[
                {
                    "ResourceType": "volume",
                    "Tags": [{"Key": "Backup", "Value": "true"}, {"Key": "Name", "Value": f"v{n}"}],
                }
            ],
        )["VolumeId"]
        volumes.append(volume)
        old[volume] = []
        for age in range(4):
            snap = ec2().create_snapshot(
                VolumeId=volume,
                Description="history",
                TagSpecifications=[
                    {"ResourceType": "snapshot", "Tags": [{"Key": "ManagedBy", "Value": STACK}]}
                ],
            )["SnapshotId"]
            backend().snapshots[snap].start_time = now - timedelta(days=10 + age)
            old[volume].append(snap)  # newest first

    def managed(volume: str) -> list[str]:
        found = ec2().describe_snapshots(
            OwnerIds=["self"],
            Filters=[{"Name": "volume-id", "Values": [volume]}, {"Name": "tag:ManagedBy", "Values": [STACK]}],
        )["Snapshots"]
        return [s["SnapshotId"] for s in found]

    def settle() -> None:
        for volume in volumes:
            for snap in set(managed(volume)) - set(old[volume]):
                backend().snapshots[snap].status = "pending"

    def verify() -> None:
        for volume in volumes:
            snaps = set(managed(volume))
            assert set(old[volume][:2]) <= snaps, volume  # the two newest old ones are kept
            assert not set(old[volume][2:]) & snaps, volume  # the two oldest are gone
            assert len(snaps - set(old[volume])) == 1, volume  # exactly one new snapshot

    return Scenario(
        "snapshot_rotator",
        lambda: app.lambda_handler(event("snapshot_rotator/eventbridge.scheduled"), FakeContext()),
        verify,
        resources=volumes,
        mails=ctx.mailbox,
        expected_mails=1,
        extra={"old": old, "managed": managed, "settle": settle},
    )


# -- patch_sweeper --------------------------------------------------------------------------
def patch_sweeper(ctx: Ctx, count: int = 3) -> Scenario:
    from patch_sweeper import app

    table = "patch-sweeper-state"
    ctx.env(
        POWERTOOLS_SERVICE_NAME="patch_sweeper",
        PATCH_OPERATION="Install",
        PATCH_REBOOT_OPTION="NoReboot",
        PATCH_MAX_CONCURRENCY="10%",
        PATCH_MAX_ERRORS="5%",
        OUTPUT_LOG_GROUP="/ops-autopilot-test/patch-sweeper/commands",
        STATE_TABLE=table,
    )
    boto3.client("dynamodb", region_name=REGION).create_table(
        TableName=table,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ids = sorted(launch(count, {"Name": "web", "Owner": "ops@example.com"}))
    commands: dict[str, list[str]] = {}  # SSM, faked: command id -> instance ids
    parameters: dict[str, dict[str, list[str]]] = {}  # command id -> its Parameters
    lock = threading.Lock()

    def describe_information(_: dict[str, Any]) -> dict[str, Any]:
        return {
            "InstanceInformationList": [
                {
                    "InstanceId": i,
                    "PingStatus": "Online",
                    "PlatformName": "Amazon Linux",
                    "ResourceType": "EC2Instance",
                }
                for i in ids
            ]
        }

    def send_command(params: dict[str, Any]) -> dict[str, Any]:
        command_id = str(uuid.uuid4())
        with lock:
            commands[command_id] = list(params["InstanceIds"])
            parameters[command_id] = params["Parameters"]
        return {
            "Command": {"CommandId": command_id, "DocumentName": "AWS-RunPatchBaseline", "Status": "Pending"}
        }

    def list_invocations(params: dict[str, Any]) -> dict[str, Any]:
        return {
            "CommandInvocations": [
                {
                    "CommandId": params["CommandId"],
                    "InstanceId": i,
                    "Status": "Success",
                    "StatusDetails": "Success",
                    "CommandPlugins": [
                        {
                            "Name": "PatchLinux",
                            "Status": "Success",
                            "StatusDetails": "Success",
                            "ResponseCode": 0,
                        }
                    ],
                }
                for i in commands.get(params["CommandId"], [])
            ]
        }

    def get_invocation(_: dict[str, Any]) -> dict[str, Any]:
        return {"StandardOutputContent": "ok", "StandardErrorContent": ""}

    def patch_states(params: dict[str, Any]) -> dict[str, Any]:
        state = {"InstalledCount": 10, "MissingCount": 0, "FailedCount": 0, "Operation": "Install"}
        extra = {"PatchGroup": "", "BaselineId": "pb-0", "OperationStartTime": 0, "OperationEndTime": 0}
        return {"InstancePatchStates": [{"InstanceId": i, **state, **extra} for i in params["InstanceIds"]]}

    fakes = {
        ("ssm", "DescribeInstanceInformation"): describe_information,
        ("ssm", "SendCommand"): send_command,
        ("ssm", "ListCommandInvocations"): list_invocations,
        ("ssm", "GetCommandInvocation"): get_invocation,
        ("ssm", "DescribeInstancePatchStates"): patch_states,
    }
    schedule = event("patch_sweeper/eventbridge.weekly_schedule")
    status_template = event("patch_sweeper/ssm.command_status.success")

    def invoke() -> dict[str, Any]:
        result = app.lambda_handler(copy.deepcopy(schedule), FakeContext())
        with lock:
            sent = list(commands)
        for command_id in sent:
            status = copy.deepcopy(status_template)
            status["detail"]["command-id"] = command_id
            status["detail"]["status"] = "Success"
            status["detail"]["parameters"] = parameters[command_id]  # SSM echoes them (SnapshotId)
            result = {"schedule": result, "final": app.lambda_handler(status, FakeContext())}
        return result

    def verify() -> None:
        targeted = sorted(i for batch in commands.values() for i in batch)
        assert targeted == ids, "every instance gets exactly one patch command"

    return Scenario(
        "patch_sweeper", invoke, verify, resources=ids, fakes=fakes, mails=ctx.mailbox, expected_mails=1,
        extra={"commands": commands},
    )  # fmt: skip


# -- website_health_check -------------------------------------------------------------------
def website_health_check(ctx: Ctx) -> Scenario:
    from demo.websites import SiteHandler
    from website_health_check import app

    server = ThreadingHTTPServer(("127.0.0.1", 0), SiteHandler)
    server.daemon_threads = True
    server.healthy = False  # type: ignore[attr-defined]  # /toggle answers 503
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    ctx.cleanups.append(stop)
    table = boto3.client("dynamodb", region_name=REGION).create_table(
        TableName="health-state",
        AttributeDefinitions=[{"AttributeName": "url", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "url", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )["TableDescription"]["TableName"]
    parameter = "/ops-autopilot-test/website-health-check/sites"
    base = f"http://127.0.0.1:{server.server_port}"
    sites = [f"{base}/ok", f"{base}/toggle", f"{base}/error"]
    boto3.client("ssm", region_name=REGION).put_parameter(
        Name=parameter, Value=", ".join(sites), Type="String", Overwrite=True
    )
    ctx.env(
        POWERTOOLS_SERVICE_NAME="website_health_check",
        SITES_PARAMETER=parameter,
        STATE_TABLE=table,
        FAILURES_BEFORE_DOWN="1",
        CERT_WARNING_DAYS="14",
    )

    def state() -> dict[str, str]:
        items = boto3.client("dynamodb", region_name=REGION).scan(TableName=table)["Items"]
        return {i["url"]["S"]: i.get("reported", {}).get("S", "") for i in items}

    def verify() -> None:
        now = state()
        assert {u: now.get(u) for u in sites[1:]} == {sites[1]: "DOWN", sites[2]: "DOWN"}, now

    return Scenario(
        "website_health_check",
        lambda: app.lambda_handler(event("website_health_check/eventbridge.scheduled"), FakeContext()),  # type: ignore[arg-type]
        verify,
        resources=sites,
        mails=ctx.mailbox,
        expected_mails=1,
        extra={"state": state},
    )


BUILDERS: dict[str, Callable[[Ctx], Scenario]] = {
    "idle_stopper": idle_stopper,
    "owner_tagger": owner_tagger,
    "patch_sweeper": patch_sweeper,
    "snapshot_rotator": snapshot_rotator,
    "website_health_check": website_health_check,
}


@pytest.fixture
def ctx(
    stack_env: dict[str, str],
    mailbox: Callable[[], list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Any:
    context = Ctx(monkeypatch, mailbox, tmp_path)
    yield context
    for cleanup in context.cleanups:
        cleanup()
