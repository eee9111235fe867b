"""The sequence of both jobs, for the runner: ``plan`` (gather + decide, changes nothing) and
``act`` (carry the recorded intent out, idempotently).

Two triggers, dispatched on the parsed type (:data:`PLANNERS`) and on the intent's kind
(:data:`ACTS`):

- **the weekly schedule** -> plan: the fleet (service) and who is patched (decide); the
  intent holds the sweep id, the batches and the not-patchable list. act: create the sweep
  record, send AWS-RunPatchBaseline per batch, each command id recorded before the next
  send, then "all sent"; resumed, it first asks SSM (ListCommands) which batches were sent
  but not recorded, so none is sent twice; a sweep with nothing left running (no targets, every batch refused,
  every command already final) makes its digest at once.
- **a command's final status** -> plan: the sweep record (one GetItem) and what the event
  means for it (decide). act: take the command off the pending set (atomic); if it was the
  last, claim the digest with the intent's token and read the results.

The digest is the act's result; the runner records it with its mail in the outbox before
sending, so a mail SNS refused is sent by the retry or the next run, exactly once.

The sweep id is derived from the scheduled event's id, never from its time nor from the
clock: a redelivered or retried event is the same sweep, whatever day or hour it arrives.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from autopilot import freeze
from autopilot.aws import error_code
from autopilot.events import ScheduledRun
from autopilot.runner import Context, Counts, Plan, Run
from patch_sweeper import decide, service, store
from patch_sweeper.config import Config
from patch_sweeper.decide import SHOWN, SendFailure, SweepRecord
from patch_sweeper.event import CommandFinished, Trigger

logger = Logger(child=True)


# How long before the sweep's recorded start its commands are looked for (clock skew only: the
# start is recorded before the first SendCommand).
COMMAND_LOOKUP_MARGIN = timedelta(minutes=5)


# Why a batch was not sent: a change freeze began while the sweep was being sent.
FROZEN = "ChangeFreeze"


class SweepIncomplete(RuntimeError):
    """Time ran out before every batch was sent; the retry resumes the recorded intent."""


def sweep_id_for(stack_name: str, event_id: str) -> str:
    """Deterministic per scheduled event, so a retried or duplicated event is the same sweep.
    GUID-shaped: it is also AWS-RunPatchBaseline's SnapshotId, so every instance of the sweep
    gets the same baseline snapshot (the same approved patches)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ops-autopilot/{stack_name}/{event_id}"))


# -- plan -------------------------------------------------------------------------------------------


def plan(run: Run[Config, Trigger]) -> Plan:
    trigger = run.trigger
    planner = PLANNERS[type(trigger)]
    return planner(run, trigger)


def _plan_sweep(run: Run[Config, Trigger], trigger: Any) -> Plan:
    """2 + ceil(N / 1000) + ceil(N / 50) calls: DescribeInstances, DescribeInstanceInformation."""
    scheduled: ScheduledRun = trigger
    config, owner_key = run.config, run.common.owner_tag_key
    targets = decide.decide_targets(
        service.running_instances(), service.managed_nodes(), opt_out_tag=config.opt_out_tag
    )
    decisions: list[dict[str, Any]] = [
        {"decision": "not patchable", "instance_id": n.instance.id, "reason": n.reason}
        for n in targets.not_patchable
    ] + [{"decision": "left out", "instance_id": i.id, "tag": config.opt_out_tag} for i in targets.opted_out]
    counts = Counts(
        checked=len(targets.targets),
        skipped=len(targets.opted_out),
        extra={"Unmanaged": len(targets.not_patchable)},
    )
    if not targets.worth_a_run(run.dry_run):
        return Plan(None, counts, decisions)
    batches = targets.batches()
    not_patchable = decide.not_patchable_entries(targets, owner_key)
    intent = {
        "kind": "sweep",
        "sweep_id": sweep_id_for(run.common.stack_name, scheduled.id),
        "token": uuid.uuid4().hex,  # this plan's claim on the digest (store.claim_digest)
        "started_at": run.now.isoformat(),
        "operation": config.operation,
        "reboot_option": config.reboot_option,
        "batches": batches,
        "not_patchable": not_patchable[: decide.MAX_STORED_NOT_PATCHABLE],
        "not_patchable_count": len(not_patchable),
        "opted_out_count": len(targets.opted_out),
        # for the dry-run mail: the first of each list, with Name and owner
        "would_patch": [{**i.entry(owner_key), "platform": i.platform} for i in targets.targets[:SHOWN]],
        "left_out": [i.entry(owner_key) for i in targets.opted_out[:SHOWN]],
    }
    decisions.append(
        {
            "decision": "sweep",
            "sweep_id": intent["sweep_id"],
            "targets": len(targets.targets),
            "commands": len(batches),
            "not_patchable": len(not_patchable),
        }
    )
    return Plan(intent, counts, decisions)


