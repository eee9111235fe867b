"""The sequence of the sweep, for the runner: ``plan`` (gather + decide, changes nothing) and
``act`` (carry the recorded intent out, idempotently).

Three triggers, dispatched on the parsed type (:data:`PLANNERS`) and on the intent's kind
(:data:`ACTS`). One sweep spans several invocations, one ring after the other:

- **the weekly schedule** -> plan: the fleet (service), who is patched and in which ring
  (decide); every command's instance ids are staged in the sweep table (one item each: the
  record of who is patched, written before the intent, which names them by count and so stays
  small whatever the fleet; the plan changes nothing in the account, and stages nothing in a
  dry run). act: the sweep record, then ring 0: AWS-RunPatchBaseline per batch, each command id
  recorded before the next send, then "all sent"; resumed, it first asks SSM (ListCommands)
  which batches were sent but not recorded, so none is sent twice.
- **a command's final status** -> plan: the sweep record (one GetItem) and what the event
  means for it (decide). act: take the command off the pending set (atomic); if it was the
  ring's last, claim the ring's digest with the intent's token, read the results and judge the
  ring (decide.ring_verdict): the sweep is done, soaks before the next ring, or halts.
- **the hourly tick** -> plan: the newest sweep (2 GetItem) and what the clock means for it
  (decide.on_tick). act: start the next ring (the change calendar permitting; a conditional
  write, so two ticks start it once) and send it as above; or close a ring whose last status
  never came (its instances: "no result") and judge it.

Each ring's digest is the act's result; the runner records it with its mail in the outbox
before sending, so a mail SNS refused is sent by the retry or the next run, exactly once.

The sweep id is derived from the scheduled event's id, never from its time nor from the
clock: a redelivered or retried event is the same sweep, whatever day or hour it arrives.
Every time that decides (soak, timeout) is the clock's.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from autopilot import freeze, routing
from autopilot.aws import error_code
from autopilot.events import ScheduledRun
from autopilot.runner import Context, Counts, Plan, Run
from patch_sweeper import decide, service, store
from patch_sweeper.config import Config
from patch_sweeper.decide import SHOWN, RingInfo, SendFailure, SweepRecord
from patch_sweeper.event import CommandFinished, SweepTick, Trigger

logger = Logger(child=True)


# How long before the sweep's recorded start its commands are looked for (clock skew only: the
# start is recorded before the first SendCommand).
COMMAND_LOOKUP_MARGIN = timedelta(minutes=5)


# Ring 0's batches as the plan staged them, keyed by the plan's token, for the act on that same
# intent in the same invocation (a resumed intent, in another invocation, reads them back).
_STAGED: dict[str, tuple[tuple[str, ...], ...]] = {}

# Why a batch was not sent: a change freeze began while the sweep was being sent; or none of its
# instances was left to patch when its ring started.
FROZEN = "ChangeFreeze"
NONE_LEFT = "NoneLeft"


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


def intent_targets(intent: Mapping[str, Any]) -> int:
    """How many instances a sweep intent patches (every ring)."""
    return sum(int(r["instances"]) for r in intent["rings"])


def intent_commands(intent: Mapping[str, Any]) -> int:
    return sum(int(r["batches"]) for r in intent["rings"])


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
    sweep_id = sweep_id_for(run.common.stack_name, scheduled.id)
    table = config.state_table
    if not run.dry_run and store.load_sweep(table, sweep_id) is not None:
        # An earlier delivery of this event started it (a retry that got here): only the run
        # that recorded its intent, or whoever resumes that, sends it.
        decisions.append({"decision": "duplicate", "sweep_id": sweep_id, "reason": "sweep started already"})
        return Plan(None, counts, decisions)
    superseded = "" if run.dry_run else _unfinished_sweep(table, sweep_id)
    if superseded:
        decisions.append({"decision": "supersedes", "sweep_id": sweep_id, "previous": superseded})
    rings = decide.assign_rings(targets.targets)
    per_ring = rings.batches()
    for bad in rings.bad_tags:
        decisions.append(
            {"decision": "bad ring tag", "instance_id": bad.instance.id, "value": bad.value, "ring": "last"}
        )
    not_patchable = decide.not_patchable_entries(targets, owner_key)
    token = uuid.uuid4().hex  # this plan's claim on the first ring's digest (store.claim_digest)
    if not run.dry_run:  # the record of who is patched, before the intent (1 call per 25 commands)
        store.stage_batches(table, sweep_id, [b for _, b in per_ring], run.now)
        # ... which this invocation's act, acting on this very plan, need not read back
        _STAGED.clear()
        _STAGED[token] = tuple(tuple(b) for b in per_ring[0][1]) if per_ring else ()
    intent = {
        "kind": "sweep",
        "sweep_id": sweep_id,
        "token": token,
        "started_at": run.now.isoformat(),
        "operation": config.operation,
        "reboot_option": config.reboot_option,
        "rings": [
            {"number": number, "batches": len(batches), "instances": sum(len(b) for b in batches)}
            for number, batches in per_ring
        ],
        "bad_ring_tags": [{**b.instance.entry(owner_key), "value": b.value} for b in rings.bad_tags[:SHOWN]],
        "bad_ring_tag_count": len(rings.bad_tags),
        "superseded": superseded,
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
            "commands": sum(len(b) for _, b in per_ring),
            "rings": [number for number, _ in per_ring],
            "not_patchable": len(not_patchable),
        }
    )
    return Plan(intent, counts, decisions)


def _unfinished_sweep(table: str, sweep_id: str) -> str:
    """The newest sweep, when it is another one still soaking or running (2 GetItem): in words,
    for ring 0's mail, since this sweep takes its place (its later rings will not start)."""
    previous = store.current_sweep(table)
    record = store.load_sweep(table, previous) if previous and previous != sweep_id else None
    if record is None or record.status not in ("soaking", "running") or len(record.rings) < 2:
        return ""
    where = (
        f"soaking after ring {record.ring.number}"
        if record.status == "soaking"
        else (f"running ring {record.ring.number}")
    )
    return (
        f"the previous sweep (started {record.started_at[:16].replace('T', ' ')} UTC) was still "
        f"{where} of {len(record.rings)}"
    )


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


