"""Event parsing: the real-shaped samples in events/patch_sweeper/ and what is rejected."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from autopilot.events import BadEvent, ScheduledRun
from patch_sweeper.event import CommandFinished, parse

pytestmark = pytest.mark.unit
Loader = Callable[[str], dict[str, Any]]


def test_schedule(load_event: Loader) -> None:
    trigger = parse(load_event("patch_sweeper/eventbridge.weekly_schedule"))
    assert isinstance(trigger, ScheduledRun)
    assert trigger.id == "6a7e8feb-b491-4cf7-a9f1-bf3703467718"


@pytest.mark.parametrize(("name", "status"), [("success", "Success"), ("failed", "Failed")])
def test_final_command_status(load_event: Loader, name: str, status: str) -> None:
    trigger = parse(load_event(f"patch_sweeper/ssm.command_status.{name}"))
    assert isinstance(trigger, CommandFinished)
    assert trigger.status == status
    assert trigger.document == "AWS-RunPatchBaseline"
    assert all(i.startswith("i-0a1b2c3d4e5f6000") for i in trigger.instance_ids)
    assert trigger.sweep_id == "3f0c5c4e-2d7b-5a8e-9d43-6f1e2a7b9c10"  # its SnapshotId parameter


def test_a_command_without_a_guid_snapshot_id_names_no_sweep(load_event: Loader) -> None:
    event = copy.deepcopy(load_event("patch_sweeper/ssm.command_status.success"))
    event["detail"]["parameters"]["SnapshotId"] = ["my-own-snapshot"]
    assert parse(event).sweep_id is None  # type: ignore[union-attr]
    del event["detail"]["parameters"]
    assert parse(event).sweep_id is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("in_progress", "not final"),
        ("other_document", "AWS-RunShellScript"),
        ("malformed", "command-id"),
    ],
)
def test_rejected_events(load_event: Loader, name: str, reason: str) -> None:
    with pytest.raises(BadEvent, match=reason):
        parse(load_event(f"patch_sweeper/ssm.command_status.{name}"))


@pytest.mark.parametrize("missing", ["id", "time"])
def test_a_status_event_needs_its_id_and_time(load_event: Loader, missing: str) -> None:
    """The id is the runner's claim key (one delivery, one run); without it nothing is done."""
    event = copy.deepcopy(load_event("patch_sweeper/ssm.command_status.success"))
    del event[missing]
    with pytest.raises(BadEvent, match=missing):
        parse(event)


@pytest.mark.parametrize(
    "event",
    [
        None,
        [],
        {"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification"},
        {"source": "aws.ssm", "detail-type": "EC2 Command Status-change Notification", "detail": "x"},
        {"source": "aws.events", "detail-type": "Scheduled Event"},
    ],
)
def test_garbage(event: Any) -> None:
    with pytest.raises(BadEvent):
        parse(event)
