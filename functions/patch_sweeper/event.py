"""The two events this function reacts to, parsed by a lookup table keyed by (source, detail-type).

- the weekly schedule (``aws.events`` / ``aws.scheduler``, "Scheduled Event"): start a sweep;
- SSM's "EC2 Command Status-change Notification" for AWS-RunPatchBaseline: one of the
  sweep's commands reached a final status; collect the results when it was the last one.

- the hourly tick (``ops-autopilot.patch-sweep`` / "Patch sweep tick", the tick rule's own
  event reshaped by its input transformer): look at the open sweep - start its next ring when
  the soak time is over, close its ring when the timeout has passed. Whoever may invoke the
  function could send one; it only makes the function look, and the clock decides.

Anything else raises :class:`BadEvent`; the runner logs it once and changes nothing. The
event's own time is checked to be a time but decides nothing (the clock's time does).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autopilot.events import BadEvent, ScheduledRun, parse_scheduled, parse_time, require

DOCUMENT = "AWS-RunPatchBaseline"
# Command-level statuses after which nothing changes any more (CommandStatus enum minus
# Pending, InProgress and Cancelling). The EventBridge rule only forwards these.
FINAL_STATUSES = frozenset({"Success", "Failed", "TimedOut", "Cancelled"})
COMMAND_DETAIL_TYPE = "EC2 Command Status-change Notification"
_GUID = re.compile(r"^[0-9a-fA-F-]{36}$")


@dataclass(frozen=True)
class CommandFinished:
    """One of the suite's (possibly) patch commands reached a final status."""

    command_id: str
    status: str
    document: str
    instance_ids: tuple[str, ...]
    # The sweep that sent it: every sweep passes its id as AWS-RunPatchBaseline's SnapshotId
    # parameter, and the status event carries the command's parameters. None = not a sweep's.
    sweep_id: str | None = None


@dataclass(frozen=True)
class SweepTick:
    """The hourly tick: time to look at the open sweep (its time decides nothing)."""

    id: str
    account: str
    region: str


TICK_SOURCE = "ops-autopilot.patch-sweep"
TICK_DETAIL_TYPE = "Patch sweep tick"

Trigger = ScheduledRun | CommandFinished | SweepTick


def parse_tick(event: Any) -> SweepTick:
    parse_time(require(event, "time", str))
    return SweepTick(
        id=require(event, "id", str),
        account=require(event, "account", str),
        region=require(event, "region", str),
    )


def parse_command_finished(event: Any) -> CommandFinished:
    detail = require(event, "detail", dict)
    command_id = require(detail, "command-id", str, "event.detail")
    if not _GUID.match(command_id):
        raise BadEvent(f"event.detail.command-id={command_id[:60]!r} is not a command id")
    document = require(detail, "document-name", str, "event.detail")
    if document != DOCUMENT:
        raise BadEvent(f"command {command_id} ran {document!r}, not {DOCUMENT}")
    status = require(detail, "status", str, "event.detail")
    if status not in FINAL_STATUSES:
        raise BadEvent(f"command {command_id} status {status!r} is not final")
    resources = event.get("resources") or []
    if not isinstance(resources, list):
        raise BadEvent("event.resources is not a list")
    require(event, "id", str)  # the runner's claim key: one delivery, one run
    parse_time(require(event, "time", str))
    instances = tuple(str(r).rsplit("/", 1)[-1] for r in resources if ":instance/" in str(r))
    parameters = detail.get("parameters")
    snapshot = parameters.get("SnapshotId") if isinstance(parameters, dict) else None
    sweep_id = (
        snapshot[0] if isinstance(snapshot, list) and snapshot and isinstance(snapshot[0], str) else None
    )
    return CommandFinished(
        command_id=command_id,
        status=status,
        document=document,
        instance_ids=instances,
        sweep_id=sweep_id if sweep_id and _GUID.match(sweep_id) else None,
    )


PARSERS: dict[tuple[str, str], Callable[[Any], Trigger]] = {
    ("aws.events", "Scheduled Event"): parse_scheduled,
    ("aws.scheduler", "Scheduled Event"): parse_scheduled,
    ("aws.ssm", COMMAND_DETAIL_TYPE): parse_command_finished,
    (TICK_SOURCE, TICK_DETAIL_TYPE): parse_tick,
}


def parse(event: Any) -> Trigger:
    """The raw event as a typed trigger, or BadEvent saying why not."""
    source = require(event, "source", str)
    detail_type = require(event, "detail-type", str)
    parser = PARSERS.get((source, detail_type))
    if parser is None:
        raise BadEvent(f"not a trigger of patch_sweeper: source={source!r} detail-type={detail_type!r}")
    return parser(event)