def _plan_tick(run: Run[Config, Trigger], trigger: Any) -> Plan:
    """2 GetItem (the newest sweep's id, its record); 1 when there was never a sweep."""
    table = run.config.state_table
    sweep_id = store.current_sweep(table)
    record = store.load_sweep(table, sweep_id) if sweep_id else None
    verdict, reason = decide.on_tick(record, run.now, run.config.ring_timeout)
    decision = {"decision": "tick", "sweep_id": sweep_id, "verdict": verdict, "reason": reason}
    if verdict == "wait" or record is None:
        # nothing to do for a ring: the next sweep's warning, if it is due (a ring goes first)
        return _announcement(run, decision) or Plan(None, Counts(), [decision])
    intent = {
        "kind": "ring" if verdict == "start-ring" else "time-out",
        "sweep_id": record.sweep_id,
        "ring_index": record.ring_index,  # the ring that passed (ring) or timed out (time-out)
        "token": uuid.uuid4().hex,
    }
    return Plan(intent, Counts(), [decision])


def _announcement(run: Run[Config, Trigger], decision: dict[str, Any]) -> Plan | None:
    """Warn, then act: when the next sweep the schedule names is at most PATCH_WARNING_HOURS
    away and not announced yet (1 GetItem), the instances its first ring would patch now (the
    fleet as the sweep reads it) and their owners, for the operators' and the owners' mail. The
    sweep itself reads the fleet again when it starts: an instance opted out, stopped or gone by
    then is not patched. None when off, in dry run, not due, or already announced."""
    config, schedule = run.config, run.common.schedule
    if not config.warning or run.dry_run or schedule is None:
        return None
    at = decide.next_sweep(schedule, run.now, config.warning)
    if at is None or store.announced(config.state_table, at.isoformat()):
        return None
    targets = decide.decide_targets(
        service.running_instances(), service.managed_nodes(), opt_out_tag=config.opt_out_tag
    )
    per_ring = decide.assign_rings(targets.targets).batches()
    if not per_ring:
        return None
    number, batches = per_ring[0]
    first = [i for b in batches for i in b]
    by_id = {i.id: i for i in targets.targets}
    key = run.common.owner_tag_key
    routes = routing.load(run.common)
    to = (
        routes.recipients(
            (i, by_id[i].tags.get(key), by_id[i].tags.get(run.common.team_tag_key)) for i in first
        )
        if routes
        else {}
    )
    owners = decide.owners_of(
        {"next": [(i, partial(by_id[i].entry, key)) for i in first]}, to, routing.ROUTED_BYTES
    )
    intent = {
        "kind": "announce",
        "at": at.isoformat(),
        "ring": number,
        "rings": len(per_ring),
        "instances": len(first),
        "operation": config.operation,
        "reboot_option": config.reboot_option,
        "listed": [by_id[i].entry(key) for i in first[:SHOWN]],
        **owners,
    }
    decision = {
        **decision,
        "announce": intent["at"],
        "instances": len(first),
        "owners": len(owners.get("owners", {})),
    }
    return Plan(intent, Counts(checked=len(targets.targets)), [decision])


