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

Minimum for N targets, B = ceil(N / 50) commands (SendCommand takes at most 50 instance ids),
over the 1 + B invocations of a sweep (the schedule, then one per command's final event), all
through the real handler and the shared runner (autopilot.runner):
- ec2.DescribeInstances: ceil(N / 1000) pages, plus 1 for the names in the digest (<= 150 ids);
- ssm.DescribeInstanceInformation: ceil(N / 50) pages (MaxResults is at most 50);
- ssm.SendCommand: B;
- ssm.ListCommandInvocations: B (one page of <= 50 per command);
- ssm.DescribeInstancePatchStates: B (at most 50 instance ids per call);
- dynamodb.Query: 1 + B (the runner looks for unfinished work once per invocation);
- dynamodb.GetItem: 2 + B (the plan: this event's sweep not started yet, and the newest sweep,
  which this one replaces if unfinished; each status event's plan reads its sweep, the event's
  SnapshotId names it);
- dynamodb.BatchWriteItem: ceil(B / 25) (the plan stages each command's instance ids, one item
  per command, 25 items per call at most) - the intent names them by count, so no item grows
  with the fleet;
- dynamodb.BatchGetItem: ceil(B / 100) (the run that makes the digest reads the ring's ids back,
  100 keys per call at most);
- dynamodb.PutItem: 1 + B claims (one per event id) + 1 + B outbox records (intent before acting)
  + 1 sweep record (conditional) + 1 newest-sweep pointer (the hourly tick reads it);
- dynamodb.UpdateItem: 1 + B claims done + 1 + B outbox entries acted, and the sweep's own:
  B + 1 while sending (each command id durable before the next send; then "all sent"), B on
  completion (one per final event, off the pending set), 1 digest claim, 1 ring verdict;
- dynamodb.DeleteItem: 1 + B (outbox entries done, after SNS took the mail);
- sns.Publish: 1 digest.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import uuid
from collections.abc import Callable
from typing import Any
from unittest import mock

import boto3
from botocore.awsrequest import AWSResponse, HTTPHeaders

from autopilot import aws
from bench.common import (
    REGION,
    ROOT,
    STACK,
    LambdaContext,
    Run,
    measured,
    metrics_sent,
    pages,
    sample_event,
    sandbox,
)

TABLE = "bench-patch-sweeper"
OUTBOX = "bench-outbox"
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
        self.params: dict[str, Any] = {}  # command id -> its Parameters
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
        self.params[command_id] = params["Parameters"]
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


def _table(name: str, keys: list[str]) -> str:
    schema = [{"AttributeName": k, "KeyType": t} for k, t in zip(keys, ("HASH", "RANGE"), strict=False)]
    boto3.client("dynamodb", region_name=REGION).create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k in keys],
        KeySchema=schema,
        BillingMode="PAY_PER_REQUEST",
    )
    return name


def _seed(count: int) -> list[str]:
    ec2 = boto3.client("ec2", region_name=REGION)
    ids: list[str] = []
    for start in range(0, count, 500):
        size = min(500, count - start)
        reply = ec2.run_instances(ImageId="ami-12c6146b", MinCount=size, MaxCount=size)
        ids += [i["InstanceId"] for i in reply["Instances"]]
    return ids


def item_bytes(item: dict[str, Any]) -> int:
    """An item's size as DynamoDB counts it (close enough: names + values, binary as bytes)."""
    size = 0
    for name, value in item.items():
        size += len(name.encode())
        ((kind, raw),) = value.items()
        if kind == "B":
            size += len(raw)
        elif kind in ("S", "N"):
            size += len(str(raw).encode())
        else:
            size += len(json.dumps(raw).encode())
    return size


def _largest_items() -> dict[str, int]:
    """The largest item of the sweep table (its sweep record, and any other) and of the outbox
    after the sweep (the outbox's entries are deleted once mailed: the largest one written is
    taken from the calls)."""
    client = boto3.client("dynamodb", region_name=REGION)
    sizes = {"sweep": 0, "other": 0}
    for page in client.get_paginator("scan").paginate(TableName=TABLE):
        for item in page["Items"]:
            key = "sweep" if item["pk"]["S"].startswith("sweep#") else "other"
            sizes[key] = max(sizes[key], item_bytes(item))
    sizes["outbox"] = max(_OUTBOX_WRITES or [0])
    return sizes


_OUTBOX_WRITES: list[int] = []


def _watch_outbox(params: dict[str, Any], **_: Any) -> None:
    if params.get("TableName") == OUTBOX:
        for value in (params.get("Item") or {}).values():
            if "B" in value:
                _OUTBOX_WRITES.append(len(value["B"]))
        for value in (params.get("ExpressionAttributeValues") or {}).values():
            if "B" in value:
                _OUTBOX_WRITES.append(len(value["B"]))