def _plan_command(run: Run[Config, Trigger], trigger: Any) -> Plan:
    """1 GetItem (the sweep record); none for a command that names no sweep. A command final
    before the sweep recorded it is first checked with SSM (1 ListCommands): the event alone
    could be forged, and would make a sweep complete before its commands are."""
    finished: CommandFinished = trigger
    seen = {"command_id": finished.command_id, "status": finished.status, "sweep_id": finished.sweep_id}
    if finished.sweep_id is None:
        reason = "no sweep id (SnapshotId): not a command of this stack's sweeps"
        return Plan(None, Counts(), [{"decision": "ignored", **seen, "reason": reason}])
    record = store.load_sweep(run.config.state_table, finished.sweep_id)
    verdict, reason = decide.on_command_finished(record, finished.command_id)
    if verdict == "early" and not service.is_sweep_command(finished.command_id, finished.sweep_id):
        verdict, reason = "ignore", "SSM knows no final patch command of this sweep by that id"
    decision = {"decision": "ignored" if verdict == "ignore" else "counted", **seen, "reason": reason}
    if verdict == "ignore":
        return Plan(None, Counts(), [decision])
    intent = {
        "kind": "command" if verdict == "count" else "command-early",
        "sweep_id": finished.sweep_id,
        "command_id": finished.command_id,
        "status": finished.status,
        "token": uuid.uuid4().hex,
    }
    return Plan(intent, Counts(), [decision])


PLANNERS: dict[type, Callable[[Run[Config, Trigger], Any], Plan]] = {
    ScheduledRun: _plan_sweep,
    CommandFinished: _plan_command,
}


# -- act --------------------------------------------------------------------------------------------


def act(ctx: Context[Config], intent: Mapping[str, Any]) -> dict[str, Any]:
    """Idempotent; no call at all in dry run. Returns plain JSON (what was done, the digest)."""
    return ACTS[str(intent["kind"])](ctx, intent)


def _act_sweep(ctx: Context[Config], intent: Mapping[str, Any]) -> dict[str, Any]:
    """1 PutItem, then per batch 1 SendCommand + 1 UpdateItem, then 1 UpdateItem (all sent)."""
    # A change freeze holds the sweep back (asked when acting: a retry asks again).
    calendar = freeze.read(ctx.common.change_calendar) if intent["batches"] else None
    frozen = calendar.as_json() if calendar is not None and calendar.closed else None
    if ctx.dry_run:
        return {
            "status": "dry-run",
            "commands": len(intent["batches"]),
            **({"freeze": frozen} if frozen else {}),
        }
    config = ctx.config
    table, sweep_id = config.state_table, str(intent["sweep_id"])
    record = SweepRecord(
        sweep_id=sweep_id,
        started_at=str(intent["started_at"]),
        operation=str(intent["operation"]),
        reboot_option=str(intent["reboot_option"]),
        batches=tuple(tuple(b) for b in intent["batches"]),
        not_patchable=tuple(intent["not_patchable"]),
        not_patchable_count=int(intent["not_patchable_count"]),
        opted_out_count=int(intent["opted_out_count"]),
    )
    if frozen is not None and store.load_sweep(table, sweep_id) is None:
        logger.info("change freeze: no patch sweep", extra={**frozen, "sweep_id": sweep_id})
        return {"status": "frozen", "sweep_id": sweep_id, "freeze": frozen}
    if not store.create_sweep(table, record, ctx.now):
        stored = store.load_sweep(table, sweep_id)
        if stored is None or not ctx.resumed:
            # Only the run that recorded this sweep's intent (or whoever resumes it) sends it.
            logger.info(
                "sweep already started by an earlier delivery of this event", extra={"sweep_id": sweep_id}
            )
            return {"status": "duplicate", "sweep_id": sweep_id}
        logger.info("resuming an interrupted sweep", extra={"sweep_id": sweep_id})
        record = _recover_sent(table, stored)
    total = len(record.batches)
    for index, batch in record.batches_to_send():
        if frozen is not None:  # the freeze began while the sweep was being sent: the rest waits
            store.record_send_error(table, sweep_id, index, FROZEN)
            continue
        if ctx.deadline.expired():
            raise SweepIncomplete(f"sweep {sweep_id}: time ran out before batch {index + 1}/{total}")
        request = service.CommandRequest(
            instance_ids=batch,
            operation=record.operation,
            reboot_option=record.reboot_option,
            snapshot_id=sweep_id,
            comment=f"ops-autopilot {ctx.common.stack_name} patch sweep {sweep_id[:8]} {index + 1}/{total}",
            max_concurrency=config.max_concurrency,
            max_errors=config.max_errors,
            log_group=config.output_log_group,
        )
        try:
            command_id = service.send_patch_command(request)
        except ClientError as err:
            code = error_code(err)
            logger.warning(
                "SendCommand refused a batch", extra={"batch": index, "error": code, "sweep_id": sweep_id}
            )
            store.record_send_error(table, sweep_id, index, code)
            continue
        logger.info(
            "patch command sent", extra={"command_id": command_id, "instances": len(batch), "batch": index}
        )
        store.record_sent(table, sweep_id, index, command_id)
    final = store.mark_sent(table, sweep_id)
    result: dict[str, Any] = {
        "status": "sent",
        "sweep_id": sweep_id,
        "commands": len(final.sent),
        "refused_batches": len(final.send_errors),
        **({"freeze": frozen} if frozen else {}),
    }
    if final.complete:  # nothing left running: no targets, every batch refused, or all final
        digest = _digest(ctx, final, str(intent["token"]))
        if digest is not None:
            result["digest"] = digest
    return result