PLANNERS: dict[type, Callable[[Run[Config, Trigger], Any], Plan]] = {
    ScheduledRun: _plan_sweep,
    CommandFinished: _plan_command,
    SweepTick: _plan_tick,
}


# -- act --------------------------------------------------------------------------------------------


def act(ctx: Context[Config], intent: Mapping[str, Any]) -> dict[str, Any]:
    """Idempotent; no call at all in dry run. Returns plain JSON (what was done, the digest)."""
    return ACTS[str(intent["kind"])](ctx, intent)


def _closed_calendar(ctx: Context[Config]) -> dict[str, Any] | None:
    """The change freeze (1 GetCalendarState when a calendar is configured), or None when open."""
    calendar = freeze.read(ctx.common.change_calendar)
    return calendar.as_json() if calendar is not None and calendar.closed else None


def _act_sweep(ctx: Context[Config], intent: Mapping[str, Any]) -> dict[str, Any]:
    """ceil(B / 25) BatchWriteItem + 2 PutItem, then ring 0: per batch 1 SendCommand + 1
    UpdateItem, then 1 UpdateItem (all sent)."""
    # A change freeze holds the sweep back (asked when acting: a retry asks again).
    frozen = _closed_calendar(ctx) if intent_commands(intent) else None
    if ctx.dry_run:
        return {
            "status": "dry-run",
            "commands": intent_commands(intent),
            **({"freeze": frozen} if frozen else {}),
        }
    table, sweep_id = ctx.config.state_table, str(intent["sweep_id"])
    infos = tuple(RingInfo(int(r["number"]), int(r["batches"]), int(r["instances"])) for r in intent["rings"])
    record = SweepRecord(
        sweep_id=sweep_id,
        started_at=str(intent["started_at"]),
        operation=str(intent["operation"]),
        reboot_option=str(intent["reboot_option"]),
        batches=(),  # staged by the plan; ring 0's are read when it is sent
        not_patchable=tuple(intent["not_patchable"]),
        not_patchable_count=int(intent["not_patchable_count"]),
        opted_out_count=int(intent["opted_out_count"]),
        rings=infos,
        ring_started_at=ctx.now.isoformat(),
        bad_ring_tags=tuple(intent.get("bad_ring_tags", ())),
        bad_ring_tag_count=int(intent.get("bad_ring_tag_count", 0)),
        superseded=str(intent.get("superseded", "")),
    )
    if frozen is not None and store.load_sweep(table, sweep_id) is None:
        logger.info("change freeze: no patch sweep", extra={**frozen, "sweep_id": sweep_id})
        return {"status": "frozen", "sweep_id": sweep_id, "freeze": frozen}
    if not store.create_sweep(table, record, ctx.now, staged=True):
        stored = store.load_sweep(table, sweep_id, with_batches=True)
        if stored is None or not ctx.resumed or stored.ring_index != 0:
            # Only the run that recorded this sweep's intent (or whoever resumes it) sends it.
            logger.info(
                "sweep already started by an earlier delivery of this event", extra={"sweep_id": sweep_id}
            )
            return {"status": "duplicate", "sweep_id": sweep_id}
        logger.info("resuming an interrupted sweep", extra={"sweep_id": sweep_id})
        record = _recover_sent(table, stored)
    else:
        staged = _STAGED.pop(str(intent["token"]), None)  # the plan of this invocation staged them
        if staged is None:  # a resumed intent: read them back (1 call per 100 commands)
            first = infos[0].batches if infos else 0  # no targets: only instances nobody can patch
            staged = store.ring_batches(table, sweep_id, 0, first)
        record = replace(record, batches=staged)
    return _send_ring(ctx, record, frozen, str(intent["token"]))


