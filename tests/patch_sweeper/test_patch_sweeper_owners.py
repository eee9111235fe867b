"""Owners hear about their own instances' patching (autopilot.routing), through the real handler
and the runner: a failed patch (with its output) and a pending reboot reach the owner the
instance's tags name - by address, or through the routing map by team - one digest per
recipient, while the operators' digest lists every instance as before. SSM is a Stubber (moto
has none of the patch APIs), so the routing map's GetParameter is stubbed in its place."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from autopilot.recorder import CallRecorder
from conftest import ROUTING_PARAMETER, STACK, OwnerMail
from patch_sweeper import app, store
from tests.patch_sweeper.ring_fleet import Fleet
from tests.patch_sweeper.test_patch_sweeper_handler import (
    SCHEDULE,
    command_reply,
    env,  # noqa: F401  (fixture)
    expected_send,
    invocation,
    launch,
    patch_state,
    ssm,  # noqa: F401  (fixture)
    status_event,
    stub_instance_information,
    sweep_id,
)
from tests.patch_sweeper.test_patch_sweeper_rings import SUNDAY, deliver, fleet, rings, tick  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration
Loader = Callable[[str], dict[str, Any]]
Mailbox = Callable[[], list[dict[str, Any]]]
MAP = '{"payments": "payments-oncall@example.com"}'


def _sweep(stubber: Stubber, load_event: Loader, lambda_context: Any, *, routed: bool) -> dict[str, str]:
    """One sweep of four instances to its digest: ops's patched cleanly, bob's (Team=payments)
    and carol's waiting for a reboot, alice's failed."""
    boxes = {
        "ok": launch(1, {"Name": "web-1", "Owner": "ops@example.com"})[0],
        "reboot": launch(1, {"Name": "pay-1", "Owner": "bob", "Team": "payments"})[0],
        "carol": launch(1, {"Name": "misc", "Owner": "carol"})[0],
        "bad": launch(1, {"Name": "db-1", "Owner": "alice@example.com"})[0],
    }
    targets = sorted(boxes.values())
    stub_instance_information(stubber, targets)
    cid = str(uuid.uuid4())
    stubber.add_response(
        "send_command", command_reply(cid), expected_send(targets, sweep_id(load_event), 1, 1)
    )
    app.lambda_handler(load_event(SCHEDULE), lambda_context)
    bad = boxes["bad"]
    stubber.add_response(
        "list_command_invocations",
        {"CommandInvocations": [invocation(cid, i, "Failed" if i == bad else "Success") for i in targets]},
        {"CommandId": cid, "Details": True, "MaxResults": 50},
    )
    stubber.add_response(
        "get_command_invocation",
        {
            "CommandId": cid,
            "InstanceId": bad,
            "Status": "Failed",
            "StandardErrorContent": "Error: rpmdb open failed\n",
        },
        {"CommandId": cid, "InstanceId": bad, "PluginName": "PatchLinux"},
    )
    waiting = {boxes["reboot"], boxes["carol"]}
    stubber.add_response(
        "describe_instance_patch_states",
        {
            "InstancePatchStates": [
                patch_state(i, 41, InstalledPendingRebootCount=2 if i in waiting else 0) for i in targets
            ]
        },
        {"InstanceIds": targets},
    )
    if routed:
        stubber.add_response(
            "get_parameter",
            {"Parameter": {"Name": ROUTING_PARAMETER, "Type": "String", "Value": MAP, "Version": 1}},
            {"Name": ROUTING_PARAMETER},
        )
    app.lambda_handler(status_event(load_event, cid, "Failed"), lambda_context)
    stubber.assert_no_pending_responses()
    return boxes


def test_each_owner_gets_one_digest_about_only_their_instances_and_the_operators_get_all(
    env: dict[str, str],  # noqa: F811
    ssm: Stubber,  # noqa: F811
    owner_mail: OwnerMail,
    load_event: Loader,
    mailbox: Mailbox,
    lambda_context: Any,
) -> None:
    with CallRecorder() as calls:
        boxes = _sweep(ssm, load_event, lambda_context, routed=True)
    (operators,) = mailbox()
    assert operators["subject"].endswith("3 patched, 1 failed, 2 pending reboot, 0 not patchable")
    assert all(i in operators["body"] for i in boxes.values())
    mails = {to: (subject, body) for to, subject, body in owner_mail()}
    assert sorted(mails) == ["alice@example.com", "payments-oncall@example.com"]  # one each
    subject, body = mails["alice@example.com"]
    assert subject == f"[{STACK}] Your instances: 1 instance failed"
    assert boxes["bad"] in body and "| Error: rpmdb open failed" in body
    assert boxes["reboot"] not in body and boxes["carol"] not in body
    subject, body = mails["payments-oncall@example.com"]  # bob's, by its Team tag
    assert subject == f"[{STACK}] Your instances: 1 instance waiting for a reboot"
    assert boxes["reboot"] in body and boxes["bad"] not in body and boxes["carol"] not in body
    assert calls.count("sesv2", "SendEmail") == 2


def test_without_a_sender_nothing_is_routed_and_no_routing_map_is_read(
    env: dict[str, str],  # noqa: F811
    ssm: Stubber,  # noqa: F811
    load_event: Loader,
    mailbox: Mailbox,
    lambda_context: Any,
) -> None:
    with CallRecorder() as calls:
        _sweep(ssm, load_event, lambda_context, routed=False)  # a GetParameter would hit the Stubber
    assert len(mailbox()) == 1 and calls.count("sesv2") == 0


def test_the_owners_of_the_next_ring_are_warned_before_it_starts_and_can_leave_one_out(
    rings: dict[str, list[str]],  # noqa: F811
    fleet: Fleet,  # noqa: F811
    owner_mail: OwnerMail,
    mailbox: Mailbox,
    lambda_context: Any,
) -> None:
    """Warn, then act: ring 1's owner hears, when ring 0 passed, which of their instances ring 1
    patches and from when; one they tag AutoPatch=false before then is left out of it."""
    app.lambda_handler(fleet.schedule(), lambda_context)
    deliver(fleet, lambda_context)  # ring 0 passed: ring 1 soaks until 2026-11-23 03:00
    ((to, subject, body),) = owner_mail()  # the canaries patched cleanly: nothing for their owner
    assert to == "web@example.com" and subject == f"[{STACK}] Your instances: 3 instances to be patched"
    assert "To be patched in ring 1, from 2026-11-23 03:00 UTC, not rebooted" in body
    assert all(i in body for i in rings["1"]) and not any(i in body for i in rings["0"] + rings["2"])
    assert "tag it AutoPatch=false before 2026-11-23 03:00 UTC" in body
    assert len(mailbox()) == 1  # the operators' digest, as before

    told = rings["1"][0]
    boto3.client("ec2", region_name="eu-west-1").create_tags(
        Resources=[told], Tags=[{"Key": "AutoPatch", "Value": "false"}]
    )
    fleet.at(datetime(2026, 11, 23, 3, 5, tzinfo=UTC))
    tick(fleet, lambda_context)
    assert fleet.patched() == sorted(rings["0"] + rings["1"][1:])  # the one left out is not sent
    deliver(fleet, lambda_context)  # ring 1 passed: ring 2's owner is warned in turn
    assert [m[0] for m in owner_mail()] == ["web@example.com", "db@example.com"]
    assert "To be patched in ring 2, from 2026-11-24 03:" in owner_mail()[-1][2]


WEEKLY = "cron(0 3 ? * SUN *)"  # the sweep: Sundays 03:00 UTC (2026-11-22 in these tests)


def test_the_first_ring_is_announced_once_warning_hours_ahead_and_an_instance_left_out_is_not_patched(
    rings: dict[str, list[str]],  # noqa: F811
    fleet: Fleet,  # noqa: F811
    owner_mail: OwnerMail,
    mailbox: Mailbox,
    lambda_context: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Warn, then act, for the first ring: the hourly tick PATCH_WARNING_HOURS before the sweep
    tells the operators and each owner of ring 0's instances; a second tick says nothing; the
    sweep reads the fleet again and leaves out the instance its owner opted out meanwhile."""
    monkeypatch.setenv("SCHEDULE", WEEKLY)
    monkeypatch.setenv("PATCH_WARNING_HOURS", "24")
    fleet.at(datetime(2026, 11, 21, 2, 10, tzinfo=UTC))  # 24 h 50 min before: not yet
    tick(fleet, lambda_context)
    assert mailbox() == [] and owner_mail() == []

    fleet.at(datetime(2026, 11, 21, 3, 10, tzinfo=UTC))  # 23 h 50 min before
    with CallRecorder() as calls:
        tick(fleet, lambda_context)
    (operators,) = mailbox()
    assert operators["subject"] == (
        f"[{STACK}] next patch sweep 2026-11-22 03:00 UTC: 2 instances, 1 owner told"
    )
    assert (
        all(i in operators["body"] for i in rings["0"])
        and "Nothing has been changed yet" in operators["body"]
    )
    ((to, subject, body),) = owner_mail()  # the later rings' owners hear when ring 0 passed
    assert to == "canary@example.com" and subject == f"[{STACK}] Your instances: 2 instances to be patched"
    assert "To be patched in ring 0, from 2026-11-22 03:00 UTC, not rebooted" in body
    assert calls.count("ssm", "SendCommand") == 0 and not [c for c in calls.mutating() if c.service == "ec2"]

    fleet.at(datetime(2026, 11, 21, 4, 10, tzinfo=UTC))
    with CallRecorder() as calls:
        tick(fleet, lambda_context)
    assert len(mailbox()) == 1 and len(owner_mail()) == 1  # announced once
    assert calls.count("ec2", "DescribeInstances") == 0  # the marker is read, not the fleet

    told = rings["0"][0]
    boto3.client("ec2", region_name="eu-west-1").create_tags(
        Resources=[told], Tags=[{"Key": "AutoPatch", "Value": "false"}]
    )
    fleet.at(SUNDAY)
    app.lambda_handler(fleet.schedule(), lambda_context)
    assert fleet.patched() == rings["0"][1:]  # only the canary still a candidate


