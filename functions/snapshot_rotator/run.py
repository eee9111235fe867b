"""One run of snapshot_rotator, in the runner's two steps.

``plan`` gathers (service) and decides (decide), changing nothing: which volumes to snapshot
(the create jobs) and which snapshots are past retention (the deletions). The runner records
that intent, then calls ``act``, which creates first and deletes second. The order matters for
safety: only once the creations are done is it known which volumes got their new backup in
this run; a volume whose new snapshot failed (or was not attempted because time ran out) keeps
all its snapshots (``with_holds``), and the deleter checks safety rule 1 (``refusal``) before
every DeleteSnapshot.

The intent (plain JSON): ``now`` and ``retry_window_seconds`` (the plan's clock and retry
window), ``checked`` (opted-in volumes), ``jobs`` (the create calls), ``delete`` (the
deletions), ``deferred`` (work left for the next run because the intent must fit one outbox
item: deletions first, then create jobs from the end); and for the mail only: ``already_done``
(how many volumes have this period's snapshot), ``opted_out`` (volume -> instance),
``kept_past_retention`` (kept by a safety rule: AMI-used, pending) and ``kept`` (volume ->
reason -> count), each at most what the mail shows (50). The result refers to jobs and
deletions by their index in the intent.

``act`` is idempotent. When the runner finishes an interrupted run (``ctx.resumed``), it first
lists the images and this stack's snapshots again (2 calls): a volume that already has a
snapshot started in this period (since ``now`` less the retry window: the interrupted attempt
made it) is not snapshotted again, and each deletion is decided again on what exists now - a
snapshot already gone is not deleted twice, one that an AMI uses by now, or that is no longer
past retention, is kept. In dry run, ``act`` makes no mutating call at all.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from autopilot.aws import error_code, is_transient
from autopilot.notify import ITEMS_PER_SECTION
from autopilot.outbox import MAX_ITEM_BYTES
from autopilot.runner import Context, Counts, Plan, Run
from snapshot_rotator import service
from snapshot_rotator.config import Config
from snapshot_rotator.decide.retention import (
    MANAGED_BY,
    Decision,
    Reason,
    Snapshot,
    plan_retention,
    refusal,
    with_holds,
)
from snapshot_rotator.decide.selection import (
    CreateJob,
    loose_volume_instances,
    oldest_backup_first,
    plan_creation,
    recent_snapshots,
    remaining,
)
from snapshot_rotator.event import Trigger

logger = Logger(child=True)

# Limits of one volume: its pending-snapshot limit (5 for gp2/gp3/io1/io2/magnetic, 1 for
# st1/sc1) and its snapshot rate. That volume fails, the others go on. Every other transient
# code (throttling that outlived botocore's retries) stops starting new work for this run.
PER_VOLUME_LIMITS = frozenset({"ConcurrentSnapshotLimitExceeded", "SnapshotCreationPerVolumeRateExceeded"})

# DeleteSnapshot errors that mean "this snapshot is not ours to delete right now".
IN_USE = "InvalidSnapshot.InUse"
NOT_FOUND = "InvalidSnapshot.NotFound"
# Kept by a safety rule although the plan would otherwise let it go: listed in the mail.
KEPT_PAST_RETENTION = (Reason.AMI, Reason.PENDING)
# What the act-side metrics are called (emitted as zeros by every plan, so always present).
EXTRA_METRICS = ("SnapshotsCreated", "SnapshotsDeleted", "LeftForNextRun")
MESSAGE_CHARS = 500
MESSAGES = 50  # error messages kept per list (the mail shows 50 items a section); codes for all
MAIL_VOLUMES = ITEMS_PER_SECTION  # the mail's "Backups kept per volume" lists this many volumes
# The runner stores intent, result and mail in one outbox item (compressed): the intent gets
# half of it; the result (new snapshot ids, indices) and the mail (50 items a section) fit in
# the rest. About 3,000 volumes with 3 expired snapshots each fit; beyond, work is deferred.
INTENT_BUDGET = MAX_ITEM_BYTES // 2


def plan(run: Run[Config, Trigger]) -> Plan:
    """Gather and decide; nothing is changed. ``run.now`` is the clock's time."""
    stack, owner_key, now = run.common.stack_name, run.common.owner_tag_key, run.now
    ami_snapshots = service.ami_snapshot_ids()
    existing = list(service.managed_snapshots(stack, ami_snapshots))
    instances = list(service.backup_tagged_instances())
    volumes = list(service.backup_tagged_volumes())
    unknown = loose_volume_instances(instances, volumes, owner_key)
    creation = plan_creation(
        instances,
        volumes,
        recent=recent_snapshots(existing, stack_name=stack, now=now, window=run.config.retry_window),
        stack_name=stack,
        now=now,
        owner_key=owner_key,
        instance_owners=service.instance_owners(unknown, owner_key) if unknown else {},
    )
    decisions = plan_retention(existing, stack_name=stack, policy=run.config.policy, now=now)
    deletions = [d for d in decisions if d.delete]
    kept_past = [d for d in decisions if d.reason in KEPT_PAST_RETENTION]
    counts = Counts(
        checked=creation.volume_count, skipped=len(kept_past), extra=dict.fromkeys(EXTRA_METRICS, 0)
    )
    log: list[dict[str, Any]] = [
        *(
            {"decision": "snapshot", "kind": j.kind, "resource": j.resource_id, "volumes": list(j.volume_ids)}
            for j in creation.jobs
        ),
        *(
            {"decision": "already snapshotted this period", "volume": v, "snapshot": s}
            for v, s in creation.already_done.items()
        ),
        *(
            {"decision": "opted out on the volume", "volume": v, "instance": i}
            for v, i in creation.opted_out.items()
        ),
        *(
            {
                "decision": "delete" if d.delete else "keep",
                "snapshot": d.snapshot.id,
                "reason": d.reason.value,
            }
            for d in deletions + kept_past
        ),
    ]
    if not creation.jobs and not deletions:
        return Plan(intent=None, counts=counts, decisions=log)
    tag_keys = {MANAGED_BY, "Name", owner_key}
    intent = {
        "now": now.isoformat(),
        "retry_window_seconds": run.config.retry_window.total_seconds(),
        "checked": creation.volume_count,
        "jobs": [j.as_json() for j in oldest_backup_first(creation.jobs, existing, stack_name=stack)],
        "already_done": len(creation.already_done),
        "opted_out": dict(sorted(creation.opted_out.items())[:ITEMS_PER_SECTION]),
        "delete": [d.as_json(tag_keys) for d in deletions],
        "kept_past_retention": [d.as_json(tag_keys) for d in kept_past[:ITEMS_PER_SECTION]],
        "kept": {},
        "deferred": {"deletions": 0, "volumes": 0},
    }
    intent = _within_budget(intent)
    intent["kept"] = _kept(decisions, intent)
    return Plan(intent=intent, counts=counts, decisions=log)