def _send_ring(
    ctx: Context[Config], record: SweepRecord, frozen: Mapping[str, Any] | None, token: str
) -> dict[str, Any]:
    """Send the current ring's batches not sent yet, then mark it sent; judge it at once when
    nothing is left running (every batch refused, or every command already final)."""
    config = ctx.config
    table, sweep_id = config.state_table, record.sweep_id
    total, ring = len(record.batches), record.ring
    for index, batch in record.batches_to_send():
        if frozen is not None:  # the freeze began while the ring was being sent: the rest waits
            store.record_send_error(table, sweep_id, index, FROZEN)
            continue
        if not batch:  # every one of its instances was left out when the ring started
            store.record_send_error(table, sweep_id, index, NONE_LEFT)
            continue
        if ctx.deadline.expired():
            raise SweepIncomplete(f"sweep {sweep_id}: time ran out before batch {index + 1}/{total}")
        request = service.CommandRequest(
            instance_ids=batch,
            operation=record.operation,
            reboot_option=record.reboot_option,
            snapshot_id=sweep_id,
            comment=(
                f"ops-autopilot {ctx.common.stack_name} patch sweep {sweep_id[:8]} "
                + (f"ring {ring.number} " if len(record.rings) > 1 else "")
                + f"{index + 1}/{total}"
            ),
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
            "patch command sent",
            extra={"command_id": command_id, "instances": len(batch), "batch": index, "ring": ring.number},
        )
        store.record_sent(table, sweep_id, index, command_id)
    final = replace(store.mark_sent(table, sweep_id), batches=record.batches)
    result: dict[str, Any] = {
        "status": "sent",
        "sweep_id": sweep_id,
        "ring": ring.number,
        "commands": len(final.sent),
        "refused_batches": len(final.send_errors),
        **({"freeze": dict(frozen)} if frozen else {}),
    }
    if final.complete:  # nothing left running: every batch refused, or all final
        digest = _ring_done(ctx, final, token)
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
    since = datetime.fromisoformat(record.ring_started_at or record.started_at) - COMMAND_LOOKUP_MARGIN
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
    """1 UpdateItem; the ring's last command's also claims (1 UpdateItem) and reads the results."""
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
    digest = _ring_done(ctx, record, str(intent["token"]))
    if digest is None:
        return {"status": "already-reported"}
    return {"status": "reported", "digest": digest}


def _act_ring(ctx: Context[Config], intent: Mapping[str, Any]) -> dict[str, Any]:
    """The next ring, once its predecessor passed and soaked: 1 GetCalendarState (when a
    calendar is configured), 1 UpdateItem (start it), ceil(B / 100) BatchGetItem, then as ring 0."""
    if ctx.dry_run:
        return {"status": "dry-run"}
    table, sweep_id, passed = ctx.config.state_table, str(intent["sweep_id"]), int(intent["ring_index"])
    record = store.load_sweep(table, sweep_id)
    if record is None:
        return {"status": "not-ours"}
    frozen = _closed_calendar(ctx)
    if record.ring_index == passed and record.status == "soaking":
        nxt = record.rings[passed + 1]
        if frozen is not None:  # the ring waits; the tick asks again every hour
            first = store.note_freeze(table, record)
            logger.info("change freeze: next ring waits", extra={**frozen, "ring": nxt.number})
            return {
                "status": "ring-frozen",
                "ring": nxt.number,
                "instances": nxt.instances,
                "freeze": frozen,
                "mail": first,
            }
        started = store.start_ring(table, record, ctx.now)
        if started is None:
            return {"status": "moved-on"}
        record = started
    elif not (record.ring_index == passed + 1 and record.status == "running" and ctx.resumed):
        return {"status": "moved-on"}  # another tick started it, or it is over
    if record.phase != "sending":
        return {"status": "moved-on"}
    record = store.with_ring_batches(table, record)  # the record as start_ring returned it, or as read
    if not record.sent and not record.send_errors:  # nothing sent yet: who is still to be patched
        record = _leave_out_gone(ctx, record)
    record = _recover_sent(table, record) if ctx.resumed else record
    logger.info("ring starts", extra={"sweep_id": sweep_id, "ring": record.ring.number})
    return _send_ring(ctx, record, frozen, str(intent["token"]))


