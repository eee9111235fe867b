"""The two jobs: start a sweep (scheduled) and finish it (when its last command is final).

Decide with the pure modules (targeting, results, digest), act through ssm_io and state.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from autopilot.aws import error_code
from autopilot.events import ScheduledRun
from autopilot.runtime import Deadline
from patch_sweeper import digest as mails
from patch_sweeper import ssm_io, state
from patch_sweeper.config import PatchSweeperConfig
from patch_sweeper.results import Invocation, PatchState, SendFailure, classify
from patch_sweeper.targeting import decide_targets
from patch_sweeper.triggers import CommandFinished

logger = Logger(child=True)
MAX_OUTPUT_TAILS = 50  # GetCommandInvocation calls per digest (the mail lists 50 failures)


class SweepIncomplete(RuntimeError):
    """Time ran out before every batch was sent; the retried invocation resumes from the record."""


@dataclass
class Outcome:
    status: str
    sweep_id: str | None = None
    metrics: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"status": self.status, "sweep_id": self.sweep_id, **self.metrics, **self.details}


def sweep_id_for(config: PatchSweeperConfig, run: ScheduledRun) -> str:
    """Deterministic per scheduled event, so a retried or duplicated event is the same sweep.
    GUID-shaped: it is also AWS-RunPatchBaseline's SnapshotId, so every instance of the sweep
    gets the same baseline snapshot (the same approved patches)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ops-autopilot/{config.common.stack_name}/{run.id}"))


def start_sweep(config: PatchSweeperConfig, run: ScheduledRun, deadline: Deadline) -> Outcome:
    plan = decide_targets(ssm_io.running_instances(), ssm_io.managed_nodes(), opt_out_tag=config.opt_out_tag)
    for n in plan.not_patchable:
        logger.info("not patchable", extra={"instance_id": n.instance.id, "reason": n.reason})
    metrics = {
        "Checked": len(plan.targets),
        "Unmanaged": len(plan.not_patchable),
        "Skipped": len(plan.opted_out),
    }
    common = config.common
    if common.dry_run:
        digest, subject, summary, severity = mails.dry_run_digest(
            plan,
            stack=common.stack_name,
            region=common.region,
            operation=config.operation,
            reboot_option=config.reboot_option,
            opt_out_tag=config.opt_out_tag,
            log_group=config.output_log_group,
        )
        digest.send(common.topic_arn, subject, summary, severity)
        return Outcome("dry-run", None, metrics, {"batches": len(plan.batches())})

    sweep_id = sweep_id_for(config, run)
    record = state.SweepRecord(
        sweep_id=sweep_id,
        started_at=run.time.isoformat(),
        operation=config.operation,
        reboot_option=config.reboot_option,
        batches=tuple(tuple(b) for b in plan.batches()),
        not_patchable=tuple(mails.not_patchable_entries(plan)),
        not_patchable_count=len(plan.not_patchable),
        opted_out_count=len(plan.opted_out),
    )
    created = state.create_sweep(config.state_table, record)
    if created is None:
        stored = state.load_sweep(config.state_table, sweep_id)
        if stored is None or stored.phase == "sent":
            logger.info(
                "sweep already started by an earlier delivery of this event", extra={"sweep_id": sweep_id}
            )
            return Outcome("duplicate", sweep_id)
        logger.info("resuming an interrupted sweep", extra={"sweep_id": sweep_id})
        record = stored
        metrics["Checked"] = len(record.targeted)
    total = len(record.batches)
    for index, batch in state.batches_to_send(record):
        if deadline.expired():
            raise SweepIncomplete(f"sweep {sweep_id}: time ran out before batch {index + 1}/{total}")
        request = ssm_io.CommandRequest(
            instance_ids=batch,
            operation=record.operation,
            reboot_option=record.reboot_option,
            snapshot_id=sweep_id,
            comment=f"ops-autopilot {common.stack_name} patch sweep {sweep_id[:8]} {index + 1}/{total}",
            max_concurrency=config.max_concurrency,
            max_errors=config.max_errors,
            log_group=config.output_log_group,
        )
        try:
            command_id = ssm_io.send_patch_command(request)
        except ClientError as err:
            code = error_code(err)
            logger.warning(
                "SendCommand refused a batch", extra={"batch": index, "error": code, "sweep_id": sweep_id}
            )
            state.record_send_error(config.state_table, sweep_id, index, code)
            continue
        logger.info(
            "patch command sent", extra={"command_id": command_id, "instances": len(batch), "batch": index}
        )
        state.record_sent(config.state_table, sweep_id, index, command_id)
    final = state.mark_sent(config.state_table, sweep_id)
    details: dict[str, Any] = {"commands": len(final.sent), "refused_batches": len(final.send_errors)}
    if final.complete and state.claim_digest(config.state_table, sweep_id):
        # Nothing left running (no targets, every batch refused, or all already final).
        finished = finish_sweep(config, final)
        metrics.update(finished.metrics)
        details["digest"] = True
    return Outcome("sent", sweep_id, metrics, details)


