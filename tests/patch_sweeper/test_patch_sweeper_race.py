"""SSM reports a command final before the sweep recorded it (issue 20): the sweep must still
complete, exactly once, and a forged "final" event for a command SSM does not have must change
nothing. SSM is stubbed as in test_patch_sweeper_handler.py; DynamoDB and EC2 are moto's."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.stub import Stubber

from patch_sweeper import app, store
from patch_sweeper.decide import SweepRecord
from tests.patch_sweeper.test_patch_sweeper_handler import (
    SCHEDULE,
    TABLE,
    Loader,
    Mailbox,
    command_reply,
    env,  # noqa: F401  (fixture)
    expected_send,
    invocation,
    launch,
    outbox_items,
    patch_state,
    record,
    ssm,  # noqa: F401  (fixture)
    status_event,
    stub_instance_information,
    sweep_id,
)

pytestmark = pytest.mark.integration


def stub_command_lookup(ssm: Stubber, command_id: str, sweep: str, status: str = "Success") -> None:  # noqa: F811
    """ListCommands by id, as the plan of an event for an unrecorded command asks it."""
    ssm.add_response(
        "list_commands",
        {
            "Commands": [
                {
                    "CommandId": command_id,
                    "DocumentName": "AWS-RunPatchBaseline",
                    "Status": status,
                    "Parameters": {"SnapshotId": [sweep]},
                }
            ]
        },
        {"CommandId": command_id},
    )


def test_a_command_final_before_it_was_recorded_still_completes_the_sweep_once(
    env: dict[str, str],  # noqa: F811
    ssm: Stubber,  # noqa: F811
    load_event: Loader,
    mailbox: Mailbox,
    lambda_context: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = sorted(launch(3))
    sid = sweep_id(load_event)
    stub_instance_information(ssm, ids)
    command = str(uuid.uuid4())
    ssm.add_response("send_command", command_reply(command), expected_send(ids, sid, 1, 1))
    real = store.record_sent
    early: list[dict[str, Any]] = []

    def record_sent(table: str, sweep: str, batch: int, command_id: str) -> None:
        # SSM's final status arrives while the sweeping run is between SendCommand and recording
        # it (its lease is live, so the event's invocation does not take its work over)
        early.append(app.lambda_handler(status_event(load_event, command), lambda_context))
        assert record(load_event).finished == {command}
        real(table, sweep, batch, command_id)

    monkeypatch.setattr(store, "record_sent", record_sent)
    stub_command_lookup(ssm, command, sid)  # the event's plan checks the command with SSM
    ssm.add_response(
        "list_command_invocations",
        {"CommandInvocations": [invocation(command, i, "Success") for i in ids]},
        {"CommandId": command, "Details": True, "MaxResults": 50},
    )
    ssm.add_response(
        "describe_instance_patch_states",
        {"InstancePatchStates": [patch_state(i) for i in ids]},
        {"InstanceIds": ids},
    )
    app.lambda_handler(load_event(SCHEDULE), lambda_context)

    ssm.assert_no_pending_responses()
    final = record(load_event)
    assert final.sent == {0: command} and final.pending == frozenset() and final.complete
    (mail,) = mailbox()
    assert "patch sweep: 3 patched, 0 failed" in mail["subject"]
    assert outbox_items() == []


def test_a_forged_final_event_for_an_unknown_command_changes_nothing(
    env: dict[str, str],  # noqa: F811
    ssm: Stubber,  # noqa: F811
    load_event: Loader,
    lambda_context: Any,
) -> None:
    now = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
    sid = sweep_id(load_event)
    assert store.create_sweep(
        TABLE, SweepRecord(sid, now.isoformat(), "Install", "NoReboot", (("i-1",),)), now
    )
    forged = str(uuid.uuid4())
    ssm.add_client_error("list_commands", "InvalidCommandId", "no such command")

    app.lambda_handler(status_event(load_event, forged), lambda_context)

    ssm.assert_no_pending_responses()
    assert record(load_event).finished == frozenset()


def test_recorded_after_finishing_early_the_command_is_not_pending_in_either_order(
    env: dict[str, str],  # noqa: F811
) -> None:
    now = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
    for early_first in (True, False):
        sweep, command = str(uuid.uuid4()), str(uuid.uuid4())
        assert store.create_sweep(
            TABLE, SweepRecord(sweep, now.isoformat(), "Install", "NoReboot", (("i-1",),)), now
        )
        if early_first:
            store.finished_early(TABLE, sweep, command)
            store.record_sent(TABLE, sweep, 0, command)
        else:
            store.record_sent(TABLE, sweep, 0, command)
            store.finished_early(TABLE, sweep, command)
        assert store.mark_sent(TABLE, sweep).complete, early_first