def test_no_announcement_when_the_warning_is_off(
    rings: dict[str, list[str]],  # noqa: F811
    fleet: Fleet,  # noqa: F811
    mailbox: Mailbox,
    lambda_context: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCHEDULE", WEEKLY)
    fleet.at(datetime(2026, 11, 21, 3, 10, tzinfo=UTC))
    with CallRecorder() as calls:
        tick(fleet, lambda_context)
    assert mailbox() == [] and calls.count("ec2") == 0


def test_a_dry_run_announces_nothing_and_writes_nothing(
    rings: dict[str, list[str]],  # noqa: F811
    fleet: Fleet,  # noqa: F811
    owner_mail: OwnerMail,
    mailbox: Mailbox,
    lambda_context: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCHEDULE", WEEKLY)
    monkeypatch.setenv("PATCH_WARNING_HOURS", "24")
    monkeypatch.setenv("DRY_RUN", "true")
    fleet.at(datetime(2026, 11, 21, 3, 10, tzinfo=UTC))
    with CallRecorder() as calls:
        tick(fleet, lambda_context)
    assert mailbox() == [] and owner_mail() == []
    assert not [c for c in calls.mutating() if c.params.get("TableName") == "patch-sweeper-state"]


def test_two_ticks_racing_past_the_announced_check_mail_once(
    rings: dict[str, list[str]],  # noqa: F811
    fleet: Fleet,  # noqa: F811
    mailbox: Mailbox,
    lambda_context: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both plans saw no marker (they ran at once): the conditional write lets one mail."""
    monkeypatch.setenv("SCHEDULE", WEEKLY)
    monkeypatch.setenv("PATCH_WARNING_HOURS", "24")
    monkeypatch.setattr(store, "announced", lambda *_: False)
    fleet.at(datetime(2026, 11, 21, 3, 10, tzinfo=UTC))
    tick(fleet, lambda_context)
    tick(fleet, lambda_context)
    assert len(mailbox()) == 1