def _leave_out_gone(ctx: Context[Config], record: SweepRecord) -> SweepRecord:
    """The ring's instances that stopped, were terminated or were opted out (``AutoPatch=false``:
    the previous ring's mail told their owners how) since the sweep was planned, days ago, are
    left out: sent, a terminated one would make SendCommand refuse its whole batch, and an
    opted-out one the IAM Deny. ceil(F / 1000) DescribeInstances for the F running instances."""
    patchable = {i.id for i in service.running_instances() if not decide.opted_out(i, ctx.config.opt_out_tag)}
    gone = frozenset(i for b in record.batches for i in b if i not in patchable)
    if gone:
        logger.info("left out of the ring: no longer running, or opted out", extra={"instances": len(gone)})
        store.leave_out(ctx.config.state_table, record, gone)
    return replace(record, left_out=record.left_out | gone)


def _act_time_out(ctx: Context[Config], intent: Mapping[str, Any]) -> dict[str, Any]:
    """A ring whose last status never came: closed (1 UpdateItem), its still-running instances
    reported as "no result", and judged like any other."""
    if ctx.dry_run:
        return {"status": "dry-run"}
    table, sweep_id, ring_index = ctx.config.state_table, str(intent["sweep_id"]), int(intent["ring_index"])
    record = store.load_sweep(table, sweep_id)
    if record is None or record.ring_index != ring_index or record.status != "running":
        return {"status": "moved-on"}
    closed = store.time_out_ring(table, record) or store.load_sweep(table, sweep_id)
    if closed is None or not closed.complete:
        return {"status": "moved-on"}
    logger.warning(
        "ring timed out: its last statuses never came",
        extra={"sweep_id": sweep_id, "ring": closed.ring.number, "commands": len(closed.timed_out)},
    )
    digest = _ring_done(ctx, closed, str(intent["token"]))
    if digest is None:
        return {"status": "already-reported"}
    return {"status": "timed-out", "digest": digest}


