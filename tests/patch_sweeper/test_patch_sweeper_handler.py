"""The handler end to end, through the shared runner: EC2, DynamoDB and SNS in moto; SSM through
botocore Stubber.

moto 5 implements neither DescribeInstanceInformation, ListCommandInvocations nor
DescribeInstancePatchStates, and its SendCommand accepts anything; so every SSM call here is
answered by a Stubber that also checks the exact request. Every SSM status event is a distinct
event with its own id (the runner claims by event id: the same id twice is one delivery).
"""

from __future__ import annotations

import copy
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from autopilot import aws, runner
from autopilot.config import ConfigError
from autopilot.outbox import OutboxError, partition
from autopilot.recorder import CallRecorder
from conftest import OUTBOX_TABLE, STACK, FakeContext
from patch_sweeper import app, run, service, store
from patch_sweeper.config import Config
from patch_sweeper.run import SweepIncomplete, sweep_id_for
from reliability.faults import FaultInjector
from reliability.scenarios import Ctx, module

pytestmark = pytest.mark.integration
REGION = "eu-west-1"
TABLE = "patch-sweeper-state"
LOG_GROUP = "/ops-autopilot-test/patch-sweeper/commands"
SCHEDULE = "patch_sweeper/eventbridge.weekly_schedule"
Loader = Callable[[str], dict[str, Any]]
Mailbox = Callable[[], list[dict[str, Any]]]
# The runner's own calls: per invocation the unfinished-work Query and the claim (PutItem, then
# UpdateItem when done); per run with an intent the outbox PutItem (record), UpdateItem (acted)
# and DeleteItem (sent).
CLAIM = {"dynamodb.Query": 1, "dynamodb.PutItem": 1, "dynamodb.UpdateItem": 1}
OUTBOX = {"dynamodb.PutItem": 1, "dynamodb.UpdateItem": 1, "dynamodb.DeleteItem": 1}


def _plus(*parts: dict[str, int]) -> dict[str, int]:
    total: dict[str, int] = {}
    for part in parts:
        for key, value in part.items():
            total[key] = total.get(key, 0) + value
    return total