def minimum(count: int) -> dict[str, int]:
    commands = pages(count, 50)
    invocations = 1 + commands
    return {
        "ec2.DescribeInstances": pages(count, 1000) + 1,
        "ssm.DescribeInstanceInformation": pages(count, 50),
        "ssm.SendCommand": commands,
        "ssm.ListCommandInvocations": commands,
        "ssm.DescribeInstancePatchStates": commands,
        "dynamodb.Query": invocations,
        "dynamodb.GetItem": 2 + commands,
        "dynamodb.BatchWriteItem": pages(commands, 25),
        "dynamodb.BatchGetItem": pages(commands, 100),
        "dynamodb.PutItem": 2 * invocations + 2,
        "dynamodb.UpdateItem": 2 * invocations + 2 * commands + 3,
        "dynamodb.DeleteItem": invocations,
        "sns.Publish": 1,
    }


def run(count: int) -> Run:
    from patch_sweeper import app

    schedule = sample_event(ROOT / "events/patch_sweeper/eventbridge.weekly_schedule.json")
    status = sample_event(ROOT / "events/patch_sweeper/ssm.command_status.success.json")
    with sandbox():
        topic = boto3.client("sns", region_name=REGION).create_topic(Name="bench")["TopicArn"]
        ids = _seed(count)
        simulated = SimulatedSSM(ids)
        simulated.attach(aws.client("ssm"))
        _OUTBOX_WRITES.clear()
        aws.client("dynamodb").meta.events.register("provide-client-params.dynamodb.*", _watch_outbox)
        env = {
            "STACK_NAME": STACK,
            "TOPIC_ARN": topic,
            "DRY_RUN": "false",
            "OWNER_TAG_KEY": "Owner",
            "OUTBOX_TABLE": _table(OUTBOX, ["pk", "sk"]),
            "STATE_TABLE": _table(TABLE, ["pk"]),
            "PATCH_OPERATION": "Install",
            "PATCH_REBOOT_OPTION": "NoReboot",
            "PATCH_MAX_CONCURRENCY": "20%",
            "PATCH_MAX_ERRORS": "10%",
            "OUTPUT_LOG_GROUP": "/bench/patch",
            "SCHEDULE": "cron(* * * * ? *)",  # names every minute: the event (dated now) is on time
        }
        with (
            mock.patch.dict(os.environ, env),
            contextlib.redirect_stdout(io.StringIO()),
            measured() as (calls, elapsed),
        ):
            outcome = app.lambda_handler(copy.deepcopy(schedule), LambdaContext(900_000, "bench-request"))
            for command_id, params in simulated.params.items():
                # SSM's status event echoes the command's parameters: SnapshotId = the sweep id.
                event = copy.deepcopy(status)
                event["id"] = str(uuid.uuid4())  # every status event is an event of its own
                event["detail"]["command-id"] = command_id
                event["detail"]["parameters"] = params
                outcome = app.lambda_handler(event, LambdaContext(900_000, "bench-request"))
        # The hourly tick between two sweeps (the rings' clock): what it costs when nothing is due.
        tick = {
            **sample_event(ROOT / "events/patch_sweeper/eventbridge.hourly_tick.json"),
            "id": str(uuid.uuid4()),
        }
        with (
            mock.patch.dict(os.environ, env),
            contextlib.redirect_stdout(io.StringIO()),
            measured() as (ticked, _),
        ):
            app.lambda_handler(tick, LambdaContext(900_000, "bench-request"))
        largest = _largest_items()
    return Run(
        automation="patch_sweeper",
        size=count,
        unit="SSM-managed running instances",
        calls=calls.by_operation(),
        minimum=minimum(count),
        seconds=elapsed[0],
        notes=["SSM answers simulated: " + ", ".join(SIMULATED)],
        extra={
            "changed": outcome["Changed"],
            "commands": len(simulated.sent),
            "sweep_record_bytes": largest["sweep"],
            "largest_item_bytes": max(largest["sweep"], largest["other"]),  # of the sweep table
            "largest_batch_item_bytes": largest["other"],  # a command's instance ids, the pointer
            "largest_outbox_item_bytes": largest["outbox"],
            "tick_calls": sum(ticked.by_operation().values()),
            "tick_reads": ticked.by_operation().get("dynamodb.GetItem", 0)
            + ticked.by_operation().get("dynamodb.Query", 0),
            "tick_writes": ticked.by_operation().get("dynamodb.PutItem", 0)
            + ticked.by_operation().get("dynamodb.UpdateItem", 0)
            + ticked.by_operation().get("dynamodb.DeleteItem", 0),
            "metrics_sent": metrics_sent(outcome),
        },
    )