def _ring_done(ctx: Context[Config], record: SweepRecord, token: str) -> dict[str, Any] | None:
    """Claim the complete ring's digest (1 UpdateItem), read and classify its results, judge it
    (done, soak before the next ring, halt: 1 UpdateItem), or None when another run's intent
    holds the claim."""
    config = ctx.config
    table = config.state_table
    if not store.claim_digest(table, record.sweep_id, token, ctx.now):
        return None
    if not record.batches:
        record = store.with_ring_batches(table, record)
    results = service.gather_results(record)
    refused = [SendFailure(record.batches[i], code) for i, code in record.send_errors.items()]
    outcome = decide.classify(record.targeted, results.invocations, results.states, refused, results.tails)
    targeted = len(outcome.succeeded) + len(outcome.failed)
    verdict = decide.ring_verdict(
        len(outcome.succeeded), targeted, config.ring_success_percent, record.last_ring
    )
    soak_until = (ctx.now + config.ring_soak).isoformat() if verdict == "soaking" else ""
    summary = {
        "number": record.ring.number,
        "targeted": targeted,
        "succeeded": len(outcome.succeeded),
        "failed": len(outcome.failed),
    }
    store.finish_ring(table, record, token, verdict, soak_until, summary)
    notice: list[str] = []
    next_ring: list[str] = []
    if verdict == "soaking":
        nxt = record.rings[record.ring_index + 1]
        upcoming = store.ring_batches(table, record.sweep_id, record.ring_index + 1, nxt.batches)
        next_ring = [i for b in upcoming for i in b]
        notice = next_ring[:SHOWN]
    shown = outcome.shown() + notice
    instances = service.instances_by_id(shown) if shown else {}
    for f in outcome.failed:
        logger.info("patch failed", extra={"instance_id": f.instance_id, "reason": f.reason})
    logger.info(
        "ring finished",
        extra={"sweep_id": record.sweep_id, "ring": record.ring.number, "verdict": verdict, **summary},
    )
    digest = decide.summarise(record, outcome, instances, results.errors, ctx.common.owner_tag_key)
    digest.update(_owners(ctx, outcome, instances, next_ring))
    later = record.rings[record.ring_index + 1 :]
    digest["ring"] = {
        "number": record.ring.number,
        "position": record.ring_index + 1,
        "of": len(record.rings) or 1,
        "verdict": verdict,
        "percent_needed": config.ring_success_percent,
        "timed_out": len(record.timed_out),
        "earlier": [dict(r) for r in record.results],
        "soak_until": soak_until,
        "soak_hours": int(config.ring_soak.total_seconds() // 3600),
        "next": (
            {
                "number": later[0].number,
                "instances": later[0].instances,
                "listed": [
                    instances[i].entry(ctx.common.owner_tag_key)
                    if i in instances
                    else {"id": i, "name": "", "owner": ""}
                    for i in notice
                ],
            }
            if verdict == "soaking"
            else None
        ),
        "held_back": [r.as_json() for r in later] if verdict == "halted" else [],
    }
    digest["ring"]["left_out"] = len(record.left_out)
    if record.ring_index == 0 and record.superseded:
        digest["ring"]["superseded"] = record.superseded
    if record.ring_index > 0:  # the instances nobody can patch were listed in ring 0's mail
        digest["not_patchable"], digest["not_patchable_count"] = [], 0
    if record.ring_index == 0 and record.bad_ring_tag_count:  # said once, in the first ring's mail
        digest["bad_ring_tags"] = [dict(e) for e in record.bad_ring_tags]
        digest["bad_ring_tag_count"] = record.bad_ring_tag_count
    return digest


def _owners(
    ctx: Context[Config],
    outcome: decide.SweepOutcome,
    instances: Mapping[str, decide.Instance],
    upcoming: list[str],
) -> dict[str, Any]:
    """Who hears about the ring's failed and pending-reboot instances, and - warned before it
    starts - about the next ring's (``upcoming``), through autopilot.routing (the owner tag when
    it is an address, else the routing map by owner or team tag); each recipient's own instances
    for their digest (decide.owners_of). Nothing without such instances or routing; else 1
    ssm:GetParameter and ceil(N / 200) DescribeInstances for those the digest does not name."""
    ids = [f.instance_id for f in outcome.failed] + [s.instance_id for s in outcome.pending_reboot]
    routes = routing.load(ctx.common) if ids or upcoming else None
    if routes is None:
        return {}
    missing = [i for i in dict.fromkeys(ids + upcoming) if i not in instances]
    known = {**instances, **(service.instances_by_id(missing) if missing else {})}
    key, team = ctx.common.owner_tag_key, ctx.common.team_tag_key
    to = routes.recipients(
        (i, known[i].tags.get(key), known[i].tags.get(team))
        for i in dict.fromkeys(ids + upcoming)
        if i in known
    )

    def who(instance_id: str) -> dict[str, str]:
        found = known.get(instance_id)
        return found.entry(key) if found else {"id": instance_id, "name": "", "owner": ""}

    findings: dict[str, list[tuple[str, Callable[[], dict[str, Any]]]]] = {
        "failed": [
            (f.instance_id, partial(decide.failed_entry, f, who(f.instance_id))) for f in outcome.failed
        ],
        "pending_reboot": [
            (p.instance_id, partial(decide.pending_entry, p, who(p.instance_id)))
            for p in outcome.pending_reboot
        ],
        "next": [(i, partial(who, i)) for i in upcoming],
    }
    return decide.owners_of(findings, to, routing.ROUTED_BYTES)


def _act_announce(ctx: Context[Config], intent: Mapping[str, Any]) -> dict[str, Any]:
    """1 PutItem (conditional): the announcement is made once; a second tick's is not mailed."""
    if ctx.dry_run:
        return {"status": "dry-run"}
    first = store.announce(ctx.config.state_table, str(intent["at"]), ctx.now)
    return {"status": "announced" if first else "already-announced"}


ACTS: dict[str, Callable[[Context[Config], Mapping[str, Any]], dict[str, Any]]] = {
    "announce": _act_announce,
    "sweep": _act_sweep,
    "command": _act_command,
    "command-early": _act_command,
    "ring": _act_ring,
    "time-out": _act_time_out,
}