@pytest.fixture
def env(stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    extra = {
        "PATCH_OPERATION": "Install",
        "PATCH_REBOOT_OPTION": "NoReboot",
        "PATCH_MAX_CONCURRENCY": "10%",
        "PATCH_MAX_ERRORS": "5%",
        "OUTPUT_LOG_GROUP": LOG_GROUP,
        "STATE_TABLE": TABLE,
        "POWERTOOLS_SERVICE_NAME": "patch_sweeper",
    }
    for key, value in extra.items():
        monkeypatch.setenv(key, value)
    boto3.client("dynamodb", region_name=REGION).create_table(
        TableName=TABLE,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return {**stack_env, **extra}


@pytest.fixture
def ssm() -> Iterator[Stubber]:
    stubber = Stubber(aws.client("ssm"))
    with stubber:
        yield stubber


@pytest.fixture
def ssm_calls() -> list[tuple[str, dict[str, Any]]]:
    """(operation, API parameters) of every SSM call that reached the Stubber."""
    seen: list[tuple[str, dict[str, Any]]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        seen.append((model.name, copy.deepcopy(params)))

    aws.client("ssm").meta.events.register_first("provide-client-params.ssm.*", record)
    return seen


def launch(count: int, tags: dict[str, str] | None = None) -> list[str]:
    ec2 = boto3.client("ec2", region_name=REGION)
    spec = (
        [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
        if tags
        else []
    )
    reply = ec2.run_instances(
        ImageId="ami-12c6146b",
        MinCount=count,
        MaxCount=count,
        InstanceType="t3.micro",
        TagSpecifications=spec,
    )
    return [i["InstanceId"] for i in reply["Instances"]]


def stub_instance_information(ssm: Stubber, online: list[str], lost: list[str] = ()) -> None:  # type: ignore[assignment]
    nodes = [
        {
            "InstanceId": i,
            "PingStatus": "Online",
            "PlatformName": "Amazon Linux",
            "ResourceType": "EC2Instance",
        }
        for i in online
    ] + [
        {
            "InstanceId": i,
            "PingStatus": "ConnectionLost",
            "LastPingDateTime": datetime(2026, 11, 1, 10, 0, tzinfo=UTC),
            "ResourceType": "EC2Instance",
        }
        for i in lost
    ]
    pages = [nodes[n : n + 50] for n in range(0, len(nodes), 50)] or [[]]
    for number, page in enumerate(pages):
        expected: dict[str, Any] = {
            "Filters": [{"Key": "ResourceType", "Values": ["EC2Instance"]}],
            "MaxResults": 50,
        }
        if number:
            expected["NextToken"] = f"page-{number}"
        response: dict[str, Any] = {"InstanceInformationList": page}
        if number + 1 < len(pages):
            response["NextToken"] = f"page-{number + 1}"
        ssm.add_response("describe_instance_information", response, expected)


def expected_send(ids: list[str], sweep_id: str, number: int, total: int) -> dict[str, Any]:
    return {
        "InstanceIds": ids,
        "DocumentName": "AWS-RunPatchBaseline",
        "Comment": f"ops-autopilot ops-autopilot-test patch sweep {sweep_id[:8]} {number}/{total}",
        "Parameters": {"Operation": ["Install"], "RebootOption": ["NoReboot"], "SnapshotId": [sweep_id]},
        "TimeoutSeconds": 14400,
        "MaxConcurrency": "10%",
        "MaxErrors": "5%",
        "CloudWatchOutputConfig": {"CloudWatchLogGroupName": LOG_GROUP, "CloudWatchOutputEnabled": True},
    }


def command_reply(command_id: str) -> dict[str, Any]:
    return {"Command": {"CommandId": command_id, "DocumentName": "AWS-RunPatchBaseline", "Status": "Pending"}}


def sweep_id(load_event: Loader) -> str:
    return sweep_id_for(STACK, load_event(SCHEDULE)["id"])


def status_event(load_event: Loader, command_id: str, status: str = "Success") -> dict[str, Any]:
    """The status event of one of the weekly sweep's commands: a distinct event (its own id);
    SSM echoes the command's parameters, so SnapshotId carries the sweep id."""
    event = copy.deepcopy(load_event("patch_sweeper/ssm.command_status.success"))
    event["id"] = str(uuid.uuid4())
    event["detail"]["command-id"] = command_id
    event["detail"]["status"] = status
    event["detail"]["parameters"]["SnapshotId"] = [sweep_id(load_event)]
    return event


def invocation(command_id: str, instance_id: str, status: str) -> dict[str, Any]:
    return {
        "CommandId": command_id,
        "InstanceId": instance_id,
        "DocumentName": "AWS-RunPatchBaseline",
        "Status": status,
        "StatusDetails": status,
        "CommandPlugins": [
            {
                "Name": "PatchWindows",
                "Status": "Success",
                "StatusDetails": "Success",
                "ResponseCode": 0,
                "Output": "Step execution skipped due to unsatisfied preconditions: "
                '\'"platformType" StringEquals "Windows"\'.',
            },
            {
                "Name": "PatchLinux",
                "Status": status,
                "StatusDetails": status,
                "ResponseCode": 0 if status == "Success" else 1,
                "Output": "...",
            },
        ],
    }


def patch_state(instance_id: str, installed: int = 12, **counts: int) -> dict[str, Any]:
    return {
        "InstanceId": instance_id,
        "PatchGroup": "default",
        "BaselineId": "pb-0123456789abcdef0",
        "Operation": "Install",
        "OperationStartTime": datetime(2026, 11, 22, 3, 1, tzinfo=UTC),
        "OperationEndTime": datetime(2026, 11, 22, 3, 9, tzinfo=UTC),
        "InstalledCount": installed,
        **counts,
    }


def stub_results(ssm: Stubber, command_id: str, ids: list[str]) -> None:
    """A healthy command's results: every invocation Success, nothing pending reboot."""
    ssm.add_response(
        "list_command_invocations",
        {"CommandInvocations": [invocation(command_id, i, "Success") for i in ids]},
        {"CommandId": command_id, "Details": True, "MaxResults": 50},
    )
    ssm.add_response(
        "describe_instance_patch_states",
        {"InstancePatchStates": [patch_state(i) for i in ids]},
        {"InstanceIds": ids},
    )


def outbox_items() -> list[dict[str, Any]]:
    """Every outbox entry of patch_sweeper (unfinished work), whatever its lease."""
    found: list[dict[str, Any]] = boto3.client("dynamodb", region_name=REGION).query(
        TableName=OUTBOX_TABLE,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": partition("patch_sweeper")}},
    )["Items"]
    return found


def own_writes(calls: CallRecorder) -> list[str]:
    """Mutating calls other than the runner's on the stack's outbox table (claims, entries)."""
    return [
        f"{c.service}.{c.operation}"
        for c in calls.mutating()
        if not (c.service == "dynamodb" and c.params.get("TableName") == OUTBOX_TABLE)
    ]


def listed(body: str, heading: str) -> list[str]:
    """The item titles (the ``- ...`` lines) of the mail's section headed ``heading``, in order."""
    lines = body.split("\n")
    start = lines.index(heading) + 2  # the heading and its underline
    return [line[2:] for line in lines[start : lines.index("", start)] if line.startswith("- ")]


CUT = "more (every one is in the function's log)."  # the end of the "... and N more" line


def record(load_event: Loader) -> store.SweepRecord:
    """The sweep as stored, read outside the call counts of the test."""
    hooks = list(aws.call_hooks)
    aws.call_hooks.clear()
    try:
        found = store.load_sweep(TABLE, sweep_id(load_event))
    finally:
        aws.call_hooks[:] = hooks
    assert found is not None
    return found


def test_120_targets_make_exactly_3_send_commands(
    env: dict[str, str],
    ssm: Stubber,
    ssm_calls: list[tuple[str, dict[str, Any]]],
    load_event: Loader,
    calls: CallRecorder,
    lambda_context: Any,
) -> None:
    ids = sorted(launch(120))
    stub_instance_information(ssm, ids)
    sid = sweep_id(load_event)
    batches = [ids[0:50], ids[50:100], ids[100:120]]
    commands = [str(uuid.uuid4()) for _ in batches]
    for n, (batch, cid) in enumerate(zip(batches, commands, strict=True), start=1):
        ssm.add_response("send_command", command_reply(cid), expected_send(batch, sid, n, 3))

    result = app.lambda_handler(load_event(SCHEDULE), lambda_context)

    ssm.assert_no_pending_responses()
    assert result["status"] == "done" and result["Checked"] == 120 and result["Unmanaged"] == 0
    sweep = record(load_event)
    assert sweep.sent == dict(enumerate(commands)) and sweep.phase == "sent"
    assert sweep.pending == frozenset(commands) and sweep.digest_claim is None
    sends = [p for op, p in ssm_calls if op == "SendCommand"]
    assert [len(p["InstanceIds"]) for p in sends] == [50, 50, 20]
    assert sorted(i for p in sends for i in p["InstanceIds"]) == ids
    assert [op for op, _ in ssm_calls].count("DescribeInstanceInformation") == 3
    assert len(ssm_calls) == 6
    assert calls.by_operation() == _plus(
        CLAIM,
        OUTBOX,
        {
            "ec2.DescribeInstances": 1,
            "ssm.DescribeInstanceInformation": 3,
            "ssm.SendCommand": 3,
            # the sweep record (a status event finds it by SnapshotId), the newest-sweep pointer
            "dynamodb.PutItem": 2,
            # the plan: this event's sweep did not start already; the newest sweep (unfinished?)
            "dynamodb.GetItem": 2,
            "dynamodb.BatchWriteItem": 1,  # the plan: the 3 commands' instance ids (25 per call)
            "dynamodb.UpdateItem": 4,  # one per command + "all sent"
        },
    )
    assert outbox_items() == []  # nothing left unfinished


def test_duplicate_schedule_event_sends_nothing_twice(
    env: dict[str, str],
    ssm: Stubber,
    ssm_calls: list[tuple[str, dict[str, Any]]],
    load_event: Loader,
    calls: CallRecorder,
    lambda_context: Any,
) -> None:
    ids = sorted(launch(3))
    stub_instance_information(ssm, ids)
    ssm.add_response(
        "send_command", command_reply(str(uuid.uuid4())), expected_send(ids, sweep_id(load_event), 1, 1)
    )
    event = load_event(SCHEDULE)
    app.lambda_handler(event, lambda_context)
    with CallRecorder() as again_calls:
        again = app.lambda_handler(event, lambda_context)
    ssm.assert_no_pending_responses()  # the duplicate does not even look at the fleet
    assert again["status"] == "duplicate"
    assert [op for op, _ in ssm_calls] == ["DescribeInstanceInformation", "SendCommand"]
    # the claim attempt is its only write; no EC2 or SSM call at all
    assert [f"{c.service}.{c.operation}" for c in again_calls.mutating()] == ["dynamodb.PutItem"]
    assert not [c for c in again_calls.calls if c.service in {"ec2", "ssm"}]


def test_dry_run_mails_targets_and_sends_no_command(
    env: dict[str, str],
    ssm: Stubber,
    ssm_calls: list[tuple[str, dict[str, Any]]],
    load_event: Loader,
    calls: CallRecorder,
    mailbox: Mailbox,
    lambda_context: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DRY_RUN", "true")
    managed = launch(2, {"Name": "web"})
    dark = launch(1, {"Name": "legacy", "Owner": "ana@example.com"})
    launch(1, {"AutoPatch": "false"})
    stub_instance_information(ssm, managed)

    result = app.lambda_handler(load_event(SCHEDULE), lambda_context)

    assert result["dry_run"] is True and (result["Checked"], result["Skipped"]) == (2, 1)
    assert own_writes(calls) == ["sns.Publish"]  # no SendCommand, nothing in the sweep table
    assert store.load_sweep(TABLE, sweep_id(load_event)) is None
    assert [op for op, _ in ssm_calls] == ["DescribeInstanceInformation"]
    (mail,) = mailbox()
    assert (
        mail["subject"]
        == "[ops-autopilot-test] DRY RUN: patch sweep would install 2 instances, 1 not patchable"
    )
    assert all(i in mail["body"] for i in managed + dark)
    assert "AmazonSSMManagedInstanceCore" in mail["body"]
    assert "ana@example.com" in mail["body"]
    assert "Left out (AutoPatch=false) (1)" in mail["body"]
    assert mail["attributes"] == {"automation": "patch_sweeper", "severity": "warning"}


def test_dry_run_a_command_of_an_earlier_sweep_changes_nothing(
    env: dict[str, str],
    ssm: Stubber,
    load_event: Loader,
    calls: CallRecorder,
    mailbox: Mailbox,
    lambda_context: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DryRun switched on while a real sweep still runs: its last command's event is judged the
    same way, but nothing is written and nothing is mailed."""
    ids = sorted(launch(1))
    stub_instance_information(ssm, ids)
    cid = str(uuid.uuid4())
    ssm.add_response("send_command", command_reply(cid), expected_send(ids, sweep_id(load_event), 1, 1))
    app.lambda_handler(load_event(SCHEDULE), lambda_context)
    monkeypatch.setenv("DRY_RUN", "true")
    with CallRecorder() as dry:
        app.lambda_handler(status_event(load_event, cid), lambda_context)
    assert own_writes(dry) == []
    assert record(load_event).pending == frozenset({cid})
    assert mailbox() == []


def test_full_sweep_then_one_digest(
    env: dict[str, str],
    ssm: Stubber,
    ssm_calls: list[tuple[str, dict[str, Any]]],
    load_event: Loader,
    calls: CallRecorder,
    mailbox: Mailbox,
    lambda_context: Any,
) -> None:
    ok, reboot, bad = (
        launch(1, {"Name": n, "Owner": "ops@example.com"})[0] for n in ("web-1", "web-2", "db-1")
    )
    unmanaged = launch(1, {"Name": "legacy"})[0]
    lost = launch(1, {"Name": "batch"})[0]
    optout = launch(1, {"Name": "pet", "AutoPatch": "false"})[0]
    targets = sorted([ok, reboot, bad])
    stub_instance_information(ssm, [*targets, optout], lost=[lost])
    cid = str(uuid.uuid4())
    ssm.add_response("send_command", command_reply(cid), expected_send(targets, sweep_id(load_event), 1, 1))

    started = app.lambda_handler(load_event(SCHEDULE), lambda_context)
    assert (started["Checked"], started["Unmanaged"], started["Skipped"]) == (3, 2, 1)
    assert mailbox() == []  # nothing to say until the command is final

    # an unrelated patch command of someone else: ignored, read-only, SSM untouched
    with CallRecorder() as foreign_calls:
        foreign = app.lambda_handler(status_event(load_event, str(uuid.uuid4())), lambda_context)
    assert foreign["status"] == "done" and foreign["Changed"] == 0
    assert foreign_calls.by_operation() == _plus(CLAIM, {"dynamodb.GetItem": 1})

    ssm.add_response(
        "list_command_invocations",
        {
            "CommandInvocations": [
                invocation(cid, ok, "Success"),
                invocation(cid, reboot, "Success"),
                invocation(cid, bad, "Failed"),
            ]
        },
        {"CommandId": cid, "Details": True, "MaxResults": 50},
    )
    ssm.add_response(
        "get_command_invocation",
        {
            "CommandId": cid,
            "InstanceId": bad,
            "Status": "Failed",
            "StandardOutputContent": "Loaded plugins: priorities\nInstalling: kernel-6.1.115\n",
            "StandardErrorContent": "Error: rpmdb open failed\n",
        },
        {"CommandId": cid, "InstanceId": bad, "PluginName": "PatchLinux"},
    )
    ssm.add_response(
        "describe_instance_patch_states",
        {
            "InstancePatchStates": [
                patch_state(
                    i,
                    41,
                    InstalledPendingRebootCount=2 if i == reboot else 0,
                    MissingCount=3 if i == bad else 0,
                    FailedCount=1 if i == bad else 0,
                )
                for i in targets
            ]
        },
        {"InstanceIds": targets},
    )
    event = status_event(load_event, cid, "Failed")
    done = app.lambda_handler(event, lambda_context)
    ssm.assert_no_pending_responses()
    assert (done["Changed"], done["Failed"], done["PendingReboot"]) == (2, 1, 1)

    (mail,) = mailbox()
    body = mail["body"]
    assert mail["subject"] == (
        "[ops-autopilot-test] patch sweep: 2 patched, 1 failed, 1 pending reboot, 2 not patchable"
    )
    assert f"{bad} (db-1) owner ops@example.com" in body
    assert "| Error: rpmdb open failed" in body
    assert "Failed in step PatchLinux" in body
    assert f"{reboot} (web-2)" in body and "waiting for a reboot" in body
    assert f"{unmanaged} (legacy)" in body and "not managed by Systems Manager" in body
    assert f"{lost} (batch)" in body and "ConnectionLost" in body
    assert optout not in body
    assert "3 instances reporting: 123 installed, 2 installed pending reboot, 3 missing, 1 failed" in body

    # the same final event again (EventBridge delivers at least once): no second mail, no SSM call
    again = app.lambda_handler(event, lambda_context)
    assert again["status"] == "duplicate"
    # ... and a repeat of it as a new event: read, judged "already counted", nothing done
    with CallRecorder() as repeat_calls:
        app.lambda_handler(status_event(load_event, cid, "Failed"), lambda_context)
    assert repeat_calls.by_operation() == _plus(CLAIM, {"dynamodb.GetItem": 1})
    assert mailbox() == [mail]
    assert calls.count("sns", "Publish") == 1
    assert [op for op, _ in ssm_calls] == [
        "DescribeInstanceInformation",
        "SendCommand",
        "ListCommandInvocations",
        "GetCommandInvocation",
        "DescribeInstancePatchStates",
    ]
    assert outbox_items() == []


def test_refused_batch_is_reported_and_the_rest_still_runs(
    env: dict[str, str], ssm: Stubber, load_event: Loader, mailbox: Mailbox, lambda_context: Any
) -> None:
    ids = sorted(launch(60))
    stub_instance_information(ssm, ids)
    sid = sweep_id(load_event)
    ssm.add_client_error(
        "send_command",
        "InvalidInstanceId",
        "Instances not in a valid state",
        400,
        expected_params=expected_send(ids[:50], sid, 1, 2),
    )
    cid = str(uuid.uuid4())
    ssm.add_response("send_command", command_reply(cid), expected_send(ids[50:], sid, 2, 2))
    app.lambda_handler(load_event(SCHEDULE), lambda_context)
    sweep = record(load_event)
    assert (sweep.sent, sweep.send_errors) == ({1: cid}, {0: "InvalidInstanceId"})

    ssm.add_response(
        "list_command_invocations",
        {"CommandInvocations": [invocation(cid, i, "Success") for i in ids[50:]]},
        {"CommandId": cid, "Details": True, "MaxResults": 50},
    )
    ssm.add_response("describe_instance_patch_states", {"InstancePatchStates": []}, {"InstanceIds": ids[50:]})
    done = app.lambda_handler(status_event(load_event, cid), lambda_context)
    ssm.assert_no_pending_responses()
    assert (done["Changed"], done["Failed"]) == (10, 50)
    (mail,) = mailbox()
    body = mail["body"]
    # Every refused instance listed (50: exactly one section's worth, so nothing is cut), each
    # with its reason; the 10 patched ones in their own section; no "... and N more" line.
    assert listed(body, "Failed (50)") == ids[:50]
    assert body.count("why: command not sent: InvalidInstanceId") == 50
    assert listed(body, "Patched, no reboot pending (10)") == ids[50:]
    assert CUT not in body


def test_no_target_at_all_mails_the_not_patchable_list_at_once(
    env: dict[str, str], ssm: Stubber, load_event: Loader, mailbox: Mailbox, lambda_context: Any
) -> None:
    dark = launch(1, {"Name": "legacy"})[0]
    stub_instance_information(ssm, [])
    result = app.lambda_handler(load_event(SCHEDULE), lambda_context)
    ssm.assert_no_pending_responses()
    assert result["Unmanaged"] == 1 and result["Failed"] == 0
    (mail,) = mailbox()
    assert "0 patched, 0 failed, 0 pending reboot, 1 not patchable" in mail["subject"]
    assert dark in mail["body"]
    assert record(load_event).digest_claim is not None


def test_empty_account_sends_no_mail_and_writes_nothing(
    env: dict[str, str],
    ssm: Stubber,
    load_event: Loader,
    calls: CallRecorder,
    mailbox: Mailbox,
    lambda_context: Any,
) -> None:
    stub_instance_information(ssm, [])
    app.lambda_handler(load_event(SCHEDULE), lambda_context)
    assert mailbox() == []
    assert own_writes(calls) == []
    assert calls.by_operation() == _plus(
        CLAIM, {"ec2.DescribeInstances": 1, "ssm.DescribeInstanceInformation": 1}
    )


@pytest.mark.parametrize("name", ["in_progress", "other_document", "malformed"])
def test_unexpected_events_change_nothing(
    env: dict[str, str],
    ssm: Stubber,
    ssm_calls: list[tuple[str, dict[str, Any]]],
    load_event: Loader,
    calls: CallRecorder,
    lambda_context: Any,
    name: str,
) -> None:
    result = app.lambda_handler(load_event(f"patch_sweeper/ssm.command_status.{name}"), lambda_context)
    assert result["status"] == "ignored"
    assert calls.count() == 0 and ssm_calls == []


def test_100_instances_two_commands_one_digest_after_the_last(
    env: dict[str, str],
    ssm: Stubber,
    ssm_calls: list[tuple[str, dict[str, Any]]],
    load_event: Loader,
    calls: CallRecorder,
    mailbox: Mailbox,
    lambda_context: Any,
) -> None:
    """The API budget per 100 instances, for the whole sweep: start, two events, digest."""
    ids = sorted(launch(100))
    stub_instance_information(ssm, ids)
    sid = sweep_id(load_event)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    ssm.add_response("send_command", command_reply(first), expected_send(ids[:50], sid, 1, 2))
    ssm.add_response("send_command", command_reply(second), expected_send(ids[50:], sid, 2, 2))
    app.lambda_handler(load_event(SCHEDULE), lambda_context)

    waiting = app.lambda_handler(status_event(load_event, first), lambda_context)
    assert waiting["Changed"] == 0 and record(load_event).pending == frozenset({second})
    assert mailbox() == []

    # The digest reads the commands' results in command-id order (the sweep record keeps no order).
    for cid, batch in sorted(((first, ids[:50]), (second, ids[50:]))):
        ssm.add_response(
            "list_command_invocations",
            {"CommandInvocations": [invocation(cid, i, "Success") for i in batch]},
            {"CommandId": cid, "Details": True, "MaxResults": 50},
        )
    for batch in (ids[:50], ids[50:]):
        ssm.add_response(
            "describe_instance_patch_states",
            {"InstancePatchStates": [patch_state(i) for i in batch]},
            {"InstanceIds": batch},
        )
    done = app.lambda_handler(status_event(load_event, second), lambda_context)
    ssm.assert_no_pending_responses()
    assert done["Changed"] == 100 and done["PendingReboot"] == 0
    (mail,) = mailbox()
    assert mail["subject"].endswith("100 patched, 0 failed, 0 pending reboot, 0 not patchable")
    assert mail["attributes"]["severity"] == "info"
    # the patched list is capped at 50 items, then one line says how many more there are
    assert len(listed(mail["body"], "Patched, no reboot pending (100)")) == 50
    assert mail["body"].count(CUT) == 1 and f"... and 50 {CUT}" in mail["body"].split("\n")
    invocations = 3  # the schedule, then one final-status event per command
    assert calls.by_operation() == {
        "ec2.DescribeInstances": 2,  # the fleet at start; Name/Owner of the 50 listed at the end
        "ssm.DescribeInstanceInformation": 2,
        "ssm.SendCommand": 2,
        "ssm.ListCommandInvocations": 2,
        "ssm.DescribeInstancePatchStates": 2,
        "dynamodb.GetItem": 4,  # the schedule's plan (2) and each status event's read the sweep
        "dynamodb.Query": invocations,  # the runner: unfinished work
        # claims, outbox records, the sweep and the newest-sweep pointer
        "dynamodb.PutItem": invocations + invocations + 2,
        "dynamodb.BatchWriteItem": 1,  # the commands' instance ids, before the first is sent
        "dynamodb.BatchGetItem": 1,  # ... read back by the run that makes the digest
        # claims done + outbox acted, then 2 sent + all sent + 2 finished + 1 digest claim + verdict
        "dynamodb.UpdateItem": invocations + invocations + 7,
        "dynamodb.DeleteItem": invocations,  # outbox entries done
        "sns.Publish": 1,
    }


def test_sweep_out_of_time_fails_and_the_retry_resumes(
    env: dict[str, str],
    ssm: Stubber,
    ssm_calls: list[tuple[str, dict[str, Any]]],
    load_event: Loader,
    lambda_context: Any,
) -> None:
    ids = sorted(launch(2))
    sid = sweep_id(load_event)
    event = load_event(SCHEDULE)
    stub_instance_information(ssm, ids)
    with pytest.raises(SweepIncomplete):  # fails the invocation: Lambda retries the event
        app.lambda_handler(event, FakeContext(remaining_ms=1_000))
    assert [op for op, _ in ssm_calls].count("SendCommand") == 0
    assert [i["status"]["S"] for i in outbox_items()] == ["acting"]  # the intent was recorded

    # the retry: the recorded intent is carried out first (SSM has no command of the sweep yet,
    # so the batch is sent), then its own plan looks at the fleet again and finds the sweep
    # started: nothing is sent twice
    stub_list_commands(ssm, record(load_event).started_at, [])
    ssm.add_response("send_command", command_reply(str(uuid.uuid4())), expected_send(ids, sid, 1, 1))
    stub_instance_information(ssm, ids)
    app.lambda_handler(event, lambda_context)
    ssm.assert_no_pending_responses()
    assert [op for op, _ in ssm_calls].count("SendCommand") == 1
    assert record(load_event).phase == "sent" and outbox_items() == []


# -- failure sequences: a kill between two steps, SNS down; nothing lost, nothing twice ---------


def _sweep_of_three(ssm: Stubber, load_event: Loader, lambda_context: Any) -> tuple[list[str], str]:
    ids = sorted(launch(3, {"Name": "web", "Owner": "ops@example.com"}))
    stub_instance_information(ssm, ids)
    cid = str(uuid.uuid4())
    ssm.add_response("send_command", command_reply(cid), expected_send(ids, sweep_id(load_event), 1, 1))
    app.lambda_handler(load_event(SCHEDULE), lambda_context)
    return ids, cid


@pytest.mark.parametrize("then", ["retry", "next-invocation"])
def test_the_digest_sns_refused_is_sent_later_exactly_once(
    env: dict[str, str],
    ssm: Stubber,
    ssm_calls: list[tuple[str, dict[str, Any]]],
    load_event: Loader,
    mailbox: Mailbox,
    lambda_context: Any,
    monkeypatch: pytest.MonkeyPatch,
    then: str,
) -> None:
    """SNS is down for the invocation that made the digest (the sweep's last command final).
    The digest stays in the outbox and the invocation fails; Lambda's retry of the same event
    (or, if there is none, the function's next invocation, whatever its event) sends it, once.
    (Before the runner, the digest was claimed before publishing and never released: the
    retry found it claimed and the mail was gone for good.)"""
    ids, cid = _sweep_of_three(ssm, load_event, lambda_context)
    stub_results(ssm, cid, ids)
    real_publish = runner.publish
    sns_down = [True]

    def publish(*args: Any, **kwargs: Any) -> str:
        if sns_down[0]:
            raise ClientError({"Error": {"Code": "InternalError", "Message": "SNS down"}}, "Publish")
        return real_publish(*args, **kwargs)

    monkeypatch.setattr(runner, "publish", publish)
    last = status_event(load_event, cid)
    with pytest.raises(OutboxError):
        app.lambda_handler(last, lambda_context)
    assert mailbox() == []
    assert [i["status"]["S"] for i in outbox_items()] == ["acted"]  # the digest, kept
    assert record(load_event).digest_claim is not None

    sns_down[0] = False
    seen = len(ssm_calls)
    with CallRecorder() as later:
        if then == "retry":
            app.lambda_handler(last, lambda_context)  # the same event again
        else:
            other = copy.deepcopy(load_event("patch_sweeper/ssm.command_status.success"))
            del other["detail"]["parameters"]["SnapshotId"]  # someone else's AWS-RunPatchBaseline
            app.lambda_handler(other, lambda_context)
    ssm.assert_no_pending_responses()
    (mail,) = mailbox()
    assert mail["subject"] == (
        "[ops-autopilot-test] patch sweep: 3 patched, 0 failed, 0 pending reboot, 0 not patchable"
    )
    assert all(f"{i} (web) owner ops@example.com" in mail["body"] for i in ids)
    assert outbox_items() == []
    assert own_writes(later) == ["sns.Publish"]  # it only sent the kept mail: no work again
    assert len(ssm_calls) == seen  # the results were read once, by the first run
    app.lambda_handler(status_event(load_event, cid), lambda_context)  # and later events: no mail
    assert mailbox() == [mail]


def test_a_run_killed_after_claiming_the_digest_is_finished_by_the_retry(
    env: dict[str, str],
    ssm: Stubber,
    load_event: Loader,
    mailbox: Mailbox,
    lambda_context: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Killed between the digest claim and reading the results: the claim is the recorded
    intent's, so the retry that resumes the intent claims again and mails; a fresh run would not."""
    ids, cid = _sweep_of_three(ssm, load_event, lambda_context)
    real = service.invocations
    killed = [True]

    def invocations(command_id: str) -> Any:
        if killed.pop() if killed else False:
            raise RuntimeError("killed")  # the first AWS call after the claim
        return real(command_id)

    monkeypatch.setattr(service, "invocations", invocations)
    last = status_event(load_event, cid)
    with pytest.raises(RuntimeError, match="killed"):
        app.lambda_handler(last, lambda_context)
    assert mailbox() == [] and record(load_event).digest_claim is not None
    assert [i["status"]["S"] for i in outbox_items()] == ["acting"]

    stub_results(ssm, cid, ids)
    app.lambda_handler(last, lambda_context)  # Lambda's retry
    mails = mailbox()
    assert len(mails) == 1 and "3 patched" in mails[0]["subject"], "the digest was lost or doubled"
    ssm.assert_no_pending_responses()
    assert outbox_items() == []


def test_a_sweep_killed_between_two_batches_is_finished_by_the_retry(
    env: dict[str, str],
    ssm: Stubber,
    ssm_calls: list[tuple[str, dict[str, Any]]],
    load_event: Loader,
    lambda_context: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Killed before the second SendCommand: the retry resumes the recorded intent and sends
    only the batch not yet recorded as sent."""
    ids = sorted(launch(60))
    sid = sweep_id(load_event)
    stub_instance_information(ssm, ids)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    ssm.add_response("send_command", command_reply(first), expected_send(ids[:50], sid, 1, 2))
    real = service.send_patch_command
    sends = [0]

    def send(request: service.CommandRequest) -> str:
        sends[0] += 1
        if sends[0] == 2:
            raise RuntimeError("killed")
        return real(request)

    monkeypatch.setattr(service, "send_patch_command", send)
    event = load_event(SCHEDULE)
    with pytest.raises(RuntimeError, match="killed"):
        app.lambda_handler(event, lambda_context)
    assert record(load_event).sent == {0: first}

    # SSM knows the first command only (the second send never happened)
    stub_list_commands(ssm, record(load_event).started_at, [(first, ids[:50], sid)])
    ssm.add_response("send_command", command_reply(second), expected_send(ids[50:], sid, 2, 2))
    stub_instance_information(ssm, ids)  # the retry's own plan, after finishing the intent
    app.lambda_handler(event, lambda_context)
    ssm.assert_no_pending_responses()
    sent = [p["InstanceIds"] for op, p in ssm_calls if op == "SendCommand"]
    assert sent == [ids[:50], ids[50:]]  # each batch exactly once
    final = record(load_event)
    assert final.sent == {0: first, 1: second} and final.phase == "sent"
    assert outbox_items() == []


def test_a_batch_sent_just_before_the_run_died_is_not_sent_again(
    env: dict[str, str],
    ssm: Stubber,
    ssm_calls: list[tuple[str, dict[str, Any]]],
    load_event: Loader,
    lambda_context: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Killed (or DynamoDB failing) after SSM accepted the second SendCommand but before it was
    recorded: the retry asks SSM which of the sweep's batches it has (ListCommands: the sweep's
    SnapshotId and the batch's instances), records that command and sends nothing again - with
    RebootIfNeeded a second command would reboot every instance of the batch again."""
    ids = sorted(launch(60))
    sid = sweep_id(load_event)
    stub_instance_information(ssm, ids)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    ssm.add_response("send_command", command_reply(first), expected_send(ids[:50], sid, 1, 2))
    ssm.add_response("send_command", command_reply(second), expected_send(ids[50:], sid, 2, 2))
    real = store.record_sent
    records = [0]

    def record_sent(table: str, sweep: str, batch: int, command_id: str) -> None:
        records[0] += 1
        if records[0] == 2:
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": "down"}}, "UpdateItem")
        real(table, sweep, batch, command_id)

    monkeypatch.setattr(store, "record_sent", record_sent)
    event = load_event(SCHEDULE)
    with pytest.raises(ClientError, match="InternalServerError"):
        app.lambda_handler(event, lambda_context)
    assert record(load_event).sent == {0: first}
    monkeypatch.setattr(store, "record_sent", real)

    other_sweep = str(uuid.uuid4())  # another sweep's command for the same instances is not ours
    stub_list_commands(
        ssm,
        record(load_event).started_at,
        [(first, ids[:50], sid), (str(uuid.uuid4()), ids[50:], other_sweep), (second, ids[50:], sid)],
    )
    stub_instance_information(ssm, ids)  # the retry's own plan, after finishing the intent
    app.lambda_handler(event, lambda_context)
    ssm.assert_no_pending_responses()
    sent = [p["InstanceIds"] for op, p in ssm_calls if op == "SendCommand"]
    assert sent == [ids[:50], ids[50:]]  # the second batch once, by the run that died
    final = record(load_event)
    assert final.sent == {0: first, 1: second} and final.phase == "sent"
    assert final.pending == {first, second}
    assert outbox_items() == []


def stub_list_commands(ssm: Stubber, started_at: str, commands: list[tuple[str, list[str], str]]) -> None:
    """ListCommands as a resumed sweep asks it, answering (command id, instances, SnapshotId)."""
    since = (datetime.fromisoformat(started_at) - run.COMMAND_LOOKUP_MARGIN).strftime("%Y-%m-%dT%H:%M:%SZ")
    ssm.add_response(
        "list_commands",
        {
            "Commands": [
                {
                    "CommandId": command_id,
                    "DocumentName": "AWS-RunPatchBaseline",
                    "InstanceIds": instances,
                    "Parameters": {"Operation": ["Install"], "SnapshotId": [snapshot]},
                }
                for command_id, instances, snapshot in commands
            ]
        },
        {
            "Filters": [
                {"key": "DocumentName", "value": "AWS-RunPatchBaseline"},
                {"key": "InvokedAfter", "value": since},
            ],
            "MaxResults": 50,
        },
    )


# -- product-wide settings -------------------------------------------------------------------


def test_the_digest_shows_the_owner_under_the_stacks_owner_tag_key(
    env: dict[str, str],
    ssm: Stubber,
    load_event: Loader,
    mailbox: Mailbox,
    lambda_context: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OWNER_TAG_KEY", "CreatedBy")
    tags = {"Name": "db-1", "Owner": "someone-else@example.com", "CreatedBy": "ana@example.com"}
    bad = launch(1, tags)[0]
    dark = launch(1, {"Name": "legacy", "CreatedBy": "it@example.com", "Owner": "nobody@example.com"})[0]
    stub_instance_information(ssm, [bad])
    cid = str(uuid.uuid4())
    ssm.add_response("send_command", command_reply(cid), expected_send([bad], sweep_id(load_event), 1, 1))
    app.lambda_handler(load_event(SCHEDULE), lambda_context)
    ssm.add_response(
        "list_command_invocations",
        {"CommandInvocations": [invocation(cid, bad, "Failed")]},
        {"CommandId": cid, "Details": True, "MaxResults": 50},
    )
    ssm.add_response(
        "get_command_invocation",
        {"CommandId": cid, "InstanceId": bad, "StandardOutputContent": "x"},
        {"CommandId": cid, "InstanceId": bad, "PluginName": "PatchLinux"},
    )
    ssm.add_response(
        "describe_instance_patch_states", {"InstancePatchStates": [patch_state(bad)]}, {"InstanceIds": [bad]}
    )
    app.lambda_handler(status_event(load_event, cid, "Failed"), lambda_context)
    (mail,) = mailbox()
    assert f"{bad} (db-1) owner ana@example.com" in mail["body"]  # the CreatedBy tag's value
    assert f"{dark} (legacy) owner it@example.com" in mail["body"]
    assert "someone-else@example.com" not in mail["body"] and "nobody@example.com" not in mail["body"]


# -- issue 19: nothing depends on the day or the hour --------------------------------------------

CLOCKS = [
    datetime(2026, 11, 22, 3, 0, tzinfo=UTC),  # the sample event's own time
    datetime(2026, 11, 22, 23, 59, 59, 900_000, tzinfo=UTC),  # just before midnight
    datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC),  # the year (and ISO week) turns
    datetime(2027, 3, 28, 1, 30, tzinfo=UTC),  # a DST change day in Europe, a Sunday
    datetime(2030, 6, 15, 12, 0, tzinfo=UTC),  # years after the sample event
]


@pytest.mark.slow
@pytest.mark.parametrize("clock", CLOCKS, ids=lambda c: c.isoformat())
def test_two_concurrent_deliveries_send_each_batch_once_whatever_the_day(
    stack_env: dict[str, str],
    mailbox: Mailbox,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    clock: datetime,
) -> None:
    """The reliability scenario's two concurrent deliveries of the schedule event, with the
    clock moved to other days and hours and the event delivered late: one SendCommand per batch, the
    same sweep id (SnapshotId) every time, one digest."""
    monkeypatch.setattr(runner, "clock", lambda: clock)
    scenarios = module("patch_sweeper")
    real_event = scenarios.event
    # a late delivery (an hour after its time, as retries make), so the event's time is not the clock's
    shifted = (clock - timedelta(hours=1, minutes=7)).strftime("%Y-%m-%dT%H:%M:%SZ")
    monkeypatch.setattr(scenarios, "event", lambda name: {**real_event(name), "time": shifted})
    scenario = scenarios.scenario(Ctx(monkeypatch, mailbox, tmp_path), count=60)
    FaultInjector(fakes=scenario.fakes).install(monkeypatch)
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def deliver() -> None:
        start.wait()
        try:
            scenario.invoke()
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    with CallRecorder() as calls:
        threads = [threading.Thread(target=deliver) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert not errors, errors
    scenario.verify()
    scenario.check_concurrent(calls, scenario.mails())
    snapshots = {p["Parameters"]["SnapshotId"][0] for p in calls.of("ssm", "SendCommand")}
    assert snapshots == {sweep_id_for(STACK, "6a7e8feb-b491-4cf7-a9f1-bf3703467718")}


# -- issue 13: a sweep runs only at the times its schedule names -----------------------------

WEEKLY = "cron(0 3 ? * SUN *)"  # the template's default PatchSweeperSchedule


@pytest.mark.parametrize(
    ("clock", "runs"),
    [
        (datetime(2026, 11, 25, 14, 0, tzinfo=UTC), False),  # a Wednesday afternoon: forged
        (datetime(2026, 11, 22, 5, 16, tzinfo=UTC), False),  # Sunday, but later than any delivery
        (datetime(2026, 11, 22, 3, 0, 20, tzinfo=UTC), True),  # the rule's own delivery
        (datetime(2026, 11, 22, 5, 14, tzinfo=UTC), True),  # a delivery retried for 2 hours
    ],
    ids=["wednesday", "too-late", "on-time", "retried"],
)
def test_a_scheduled_event_at_a_time_the_schedule_does_not_name_starts_no_sweep(
    env: dict[str, str],
    ssm: Stubber,
    ssm_calls: list[tuple[str, dict[str, Any]]],
    load_event: Loader,
    mailbox: Mailbox,
    lambda_context: Any,
    monkeypatch: pytest.MonkeyPatch,
    clock: datetime,
    runs: bool,
) -> None:
    """Whoever may invoke the function can hand it a well-formed scheduled event dated now; with
    RebootIfNeeded that would reboot the fleet in business hours. The clock is checked against
    the function's own cron schedule: no time it named within a delivery's age, no sweep."""
    monkeypatch.setenv("SCHEDULE", WEEKLY)
    monkeypatch.setattr(runner, "clock", lambda: clock)
    ids = sorted(launch(2))
    event = load_event(SCHEDULE)  # dated by the (pinned) clock: fresh, so only the schedule decides
    if runs:
        stub_instance_information(ssm, ids)
        ssm.add_response(
            "send_command", command_reply(str(uuid.uuid4())), expected_send(ids, sweep_id(load_event), 1, 1)
        )
    result = app.lambda_handler(event, lambda_context)
    ssm.assert_no_pending_responses()
    if runs:
        assert result["status"] == "done" and [op for op, _ in ssm_calls] == [
            "DescribeInstanceInformation",
            "SendCommand",
        ]
    else:
        assert result["status"] == "ignored" and "named no time" in result["reason"], result
        assert ssm_calls == [] and mailbox() == [] and outbox_items() == []


@pytest.mark.parametrize("schedule", ["rate(7 days)", "weekly", ""])
def test_the_sweeper_refuses_a_schedule_it_cannot_check(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, schedule: str
) -> None:
    """A rate(...) names no times, so a forged event could never be told from the rule's: the
    sweeper (which may reboot) accepts only a cron(...) schedule, and says so."""
    monkeypatch.setenv("SCHEDULE", schedule)
    with pytest.raises(ConfigError, match="SCHEDULE"):
        Config.from_env()
