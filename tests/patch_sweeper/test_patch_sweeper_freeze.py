"""patch_sweeper and a change freeze: while the Change Calendar is CLOSED (or cannot be read) a
sweep sends no command and its mail says so; a freeze that begins while a sweep is being sent
holds its remaining batches back (PRODUCT.md). SSM is stubbed (botocore Stubber), as in
test_patch_sweeper_handler.py; EC2 and DynamoDB are moto's."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.stub import ANY, Stubber

from autopilot.config import CommonConfig
from autopilot.recorder import CallRecorder
from autopilot.runner import Context
from autopilot.runtime import Deadline
from patch_sweeper import app, run, store
from patch_sweeper.config import Config
from patch_sweeper.decide import SweepRecord
from tests.patch_sweeper.test_patch_sweeper_handler import (
    SCHEDULE,
    TABLE,
    Loader,
    Mailbox,
    command_reply,
    env,  # noqa: F401  (fixture)
    expected_send,
    launch,
    ssm,  # noqa: F401  (fixture)
    stub_instance_information,
    sweep_id,
)

pytestmark = pytest.mark.integration

CALENDAR = "freeze-calendar"


@pytest.fixture
def frozen_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:  # noqa: F811
    monkeypatch.setenv("CHANGE_CALENDAR", CALENDAR)
    return {**env, "CHANGE_CALENDAR": CALENDAR}


def calendar_says(ssm: Stubber, state: str, until: str = "") -> None:  # noqa: F811
    reply: dict[str, Any] = {"State": state, "AtTime": "2026-11-29T03:00:00Z"}
    if until:
        reply["NextTransitionTime"] = until
    ssm.add_response("get_calendar_state", reply, {"CalendarNames": [CALENDAR]})


def test_a_closed_calendar_sends_no_command_records_no_sweep_and_mails_why(
    frozen_env: dict[str, str],
    ssm: Stubber,  # noqa: F811
    load_event: Loader,
    mailbox: Mailbox,
    lambda_context: Any,
) -> None:
    targets = sorted(launch(3, {"Owner": "ops@example.com"}))
    stub_instance_information(ssm, targets)
    calendar_says(ssm, "CLOSED", "2026-12-01T00:00:00Z")  # and no send_command: the Stubber refuses one

    with CallRecorder() as calls:
        result = app.lambda_handler(load_event(SCHEDULE), lambda_context)

    ssm.assert_no_pending_responses()
    assert calls.count("ssm", "SendCommand") == 0
    assert store.load_sweep(TABLE, sweep_id(load_event)) is None
    assert result["Skipped"] == 3 and result["Failed"] == 0
    (mail,) = mailbox()
    assert mail["subject"] == "[ops-autopilot-test] patch sweep waits: change freeze, 3 instances not patched"
    assert "Waiting for the change freeze: not patched (3)" in mail["body"]
    assert "Change calendar freeze-calendar is CLOSED until 2026-12-01 00:00 UTC." in mail["body"]
    assert all(i in mail["body"] for i in targets)


def test_an_open_calendar_lets_the_sweep_start(
    frozen_env: dict[str, str],
    ssm: Stubber,  # noqa: F811
    load_event: Loader,
    lambda_context: Any,
) -> None:
    targets = sorted(launch(2))
    stub_instance_information(ssm, targets)
    calendar_says(ssm, "OPEN")
    command = str(uuid.uuid4())
    ssm.add_response(
        "send_command", command_reply(command), expected_send(targets, sweep_id(load_event), 1, 1)
    )

    app.lambda_handler(load_event(SCHEDULE), lambda_context)

    ssm.assert_no_pending_responses()
    stored = store.load_sweep(TABLE, sweep_id(load_event))
    assert stored is not None and stored.sent == {0: command}


def test_a_calendar_that_cannot_be_read_is_a_freeze_and_a_failure(
    frozen_env: dict[str, str],
    ssm: Stubber,  # noqa: F811
    load_event: Loader,
    mailbox: Mailbox,
    lambda_context: Any,
) -> None:
    stub_instance_information(ssm, sorted(launch(1)))
    ssm.add_client_error("get_calendar_state", "InvalidDocument", "Document freeze-calendar does not exist")

    result = app.lambda_handler(load_event(SCHEDULE), lambda_context)

    assert result["Failed"] == 1 and store.load_sweep(TABLE, sweep_id(load_event)) is None
    (mail,) = mailbox()
    assert "could not be read (InvalidDocument): treated as CLOSED" in mail["body"]


def test_a_freeze_that_began_while_a_sweep_was_sent_holds_its_remaining_batches_back(
    frozen_env: dict[str, str],
    ssm: Stubber,  # noqa: F811
) -> None:
    """The run that sent batch 1 of 2 died; the retry finds the calendar CLOSED: batch 2 is not
    sent, its instances are reported as not sent (ChangeFreeze), and the sweep can complete."""
    now = datetime(2026, 11, 29, 3, 0, 30, tzinfo=UTC)
    first, second = [f"i-{n:017x}" for n in range(1, 51)], ["i-00000000000000ff"]
    sweep = str(uuid.uuid4())
    record = SweepRecord(sweep, now.isoformat(), "Install", "NoReboot", (tuple(first), tuple(second)))
    assert store.create_sweep(TABLE, record, now)
    command = str(uuid.uuid4())
    store.record_sent(TABLE, sweep, 0, command)
    calendar_says(ssm, "CLOSED")
    ssm.add_response(  # the retry asks SSM which batches were sent but not recorded: none
        "list_commands",
        {
            "Commands": [
                {
                    "CommandId": command,
                    "DocumentName": "AWS-RunPatchBaseline",
                    "InstanceIds": first,
                    "Parameters": {"SnapshotId": [sweep]},
                }
            ]
        },
        {"Filters": ANY, "MaxResults": 50},
    )
    ctx = Context(
        "patch_sweeper", Config.from_env(), CommonConfig.from_env(), now, Deadline(300.0), resumed=True
    )
    intent = {
        "kind": "sweep",
        "sweep_id": sweep,
        "token": "t",
        "started_at": now.isoformat(),
        "operation": "Install",
        "reboot_option": "NoReboot",
        "rings": [{"number": 0, "batches": 2, "instances": len(first) + len(second)}],
        "not_patchable": [],
        "not_patchable_count": 0,
        "opted_out_count": 0,
    }

    result = run.act(ctx, intent)

    ssm.assert_no_pending_responses()  # and no send_command: the Stubber would have refused it
    stored = store.load_sweep(TABLE, sweep)
    assert stored is not None and stored.send_errors == {1: run.FROZEN} and stored.phase == "sent"
    assert result["freeze"]["state"] == "CLOSED"