def command_finished(config: PatchSweeperConfig, event: CommandFinished) -> Outcome:
    sweep_id = event.sweep_id
    record = state.command_finished(config.state_table, sweep_id, event.command_id) if sweep_id else None
    if sweep_id is None or record is None or event.command_id not in record.sent.values():
        # No SnapshotId, no such sweep here (another stack's, or expired), or not one of its commands.
        logger.info(
            "not a command of this stack's sweeps; ignored",
            extra={"command_id": event.command_id, "sweep_id": sweep_id},
        )
        return Outcome("not-ours", sweep_id)
    logger.info(
        "patch command final",
        extra={"command_id": event.command_id, "status": event.status, "still_running": len(record.pending)},
    )
    if not record.complete:
        return Outcome("waiting", sweep_id, details={"still_running": len(record.pending)})
    if not state.claim_digest(config.state_table, sweep_id):
        return Outcome("already-reported", sweep_id)
    return finish_sweep(config, record)


def finish_sweep(config: PatchSweeperConfig, record: state.SweepRecord) -> Outcome:
    """Read every result of the sweep, classify, mail the digest. Per-resource read errors are
    reported in the mail and counted as Failed; the rest of the digest still goes out."""
    errors: list[str] = []
    invocations: list[Invocation] = []
    for command_id in sorted(set(record.sent.values())):
        try:
            invocations.extend(ssm_io.invocations(command_id))
        except ClientError as err:
            errors.append(f"results of command {command_id}: {error_code(err)}")
    tails: dict[tuple[str, str], str] = {}
    for inv in [i for i in invocations if not i.succeeded][:MAX_OUTPUT_TAILS]:
        try:
            tails[(inv.command_id, inv.instance_id)] = ssm_io.output_tail(
                inv.command_id, inv.instance_id, inv.failed_plugin()
            )
        except ClientError as err:
            errors.append(f"output of {inv.instance_id}: {error_code(err)}")
    sent_ids = [i for idx, b in enumerate(record.batches) if idx in record.sent for i in b]
    states: list[PatchState] = []
    if sent_ids:
        try:
            states = ssm_io.patch_states(sent_ids)
        except ClientError as err:
            errors.append(f"patch compliance: {error_code(err)}")
    refused = [SendFailure(record.batches[i], code) for i, code in record.send_errors.items()]
    outcome = classify(record.targeted, invocations, states, refused, tails)
    shown = (
        [f.instance_id for f in outcome.failed[:50]]
        + [s.instance_id for s in outcome.pending_reboot[:50]]
        + list(outcome.patched_cleanly[:50])
    )
    instances = ssm_io.instances_by_id(shown) if shown else {}
    common = config.common
    digest, subject, summary, severity = mails.results_digest(
        outcome,
        stack=common.stack_name,
        region=common.region,
        operation=record.operation,
        reboot_option=record.reboot_option,
        not_patchable=record.not_patchable,
        not_patchable_count=record.not_patchable_count,
        opted_out_count=record.opted_out_count,
        instances=instances,
        opt_out_tag=config.opt_out_tag,
        log_group=config.output_log_group,
        collection_errors=errors,
    )
    digest.send(common.topic_arn, subject, summary, severity)
    for f in outcome.failed:
        logger.info("patch failed", extra={"instance_id": f.instance_id, "reason": f.reason})
    metrics = {
        "Changed": len(outcome.succeeded),
        "Failed": len(outcome.failed) + len(errors),
        "PendingReboot": len(outcome.pending_reboot),
    }
    return Outcome("reported", record.sweep_id, metrics, {"targeted": len(record.targeted)})