def _recover_sent(table: str, record: SweepRecord) -> SweepRecord:
    """The stored sweep, with every batch SSM has a command for recorded as sent. The earlier run
    may have died (or failed to write) between a SendCommand and recording it; sending that
    batch again would patch, and with RebootIfNeeded reboot, each of its instances twice.
    SendCommand takes no idempotency token, so SSM is asked (ListCommands: this sweep's
    SnapshotId and the batch's instances)."""
    unrecorded = record.batches_to_send()
    if not unrecorded:
        return record
    since = datetime.fromisoformat(record.started_at) - COMMAND_LOOKUP_MARGIN
    by_instances = {
        instances: command_id for command_id, instances in service.sent_commands(record.sweep_id, since)
    }
    sent = dict(record.sent)
    for index, batch in unrecorded:
        command_id = by_instances.get(frozenset(batch))
        if command_id is None:
            continue
        logger.warning(
            "batch was sent before the run died; recorded now, not sent again",
            extra={"sweep_id": record.sweep_id, "batch": index, "command_id": command_id},
        )
        store.record_sent(table, record.sweep_id, index, command_id)
        sent[index] = command_id
    return replace(record, sent=sent, pending=record.pending | {sent[i] for i, _ in unrecorded if i in sent})


def _act_command(ctx: Context[Config], intent: Mapping[str, Any]) -> dict[str, Any]:
    """1 UpdateItem; the last command's also claims (1 UpdateItem) and reads the results."""
    if ctx.dry_run:
        return {"status": "dry-run"}
    sweep_id, command_id = str(intent["sweep_id"]), str(intent["command_id"])
    note = store.finished_early if intent["kind"] == "command-early" else store.command_finished
    record = note(ctx.config.state_table, sweep_id, command_id)
    if record is None:
        return {"status": "not-ours"}  # the record expired since the plan read it
    logger.info(
        "patch command final",
        extra={"command_id": command_id, "status": intent["status"], "still_running": len(record.pending)},
    )
    if not record.complete:
        return {"status": "waiting", "still_running": len(record.pending)}
    digest = _digest(ctx, record, str(intent["token"]))
    if digest is None:
        return {"status": "already-reported"}
    return {"status": "reported", "digest": digest}


def _digest(ctx: Context[Config], record: SweepRecord, token: str) -> dict[str, Any] | None:
    """Claim the complete sweep's digest (1 UpdateItem) and read and classify its results, or
    None when another run's intent holds the claim."""
    if not store.claim_digest(ctx.config.state_table, record.sweep_id, token, ctx.now):
        return None
    results = service.gather_results(record)
    refused = [SendFailure(record.batches[i], code) for i, code in record.send_errors.items()]
    outcome = decide.classify(record.targeted, results.invocations, results.states, refused, results.tails)
    shown = outcome.shown()
    instances = service.instances_by_id(shown) if shown else {}
    for f in outcome.failed:
        logger.info("patch failed", extra={"instance_id": f.instance_id, "reason": f.reason})
    return decide.summarise(record, outcome, instances, results.errors, ctx.common.owner_tag_key)


ACTS: dict[str, Callable[[Context[Config], Mapping[str, Any]], dict[str, Any]]] = {
    "sweep": _act_sweep,
    "command": _act_command,
    "command-early": _act_command,
}
