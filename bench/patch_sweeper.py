"""patch_sweeper: one weekly sweep over N running, SSM-managed instances, start to digest:
the scheduled invocation (target, send), then one invocation per command's final-status
event, the last of which reads the results and mails the digest.

SIMULATED (clearly): moto lacks DescribeInstanceInformation, ListCommandInvocations and
DescribeInstancePatchStates, and its SendCommand records every instance of the account per
command (quadratic at 10,000 instances). Those four SSM calls are answered on the function's
own SSM client (as botocore's Stubber does, in the way demo/scenarios/patch_sweeper.py does)
by a simulated SSM agent: every instance Online, every patch run succeeds. The calls are still
made by the real code and counted by the recorder; only the answers are simulated. EC2,
DynamoDB and SNS are moto.

Minimum for N targets, B = ceil(N / 50) commands (SendCommand takes at most 50 instance ids):
- ec2.DescribeInstances: ceil(N / 1000) pages, plus 1 for the names in the digest (<= 150 ids);
- ssm.DescribeInstanceInformation: ceil(N / 50) pages (MaxResults is at most 50);
- ssm.SendCommand: B;
- ssm.ListCommandInvocations: B (one page of <= 50 per command);
- ssm.DescribeInstancePatchStates: B (at most 50 instance ids per call);
- dynamodb.PutItem: 1 (the sweep record, conditional: a duplicate event starts nothing);
- dynamodb.UpdateItem: B + 1 while sending (each command id durable before the next send, so
  a retried invocation never sends twice; then "all sent"), B on completion (one per command's
  final event, to take it off the pending set), 1 to claim the digest;
- dynamodb.GetItem: 0: the status event names the sweep already (its parameters carry
  SnapshotId = the sweep id), so no lookup is needed;
- sns.Publish: 1 digest.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse, HTTPHeaders

from autopilot import aws
from autopilot.config import CommonConfig
from autopilot.events import ScheduledRun
from autopilot.runtime import Deadline
from bench.common import ACCOUNT, REGION, STACK, Run, measured, pages, sandbox
from patch_sweeper.config import PatchSweeperConfig
from patch_sweeper.service import command_finished, start_sweep
from patch_sweeper.triggers import CommandFinished

TABLE = "bench-patch-sweeper"
SIMULATED = (
    "DescribeInstanceInformation",
    "SendCommand",
    "ListCommandInvocations",
    "DescribeInstancePatchStates",
)


class SimulatedSSM:
    """Answers the four SSM calls above from the seeded fleet: all Online, all patched."""

    def __init__(self, instance_ids: list[str]) -> None:
        self.instance_ids = instance_ids
        self.sent: dict[str, list[str]] = {}  # command id -> instance ids
        self._params: dict[str, Any] = {}

    def attach(self, ssm: Any) -> None:
        answers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "DescribeInstanceInformation": self.describe_instance_information,
            "SendCommand": self.send_command,
            "ListCommandInvocations": self.list_command_invocations,
            "DescribeInstancePatchStates": self.describe_instance_patch_states,
        }
        for operation, answer in answers.items():
            ssm.meta.events.register(f"before-call.ssm.{operation}", self._handler(answer))
        ssm.meta.events.register_first("provide-client-params.ssm.*", self._remember)

    def _remember(self, params: dict[str, Any], **_: Any) -> None:
        self._params = copy.deepcopy(params)

    def _handler(self, answer: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[..., Any]:
        def handle(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
            return AWSResponse("https://ssm.simulated", 200, HTTPHeaders(), None), answer(self._params)

        return handle

    @staticmethod
    def _page(items: list[Any], params: dict[str, Any], key: str, maximum: int) -> dict[str, Any]:
        size = min(int(params.get("MaxResults") or maximum), maximum)
        start = int(params.get("NextToken") or 0)
        page: dict[str, Any] = {key: items[start : start + size]}
        if start + size < len(items):
            page["NextToken"] = str(start + size)
        return page

    def describe_instance_information(self, params: dict[str, Any]) -> dict[str, Any]:
        nodes = [
            {
                "InstanceId": i,
                "PingStatus": "Online",
                "PlatformName": "Amazon Linux",
                "ResourceType": "EC2Instance",
            }
            for i in self.instance_ids
        ]
        return self._page(nodes, params, "InstanceInformationList", 50)

    def send_command(self, params: dict[str, Any]) -> dict[str, Any]:
        command_id = f"{len(self.sent):08d}-0000-4000-8000-000000000000"
        self.sent[command_id] = list(params["InstanceIds"])
        return {"Command": {"CommandId": command_id, "DocumentName": params["DocumentName"]}}

    def list_command_invocations(self, params: dict[str, Any]) -> dict[str, Any]:
        invocations = [
            {
                "CommandId": params["CommandId"],
                "InstanceId": i,
                "Status": "Success",
                "StatusDetails": "Success",
                "CommandPlugins": [{"Name": "PatchLinux", "Status": "Success", "ResponseCode": 0}],
            }
            for i in self.sent[params["CommandId"]]
        ]
        return self._page(invocations, params, "CommandInvocations", 50)

    def describe_instance_patch_states(self, params: dict[str, Any]) -> dict[str, Any]:
        states = [
            {
                "InstanceId": i,
                "Operation": "Install",
                "InstalledCount": 212,
                "MissingCount": 0,
                "FailedCount": 0,
            }
            for i in params["InstanceIds"]
        ]
        return {"InstancePatchStates": states}


def _seed(count: int) -> list[str]:
    ec2 = boto3.client("ec2", region_name=REGION)
    ids: list[str] = []
    for start in range(0, count, 500):
        size = min(500, count - start)
        reply = ec2.run_instances(ImageId="ami-12c6146b", MinCount=size, MaxCount=size)
        ids += [i["InstanceId"] for i in reply["Instances"]]
    boto3.client("dynamodb", region_name=REGION).create_table(
        TableName=TABLE,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return ids


def minimum(count: int) -> dict[str, int]:
    commands = pages(count, 50)
    return {
        "ec2.DescribeInstances": pages(count, 1000) + 1,
        "ssm.DescribeInstanceInformation": pages(count, 50),
        "ssm.SendCommand": commands,
        "ssm.ListCommandInvocations": commands,
        "ssm.DescribeInstancePatchStates": commands,
        "dynamodb.PutItem": 1,
        "dynamodb.UpdateItem": 2 * commands + 2,
        "sns.Publish": 1,
    }


def run(count: int) -> Run:
    now = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
    with sandbox():
        topic = boto3.client("sns", region_name=REGION).create_topic(Name="bench")["TopicArn"]
        ids = _seed(count)
        simulated = SimulatedSSM(ids)
        simulated.attach(aws.client("ssm"))
        config = PatchSweeperConfig(
            common=CommonConfig(stack_name=STACK, region=REGION, topic_arn=topic, dry_run=False),
            operation="Install",
            reboot_option="NoReboot",
            max_concurrency="20%",
            max_errors="10%",
            output_log_group="/bench/patch",
            state_table=TABLE,
        )
        scheduled = ScheduledRun(id="weekly-bench", time=now, account=ACCOUNT, region=REGION)
        with measured() as (calls, elapsed):
            started = start_sweep(config, scheduled, Deadline(remaining_at_start=900))
            outcome = started
            for command_id, instance_ids in simulated.sent.items():
                # SSM's status event echoes the command's parameters: SnapshotId = the sweep id.
                event = CommandFinished(
                    command_id,
                    "Success",
                    "AWS-RunPatchBaseline",
                    now,
                    tuple(instance_ids),
                    sweep_id=started.sweep_id,
                )
                outcome = command_finished(config, event)
        record = calls.of("dynamodb", "PutItem")[0]
    return Run(
        automation="patch_sweeper",
        size=count,
        unit="SSM-managed running instances",
        calls=calls.by_operation(),
        minimum=minimum(count),
        seconds=elapsed[0],
        notes=["SSM answers simulated: " + ", ".join(SIMULATED)],
        extra={
            "status": outcome.status,
            "commands": len(simulated.sent),
            "sweep_record_bytes": len(json.dumps(record["Item"])),
        },
    )