def _kept(decisions: list[Decision], intent: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """Volume -> reason -> number of snapshots kept, for the volumes the mail lists (the first
    50 by id of every volume the run is about); deferred deletions count as DEFERRED."""
    planned = {str(d["id"]) for d in intent["delete"]}
    involved = {d.snapshot.volume_id for d in decisions}
    involved |= {v for job in intent["jobs"] for v in job["volume_ids"]}
    listed = set(sorted(involved)[:MAIL_VOLUMES])
    kept: dict[str, dict[str, int]] = {}
    for d in decisions:
        volume = d.snapshot.volume_id
        if volume not in listed or d.snapshot.id in planned:
            continue
        reason = d.reason.name if not d.delete else "DEFERRED"
        per_volume = kept.setdefault(volume, {})
        per_volume[reason] = per_volume.get(reason, 0) + 1
    return kept


def _packed_size(data: Mapping[str, Any]) -> int:
    """The size of ``data`` in the outbox (the same JSON and compression as autopilot.outbox)."""
    return len(zlib.compress(json.dumps(data, separators=(",", ":"), default=str).encode("utf-8"), 6))


def _within_budget(intent: dict[str, Any]) -> dict[str, Any]:
    """``intent`` cut to :data:`INTENT_BUDGET`: deletions first (an expired snapshot can wait for
    the next run), then create jobs from the end (the jobs come oldest backup first, so the
    volumes cut today are among the first tomorrow); what is cut is counted in ``deferred`` and
    mailed as left for the next run. A deferred job's volumes have no deletion in this intent."""
    size = _packed_size(intent)
    for key in ("delete", "jobs"):
        while size > INTENT_BUDGET and intent[key]:
            items = intent[key]
            keep = min(len(items) - 1, int(len(items) * INTENT_BUDGET / size * 0.9))
            cut = items[keep:]
            if key == "delete":
                intent["deferred"]["deletions"] += len(cut)
            else:
                intent["deferred"]["volumes"] += sum(len(j["volume_ids"]) for j in cut)
            intent[key] = items[:keep]
            size = _packed_size(intent)
    if intent["deferred"]["deletions"] or intent["deferred"]["volumes"]:
        logger.warning(
            "work deferred to the next run: the intent must fit one outbox item", extra=intent["deferred"]
        )
    return intent


def act(ctx: Context[Config], intent: Mapping[str, Any]) -> dict[str, Any]:
    """Create, then delete; plain JSON of what was done (see the module doc). Idempotent."""
    stack = ctx.common.stack_name
    planned_at = datetime.fromisoformat(str(intent["now"]))
    jobs = [CreateJob.from_json(j) for j in intent["jobs"]]
    deletions = [Decision.from_json(d) for d in intent["delete"]]
    result: dict[str, Any] = {
        "dry_run": ctx.dry_run,
        # {"job": index, "snapshots": {volume: new snapshot id, or None in dry run}, "earlier": bool}
        "created": [],
        "create_failures": [],  # {"job", "volumes", "code", "message"}
        "jobs_left": [],  # {"job", "volumes"}
        # the rest: indices into intent["delete"]
        "deleted": [],
        "held": [],  # kept: their volume got no new snapshot in this run
        "gone": [],  # already deleted (by the interrupted attempt, or by hand)
        "delete_skipped": [],  # {"index", "why"}
        "delete_failures": [],  # {"index", "code", "message"}
        "deletes_left": [],
    }
    current = None
    if ctx.resumed:  # finishing an interrupted run: what did it do already?
        current = list(service.managed_snapshots(stack, service.ami_snapshot_ids()))
    _create_all(ctx, jobs, intent, current, result)
    covered = {volume for entry in result["created"] for volume in entry["snapshots"]}
    held = {v for job in jobs for v in job.volume_ids} - covered
    _delete_all(ctx, with_holds(deletions, held), planned_at, current, result)
    return result


def _create_all(
    ctx: Context[Config],
    jobs: list[CreateJob],
    intent: Mapping[str, Any],
    current: list[Snapshot] | None,
    result: dict[str, Any],
) -> None:
    work: list[tuple[int, CreateJob]] = []
    recent: dict[str, str] = {}
    if current is not None:
        recent = recent_snapshots(
            current,
            stack_name=ctx.common.stack_name,
            now=datetime.fromisoformat(str(intent["now"])),
            window=timedelta(seconds=float(intent["retry_window_seconds"])),
        )
    for index, job in enumerate(jobs):
        done = {v: recent[v] for v in job.volume_ids if v in recent}
        if done:
            logger.info("already snapshotted by the interrupted attempt", extra={"snapshots": done})
            result["created"].append({"job": index, "snapshots": done, "earlier": True})
        todo = remaining(job, done)
        if todo is not None:
            work.append((index, todo))
    for n, (index, job) in enumerate(work):
        if ctx.deadline.expired():
            result["jobs_left"] = [{"job": i, "volumes": list(j.volume_ids)} for i, j in work[n:]]
            logger.warning("time is up: snapshots left for the next run", extra={"jobs_left": len(work) - n})
            return
        if ctx.dry_run:
            result["created"].append({"job": index, "snapshots": dict.fromkeys(job.volume_ids)})
            logger.info("would create snapshot", extra={"job": job.resource_id, "volumes": job.volume_ids})
            continue
        try:
            snaps = service.create(job)
        except ClientError as err:
            code = error_code(err)
            result["create_failures"].append(
                {"job": index, "volumes": list(job.volume_ids), **_error(err, result["create_failures"])}
            )
            logger.error(
                "snapshot failed",
                extra={"resource": job.resource_id, "volumes": job.volume_ids, "code": code},
            )
            if is_transient(err) and code not in PER_VOLUME_LIMITS:
                # Throttling that outlived botocore's retries: more calls now would fail the
                # same way. The rest waits for the next run.
                result["jobs_left"] = [{"job": i, "volumes": list(j.volume_ids)} for i, j in work[n + 1 :]]
                return
            continue
        made = {s.volume_id: s.id for s in snaps}
        result["created"].append({"job": index, "snapshots": made})
        logger.info("created snapshot", extra={"resource": job.resource_id, "snapshots": made})


def _delete_all(
    ctx: Context[Config],
    decisions: list[Decision],
    planned_at: datetime,
    current: list[Snapshot] | None,
    result: dict[str, Any],
) -> None:
    stack = ctx.common.stack_name
    result["held"] = [n for n, d in enumerate(decisions) if d.reason is Reason.HELD]
    todo = [(n, d) for n, d in enumerate(decisions) if d.reason is not Reason.HELD]
    # Finishing an interrupted run: decide each deletion again on what exists now.
    live = None
    if current is not None:
        live = {
            d.snapshot.id: d
            for d in plan_retention(current, stack_name=stack, policy=ctx.config.policy, now=planned_at)
        }
    for position, (index, decision) in enumerate(todo):
        snap = decision.snapshot
        refused = refusal(decision, stack)
        if refused:  # the plan never produces this; refuse loudly rather than lose a backup
            raise RuntimeError(f"refusing to delete {snap.id}: {refused}")
        if live is not None:
            now_decided = live.get(snap.id)
            if now_decided is None:
                result["gone"].append(index)
                continue
            why = refusal(now_decided, stack)
            if why:
                result["delete_skipped"].append({"index": index, "why": why})
                continue
        if ctx.deadline.expired():
            result["deletes_left"] = [i for i, _ in todo[position:]]
            logger.warning(
                "time is up: deletions left for the next run", extra={"left": len(todo) - position}
            )
            return
        if ctx.dry_run:
            result["deleted"].append(index)
            continue
        try:
            service.delete(snap.id)
        except ClientError as err:
            code = error_code(err)
            if code == IN_USE:
                # An AMI registered after we listed them: the safety rule holds, skip it.
                result["delete_skipped"].append(
                    {"index": index, "why": "used by an AMI registered during this run"}
                )
                continue
            if code == NOT_FOUND:
                logger.info("snapshot already gone", extra={"snapshot": snap.id})
                result["gone"].append(index)
                continue
            result["delete_failures"].append({"index": index, **_error(err, result["delete_failures"])})
            logger.error("delete failed", extra={"snapshot": snap.id, "code": code})
            if is_transient(err):
                result["deletes_left"] = [i for i, _ in todo[position + 1 :]]
                return
            continue
        result["deleted"].append(index)
        logger.info(
            "deleted snapshot",
            extra={"snapshot": snap.id, "volume": snap.volume_id, "started": snap.start_time.isoformat()},
        )


def _error(err: ClientError, failures: list[Any]) -> dict[str, str]:
    """A failure's code, and its message for the first :data:`MESSAGES` of a list (a run where
    every call fails, e.g. a broken policy, must still fit its result in the outbox)."""
    error = {"code": error_code(err)}
    if len(failures) < MESSAGES:
        error["message"] = str(err)[:MESSAGE_CHARS]
    return error
