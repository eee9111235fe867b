"""The handler end to end: EC2, DynamoDB and SNS in moto; SSM through botocore Stubber.

moto 5 implements neither DescribeInstanceInformation, ListCommandInvocations nor
DescribeInstancePatchStates, and its SendCommand accepts anything; so every SSM call here is
answered by a Stubber that also checks the exact request.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from autopilot import aws
from autopilot.events import parse_scheduled
from autopilot.recorder import CallRecorder
from patch_sweeper import app
from patch_sweeper.config import PatchSweeperConfig
from patch_sweeper.service import sweep_id_for

pytestmark = pytest.mark.integration
REGION = "eu-west-1"
TABLE = "patch-sweeper-state"
LOG_GROUP = "/ops-autopilot-test/patch-sweeper/commands"
Loader = Callable[[str], dict[str, Any]]
Mailbox = Callable[[], list[dict[str, Any]]]


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
    """(operation, API parameters) of every SSM call. The shared CallRecorder hooks before-call,
    which a Stubber answers first (more specific registration), so it never sees stubbed calls."""
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


def sweep_id(load_event: Loader, env: dict[str, str]) -> str:
    run = parse_scheduled(load_event("patch_sweeper/eventbridge.weekly_schedule"))
    return sweep_id_for(PatchSweeperConfig.from_env(), run)


def status_event(load_event: Loader, command_id: str, status: str = "Success") -> dict[str, Any]:
    """The status event of one of the weekly sweep's commands (SSM echoes the command's
    parameters, so SnapshotId carries the sweep id)."""
    event = copy.deepcopy(load_event("patch_sweeper/ssm.command_status.success"))
    event["detail"]["command-id"] = command_id
    event["detail"]["status"] = status
    run = parse_scheduled(load_event("patch_sweeper/eventbridge.weekly_schedule"))
    event["detail"]["parameters"]["SnapshotId"] = [sweep_id_for(PatchSweeperConfig.from_env(), run)]
    return event


def invocation(command_id: str, instance_id: str, status: str) -> dict[str, Any]:
    linux_status = status
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
                "Status": linux_status,
                "StatusDetails": linux_status,
                "ResponseCode": 0 if status == "Success" else 1,
                "Output": "...",
            },
        ],
    }


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
    sid = sweep_id(load_event, env)
    batches = [ids[0:50], ids[50:100], ids[100:120]]
    commands = [str(uuid.uuid4()) for _ in batches]
    for n, (batch, cid) in enumerate(zip(batches, commands, strict=True), start=1):
        ssm.add_response("send_command", command_reply(cid), expected_send(batch, sid, n, 3))

    result = app.lambda_handler(load_event("patch_sweeper/eventbridge.weekly_schedule"), lambda_context)

    ssm.assert_no_pending_responses()
    assert result["status"] == "sent"
    assert result["Checked"] == 120 and result["commands"] == 3
    sends = [p for op, p in ssm_calls if op == "SendCommand"]
    assert [len(p["InstanceIds"]) for p in sends] == [50, 50, 20]
    assert sorted(i for p in sends for i in p["InstanceIds"]) == ids
    assert [op for op, _ in ssm_calls].count("DescribeInstanceInformation") == 3
    assert len(ssm_calls) == 6
    assert calls.by_operation() == {
        "ec2.DescribeInstances": 1,
        "ssm.DescribeInstanceInformation": 3,
        "ssm.SendCommand": 3,
        "dynamodb.PutItem": 1,  # the sweep record (a status event finds it by SnapshotId)
        "dynamodb.UpdateItem": 4,  # one per command + "all sent"
    }


def test_duplicate_schedule_event_sends_nothing_twice(
    env: dict[str, str],
    ssm: Stubber,
    ssm_calls: list[tuple[str, dict[str, Any]]],
    load_event: Loader,
    lambda_context: Any,
) -> None:
    ids = sorted(launch(3))
    sid = sweep_id(load_event, env)
    stub_instance_information(ssm, ids)
    ssm.add_response("send_command", command_reply(str(uuid.uuid4())), expected_send(ids, sid, 1, 1))
    stub_instance_information(ssm, ids)  # the duplicate still looks at the fleet, then stops
    event = load_event("patch_sweeper/eventbridge.weekly_schedule")
    app.lambda_handler(event, lambda_context)
    again = app.lambda_handler(event, lambda_context)
    ssm.assert_no_pending_responses()
    assert again["status"] == "duplicate"
    assert [op for op, _ in ssm_calls].count("SendCommand") == 1


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

    result = app.lambda_handler(load_event("patch_sweeper/eventbridge.weekly_schedule"), lambda_context)

    assert result["status"] == "dry-run"
    assert [c.operation for c in calls.mutating()] == ["Publish"]
    assert [op for op, _ in ssm_calls] == ["DescribeInstanceInformation"]
    (mail,) = mailbox()
    assert (
        mail["subject"]
        == "[ops-autopilot-test] DRY RUN: patch sweep would install 2 instances, 1 not patchable"
    )
    assert all(i in mail["body"] for i in managed + dark)
    assert "AmazonSSMManagedInstanceCore" in mail["body"]
    assert "ana@example.com" in mail["body"]
    assert mail["attributes"] == {"automation": "patch_sweeper", "severity": "warning"}


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
    sid = sweep_id(load_event, env)
    cid = str(uuid.uuid4())
    ssm.add_response("send_command", command_reply(cid), expected_send(targets, sid, 1, 1))

    started = app.lambda_handler(load_event("patch_sweeper/eventbridge.weekly_schedule"), lambda_context)
    assert started["status"] == "sent"
    assert started["Unmanaged"] == 2 and started["Skipped"] == 1
    assert mailbox() == []  # nothing to say until the command is final

    # an unrelated patch command of someone else: ignored without touching SSM
    foreign = app.lambda_handler(status_event(load_event, str(uuid.uuid4())), lambda_context)
    assert foreign["status"] == "not-ours"

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
                {
                    "InstanceId": i,
                    "PatchGroup": "default",
                    "BaselineId": "pb-0123456789abcdef0",
                    "Operation": "Install",
                    "OperationStartTime": datetime(2026, 11, 22, 3, 1, tzinfo=UTC),
                    "OperationEndTime": datetime(2026, 11, 22, 3, 9, tzinfo=UTC),
                    "InstalledCount": 41,
                    "InstalledPendingRebootCount": 2 if i == reboot else 0,
                    "MissingCount": 3 if i == bad else 0,
                    "FailedCount": 1 if i == bad else 0,
                }
                for i in targets
            ]
        },
        {"InstanceIds": targets},
    )
    event = status_event(load_event, cid, "Failed")
    done = app.lambda_handler(event, lambda_context)
    ssm.assert_no_pending_responses()
    assert done["status"] == "reported"
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
    assert again["status"] in {"already-reported", "waiting"}
    assert mailbox() == [mail]
    assert calls.count("sns", "Publish") == 1
    assert [op for op, _ in ssm_calls] == [
        "DescribeInstanceInformation",
        "SendCommand",
        "ListCommandInvocations",
        "GetCommandInvocation",
        "DescribeInstancePatchStates",
    ]


def test_refused_batch_is_reported_and_the_rest_still_runs(
    env: dict[str, str], ssm: Stubber, load_event: Loader, mailbox: Mailbox, lambda_context: Any
) -> None:
    ids = sorted(launch(60))
    stub_instance_information(ssm, ids)
    sid = sweep_id(load_event, env)
    ssm.add_client_error(
        "send_command",
        "InvalidInstanceId",
        "Instances not in a valid state",
        400,
        expected_params=expected_send(ids[:50], sid, 1, 2),
    )
    cid = str(uuid.uuid4())
    ssm.add_response("send_command", command_reply(cid), expected_send(ids[50:], sid, 2, 2))
    result = app.lambda_handler(load_event("patch_sweeper/eventbridge.weekly_schedule"), lambda_context)
    assert (result["commands"], result["refused_batches"]) == (1, 1)

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
    assert "command not sent: InvalidInstanceId" in mail["body"]
    assert "... and 0 more" not in mail["body"]


def test_no_target_at_all_mails_the_not_patchable_list_at_once(
    env: dict[str, str], ssm: Stubber, load_event: Loader, mailbox: Mailbox, lambda_context: Any
) -> None:
    dark = launch(1, {"Name": "legacy"})[0]
    stub_instance_information(ssm, [])
    result = app.lambda_handler(load_event("patch_sweeper/eventbridge.weekly_schedule"), lambda_context)
    ssm.assert_no_pending_responses()
    assert result["digest"] is True
    (mail,) = mailbox()
    assert "0 patched, 0 failed, 0 pending reboot, 1 not patchable" in mail["subject"]
    assert dark in mail["body"]


def test_empty_account_sends_no_mail(
    env: dict[str, str], ssm: Stubber, load_event: Loader, mailbox: Mailbox, lambda_context: Any
) -> None:
    stub_instance_information(ssm, [])
    app.lambda_handler(load_event("patch_sweeper/eventbridge.weekly_schedule"), lambda_context)
    assert mailbox() == []


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
    sid = sweep_id(load_event, env)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    ssm.add_response("send_command", command_reply(first), expected_send(ids[:50], sid, 1, 2))
    ssm.add_response("send_command", command_reply(second), expected_send(ids[50:], sid, 2, 2))
    app.lambda_handler(load_event("patch_sweeper/eventbridge.weekly_schedule"), lambda_context)

    waiting = app.lambda_handler(status_event(load_event, first), lambda_context)
    assert waiting["status"] == "waiting" and waiting["still_running"] == 1
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
            {
                "InstancePatchStates": [
                    {
                        "InstanceId": i,
                        "PatchGroup": "default",
                        "BaselineId": "pb-0123456789abcdef0",
                        "Operation": "Install",
                        "OperationStartTime": datetime(2026, 11, 22, 3, 1, tzinfo=UTC),
                        "OperationEndTime": datetime(2026, 11, 22, 3, 9, tzinfo=UTC),
                        "InstalledCount": 12,
                    }
                    for i in batch
                ]
            },
            {"InstanceIds": batch},
        )
    done = app.lambda_handler(status_event(load_event, second), lambda_context)
    ssm.assert_no_pending_responses()
    assert done["status"] == "reported" and done["Changed"] == 100
    (mail,) = mailbox()
    assert mail["subject"].endswith("100 patched, 0 failed, 0 pending reboot, 0 not patchable")
    assert mail["attributes"]["severity"] == "info"
    assert "... and 50 more" in mail["body"]  # the patched list is capped at 50 lines
    assert calls.by_operation() == {
        "ec2.DescribeInstances": 2,  # the fleet at start; Name/Owner of the 50 listed at the end
        "ssm.DescribeInstanceInformation": 2,
        "ssm.SendCommand": 2,
        "ssm.ListCommandInvocations": 2,
        "ssm.DescribeInstancePatchStates": 2,
        "dynamodb.PutItem": 1,
        "dynamodb.UpdateItem": 6,  # 2 sent + all sent + 2 finished + 1 digest claim
        "sns.Publish": 1,
    }


def test_last_command_final_before_the_sweep_marked_itself_sent(env: dict[str, str]) -> None:
    """The race where SSM is faster than the sweep's own bookkeeping still yields one digest."""
    from patch_sweeper import state

    record = state.SweepRecord("s-1", "2026-11-22T03:00:00+00:00", "Install", "NoReboot", (("i-1",),))
    assert state.create_sweep(TABLE, record) is not None
    assert state.create_sweep(TABLE, record) is None  # a retried schedule event
    state.record_sent(TABLE, "s-1", 0, "c" * 36)
    after_event = state.command_finished(TABLE, "s-1", "c" * 36)
    assert (
        after_event is not None and not after_event.complete
    )  # still "sending": the event handler must not report
    assert state.claim_digest(TABLE, "s-1") is False
    final = state.mark_sent(TABLE, "s-1")
    assert final.complete
    assert state.claim_digest(TABLE, "s-1") is True
    assert state.claim_digest(TABLE, "s-1") is False  # exactly once
    duplicate = state.command_finished(TABLE, "s-1", "c" * 36)
    assert duplicate is not None and duplicate.pending == frozenset()
    assert state.command_finished(TABLE, "s-gone", "c" * 36) is None  # record expired (TTL)


def test_sweep_out_of_time_fails_and_the_retry_resumes(
    env: dict[str, str],
    ssm: Stubber,
    ssm_calls: list[tuple[str, dict[str, Any]]],
    load_event: Loader,
    lambda_context: Any,
) -> None:
    from conftest import FakeContext  # the shared fixture's class
    from patch_sweeper.service import SweepIncomplete

    ids = sorted(launch(2))
    sid = sweep_id(load_event, env)
    event = load_event("patch_sweeper/eventbridge.weekly_schedule")
    stub_instance_information(ssm, ids)
    with pytest.raises(SweepIncomplete):  # fails the invocation: Lambda retries the event
        app.lambda_handler(event, FakeContext(remaining_ms=1_000))
    assert [op for op, _ in ssm_calls].count("SendCommand") == 0

    stub_instance_information(ssm, ids)
    ssm.add_response("send_command", command_reply(str(uuid.uuid4())), expected_send(ids, sid, 1, 1))
    resumed = app.lambda_handler(event, lambda_context)
    ssm.assert_no_pending_responses()
    assert resumed["status"] == "sent" and resumed["commands"] == 1
