"""The reliability scenario of patch_sweeper: a small fleet, the real handler on its real sample
events, and a check that all of the work got done (used by tests/reliability: faults,
idempotency, bad input). Discovered by tests/reliability/scenarios.py; every automation has one.

One ``invoke`` is one delivery of the weekly schedule event, followed by SSM's final-status
event of every command that delivery sent (SSM reports each command once, after it was sent;
each status event has its own event id, derived from the command id, so a repeated
``invoke`` repeats the same events and the runner recognises them)."""

from __future__ import annotations

import copy
import threading
import uuid
from typing import Any

import boto3

from conftest import REGION, FakeContext
from reliability.scenarios import Ctx, Scenario, event, launch

# Environment of the bad-input tests (besides the stack's own): the least the handler needs.
BAD_INPUT_ENV: dict[str, str] = {
    "PATCH_OPERATION": "Install",
    "PATCH_REBOOT_OPTION": "NoReboot",
    "PATCH_MAX_CONCURRENCY": "10%",
    "PATCH_MAX_ERRORS": "5%",
    "OUTPUT_LOG_GROUP": "/x/commands",
    "STATE_TABLE": "state",
}
# The sample event of a normal run (events/patch_sweeper/...).
VALID_SAMPLE = "eventbridge.weekly_schedule"


def status_event_id(command_id: str) -> str:
    """The id of SSM's final-status event of one command (one event per command)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ssm-status/{command_id}"))


def scenario(ctx: Ctx, count: int = 3) -> Scenario:
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
    batches = [ids[n : n + 50] for n in range(0, len(ids), 50)]
    commands: dict[str, list[str]] = {}  # SSM, faked: command id -> instance ids
    parameters: dict[str, dict[str, list[str]]] = {}  # command id -> its Parameters
    sent_by: dict[str, int] = {}  # command id -> the thread whose invocation sent it
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
            sent_by[command_id] = threading.get_ident()
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

    def status_of(command_id: str) -> dict[str, Any]:
        status = copy.deepcopy(status_template)
        status["id"] = status_event_id(command_id)
        status["detail"]["command-id"] = command_id
        status["detail"]["status"] = "Success"
        status["detail"]["parameters"] = parameters[command_id]  # SSM echoes them (SnapshotId)
        return status

    def invoke() -> dict[str, Any]:
        result: dict[str, Any] = {"schedule": app.lambda_handler(copy.deepcopy(schedule), FakeContext())}
        with lock:
            mine = [c for c, thread in sent_by.items() if thread == threading.get_ident()]
        for command_id in mine:  # SSM reports each command once it ends
            result["final"] = app.lambda_handler(status_of(command_id), FakeContext())
        return result

    def verify() -> None:
        targeted = sorted(i for batch in commands.values() for i in batch)
        assert targeted == ids, "every instance gets exactly one patch command"

    def check_concurrent(calls: Any, mails: list[dict[str, Any]]) -> None:
        sends = sorted(p["InstanceIds"] for p in calls.of("ssm", "SendCommand"))
        assert sends == sorted(batches), "each batch is sent exactly once"
        assert len(mails) == 1 and "patch sweep:" in mails[0]["subject"], [m["subject"] for m in mails]

    return Scenario(
        "patch_sweeper", invoke, verify, resources=ids, fakes=fakes, mails=ctx.mailbox, expected_mails=1,
        extra={"commands": commands, "batches": batches, "status_of": status_of},
        check_concurrent=check_concurrent,
    )  # fmt: skip
