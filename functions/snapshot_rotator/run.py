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

import hashlib
import json
import zlib
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from autopilot import pacing
from autopilot.aws import error_code, is_transient
from autopilot.notify import ITEMS_PER_SECTION
from autopilot.outbox import MAX_ITEM_BYTES
from autopilot.runner import Context, Counts, Plan, Run
from snapshot_rotator import service, store
from snapshot_rotator.config import Config
from snapshot_rotator.decide.copies import CopyJob, plan_copies
from snapshot_rotator.decide.retention import (
    COMPLETED,
    ERROR,
    MANAGED_BY,
    PENDING,
    Decision,
    Reason,
    Snapshot,
    plan_retention,
    refusal,
    with_holds,
)
from snapshot_rotator.decide.selection import (
    OPT_IN_TAG,
    CreateJob,
    CreationPlan,
    loose_volume_instances,
    oldest_backup_first,
    plan_creation,
    recent_snapshots,
    remaining,
)
from snapshot_rotator.event import Trigger
from snapshot_rotator.store import Note, Record

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
EXTRA_METRICS = ("SnapshotsCreated", "SnapshotsDeleted", "SnapshotsCopied", "LeftForNextRun")
MESSAGE_CHARS = 500
MESSAGES = 50  # error messages kept per list (the mail shows 50 items a section); codes for all
MAIL_VOLUMES = ITEMS_PER_SECTION  # the mail's "Backups kept per volume" lists this many volumes
# The runner stores intent, result and mail in one outbox item (compressed): the intent gets
# half of it; the result (new snapshot ids, indices) and the mail (50 items a section) fit in
# the rest. About 3,000 volumes with 3 expired snapshots each fit; beyond, work is deferred.
INTENT_BUDGET = MAX_ITEM_BYTES // 2
MAX_NOTED = 1000  # failed backups, stale, ended, unknown: at most this many of each a run
# Each of these EC2 APIs has its own bucket (autopilot.pacing): the calls go at its refill rate.
PACED = {op: pacing.EC2_MUTATING for op in ("CreateSnapshot", "CreateSnapshots", "DeleteSnapshot")}


def plan(run: Run[Config, Trigger]) -> Plan:
    """Gather and decide; nothing is changed. ``run.now`` is the clock's time."""
    stack, owner_key, now, config = run.common.stack_name, run.common.owner_tag_key, run.now, run.config
    contents = store.read(config.ledger_table)
    notes = contents.notes
    records = {i: r for i, r in contents.records.items() if r.region == run.common.region}
    ami_snapshots = service.ami_snapshot_ids()
    existing = list(service.managed_snapshots(stack, ami_snapshots, records))
    missing = set(records) - {s.id for s in existing}
    if missing:  # recorded, but not tagged any more (or gone)
        existing += service.recorded_snapshots(missing, ami_snapshots, records)
    gone = sorted(missing - {s.id for s in existing})
    adopted: list[Record] = []
    began = contents.since
    if began is None:  # the ledger's first run: what the stack made before it kept one
        created = store.created_at(config.ledger_table)
        existing, adopted = _adopt_from_before(run, existing, created)
        began = created.isoformat()
        records = {**records, **{r.snapshot_id: r for r in adopted}}
    remote: list[Snapshot] = []  # the disaster-recovery copies, in their regions
    for destination in config.copy_targets:
        there = {i: r for i, r in contents.records.items() if r.region == destination}
        remote += service.managed_snapshots(stack, service.ami_snapshot_ids(destination), there, destination)
    instances = list(service.backup_tagged_instances())
    volumes = list(service.backup_tagged_volumes())
    names = list(config.named)
    unknown = loose_volume_instances(instances, volumes, owner_key, names)
    # The run's token: in every new snapshot's Description, to adopt what a killed attempt made.
    token = hashlib.sha256(f"{run.run_id}|{now.isoformat()}".encode()).hexdigest()[:16]
    creation = plan_creation(
        instances,
        volumes,
        recent=recent_snapshots(existing, stack_name=stack, now=now, window=config.retry_window),
        stack_name=stack,
        now=now,
        owner_key=owner_key,
        instance_owners=service.instance_owners(unknown, owner_key) if unknown else {},
        policies=names,
        token=token,
    )
    copies = plan_copies(
        existing,
        remote,
        {r.source for r in contents.records.values() if r.source},
        policies=config.named,
        stack_name=stack,
        region=run.common.region,
        token=token,
        owner_key=owner_key,
    )
    decisions = plan_retention(
        existing + remote,
        stack_name=stack,
        policy=config.policy,
        policies=config.retention,
        now=now,
        fresh_since=now - config.retry_window,
    )
    deletions = [d for d in decisions if d.delete]
    kept_past = [d for d in decisions if d.reason in KEPT_PAST_RETENTION]
    watch = _watch(run, existing + remote, contents.records, notes, creation)
    counts = Counts(
        checked=creation.volume_count,
        skipped=len(kept_past),
        extra={**dict.fromkeys(EXTRA_METRICS, 0), "StaleBackups": watch["stale_count"]},
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
            {"decision": "not backed up: Backup names no policy of this stack", "resource": r, "value": v}
            for r, v in creation.unknown.items()
        ),
        *(
            {
                "decision": "delete" if d.delete else "keep",
                "snapshot": d.snapshot.id,
                "reason": d.reason.value,
            }
            for d in deletions + kept_past
        ),
        *(
            {"decision": "tagged ManagedBy, not in the ledger: never touched", "snapshot": d.snapshot.id}
            for d in decisions
            if d.reason is Reason.UNMANAGED
        ),
        *({"decision": "backup failed (error)", "snapshot": f["snapshot"]["id"]} for f in watch["failed"]),
        *({"decision": "backups stale", "volume": v} for v in watch["stale"]),
        *({"decision": "backups ended", "volume": v, "why": why} for v, why in watch["ended"].items()),
    ]
    has_news = watch["failed"] or watch["notes"] or gone or contents.since is None
    if not creation.jobs and not deletions and not copies.jobs and not has_news:
        return Plan(intent=None, counts=counts, decisions=log)
    tag_keys = {MANAGED_BY, "Name", owner_key}
    intent = {
        "now": now.isoformat(),
        "run": token,
        "retry_window_seconds": config.retry_window.total_seconds(),
        "checked": creation.volume_count,
        "jobs": [j.as_json() for j in oldest_backup_first(creation.jobs, existing, stack_name=stack)],
        "already_done": len(creation.already_done),
        "opted_out": dict(sorted(creation.opted_out.items())[:ITEMS_PER_SECTION]),
        "delete": [d.as_json(tag_keys) for d in deletions],
        "kept_past_retention": [d.as_json(tag_keys) for d in kept_past[:ITEMS_PER_SECTION]],
        "kept": {},
        "deferred": {"deletions": 0, "volumes": 0},
        "forget": gone[:MAX_NOTED],
        "since": began,
        "copies": [j.as_json() for j in copies.jobs],
        "copies_waiting": copies.waiting,
        "adopt": [r.as_json() for r in adopted] if contents.since is None else None,
        **watch,
    }
    intent = _within_budget(intent)
    intent["kept"] = _kept(decisions, intent)
    return Plan(intent=intent, counts=counts, decisions=log)


def _adopt_from_before(
    run: Run[Config, Trigger], existing: list[Snapshot], since: datetime
) -> tuple[list[Snapshot], list[Record]]:
    """The snapshots this stack made before it kept a ledger (an upgrade): tagged, with the
    Description it always wrote, and started before the ledger table existed. EC2 sets a
    snapshot's start time; nobody can create one in the past, so nothing made after the upgrade
    is adopted this way. ``existing`` with those marked as recorded, and their new records."""
    prefix = f"{run.common.stack_name}: backup of "
    adopted: list[Record] = []
    marked: list[Snapshot] = []
    for snap in existing:
        if (
            not snap.recorded
            and snap.tags.get(MANAGED_BY) == run.common.stack_name
            and snap.description.startswith(prefix)
            and snap.start_time < since
        ):
            adopted.append(
                Record(snap.id, snap.volume_id, run.common.region, "default", snap.start_time.isoformat(), "")
            )
            marked.append(replace(snap, recorded=True))
        else:
            marked.append(snap)
    if adopted:
        logger.info("adopting the snapshots made before the ledger", extra={"count": len(adopted)})
    return marked, adopted


def _watch(
    run: Run[Config, Trigger],
    existing: list[Snapshot],
    records: Mapping[str, Record],
    notes: Mapping[str, Note],
    creation: CreationPlan,
) -> dict[str, Any]:
    """What the run must tell about the backups themselves, each said once (the notes say what
    was said): snapshots of ours that ended in ``error`` (failed backups), opted-in volumes
    whose newest completed backup is older than ``stale_after`` (stale), volumes with backups
    that are no longer opted in or no longer exist (ended), and Backup values that name no
    policy of this stack (unknown). ``notes``: the notes to write; at most :data:`MAX_NOTED`
    of each kind a run (the rest the next runs), the mail shows 50."""
    now = run.now
    tag_keys = {MANAGED_BY, "Name", run.common.owner_tag_key}
    failed = [
        {"snapshot": s.as_json(tag_keys), "record": records[s.id].as_json()}
        for s in sorted(existing, key=lambda s: s.id)
        if s.recorded and s.state == ERROR and not s.failed_reported
    ][:MAX_NOTED]
    backed = {v for job in creation.jobs for v in job.volume_ids} | set(creation.already_done)
    ours = [s for s in existing if s.recorded and not s.region]  # backups here, not their copies
    newest: dict[str, datetime] = {}
    history: dict[str, int] = {}
    never = datetime.min.replace(tzinfo=UTC)
    for snap in ours:
        history[snap.volume_id] = history.get(snap.volume_id, 0) + 1
        if snap.state == COMPLETED and snap.start_time > newest.get(snap.volume_id, never):
            newest[snap.volume_id] = snap.start_time
    cutoff = now - run.config.stale_after
    stale_now = {v for v in backed if v in history and (v not in newest or newest[v] < cutoff)}
    blank = Note("")
    changed: dict[str, Note] = {}

    def note(resource: str) -> Note:
        return changed.get(resource) or notes.get(resource) or replace(blank, resource_id=resource)

    stale = {
        v: newest[v].isoformat() if v in newest else "" for v in sorted(stale_now) if not note(v).stale_since
    }
    stale = dict(list(stale.items())[:MAX_NOTED])
    for v in stale:
        changed[v] = replace(note(v), stale_since=now.isoformat())
    fresh = sorted(v for v, n in notes.items() if n.stale_since and v not in stale_now)[:MAX_NOTED]
    for v in fresh:
        changed[v] = replace(note(v), stale_since="")
    candidates = sorted(v for v in history if v not in backed and not note(v).ended)[:MAX_NOTED]
    alive = service.existing_volumes(candidates) if candidates else set()
    ended: dict[str, str] = {}
    for v in candidates:
        if v in creation.opted_out:
            why = f"opted out on the volume ({OPT_IN_TAG}=false, no, never or off)"
        elif v in creation.unknown:
            why = f"{OPT_IN_TAG}={creation.unknown[v]} names no policy of this stack"
        elif v in alive:
            why = f"neither it nor its instance is tagged {OPT_IN_TAG} any more"
        else:
            why = "the volume no longer exists"
        ended[v] = why
        changed[v] = replace(note(v), ended=now.isoformat())
    for v in sorted(v for v in backed if note(v).ended)[:MAX_NOTED]:
        changed[v] = replace(note(v), ended="")  # opted in again
    unknown = {r: value for r, value in sorted(creation.unknown.items()) if note(r).unknown != value}
    unknown = dict(list(unknown.items())[:MAX_NOTED])
    for r, value in unknown.items():
        changed[r] = replace(note(r), unknown=value)
    for r in sorted(r for r, n in notes.items() if n.unknown and r not in creation.unknown)[:MAX_NOTED]:
        changed[r] = replace(note(r), unknown="")
    return {
        "failed": failed,
        "stale": stale,
        "stale_count": len(stale_now),
        "fresh_again": fresh,
        "ended": ended,
        "ended_kept": {v: history[v] for v in ended},
        "unknown": unknown,
        "notes": [n.as_json() for n in changed.values()],
    }


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
    """Create, then delete, then write down what was said; plain JSON of what was done (see the
    module doc). Idempotent."""
    stack, table = ctx.common.stack_name, ctx.config.ledger_table
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
    copy_jobs = [CopyJob.from_json(j) for j in intent.get("copies", [])]
    result.update({"copied": [], "copy_failures": [], "copies_left": []})  # copies: indices, as jobs
    current = None
    if ctx.resumed:  # finishing an interrupted run: what did it do already?
        everything = store.read(table).records
        records = {i: r for i, r in everything.items() if r.region == ctx.common.region}
        current = list(service.managed_snapshots(stack, service.ami_snapshot_ids(), records))
        for destination in sorted(
            {j.region for j in copy_jobs} | {d.snapshot.region for d in deletions} - {""}
        ):
            there = {i: r for i, r in everything.items() if r.region == destination}
            current += service.managed_snapshots(
                stack, service.ami_snapshot_ids(destination), there, destination
            )
        copied = {r.source for r in everything.values() if r.source}
        copy_jobs = [j if j.source_id not in copied else replace(j, source_id="") for j in copy_jobs]
    if not ctx.dry_run and intent.get("adopt") is not None:  # the ledger's first run: before acting
        store.put(table, [Record.from_json(r) for r in intent["adopt"]], since=str(intent["since"]))
    book = _Book(table, dry_run=ctx.dry_run)
    regions = {j.region for j in copy_jobs} | {d.snapshot.region for d in deletions} - {""}
    pacer = pacing.Pacer(
        {
            **PACED,
            **{
                f"{op}@{r}": pacing.EC2_MUTATING for r in regions for op in ("CopySnapshot", "DeleteSnapshot")
            },
        }
    )
    try:
        _create_all(ctx, jobs, intent, current, result, book, pacer)
        _copy_all(ctx, copy_jobs, intent, current, result, book, pacer)
    finally:
        book.flush()
    covered = {volume for entry in result["created"] for volume in entry["snapshots"]}
    held = {v for job in jobs for v in job.volume_ids} - covered
    try:
        fresh_since = planned_at - timedelta(seconds=float(intent["retry_window_seconds"]))
        _delete_all(ctx, with_holds(deletions, held), planned_at, fresh_since, current, result, book, pacer)
    finally:
        book.flush()
    if not ctx.dry_run:  # what this run's mail says, so that the next ones do not say it again
        store.put(
            table,
            [
                *(
                    replace(Record.from_json(f["record"]), failed_reported=True)
                    for f in intent.get("failed", [])
                ),
                *(Note.from_json(n) for n in intent.get("notes", [])),
            ],
        )
        store.forget(table, intent.get("forget", []))
    result["paced_seconds"] = round(pacer.waited, 1)
    return result


class _Book:
    """The ledger writes of one act, 25 at a time: a new snapshot is recorded right after EC2
    returned its id, a deleted one forgotten right after DeleteSnapshot (or NotFound)."""

    def __init__(self, table: str, *, dry_run: bool) -> None:
        self.table, self.dry_run = table, dry_run
        self.new: list[Record] = []
        self.gone: list[str] = []

    def record(self, records: list[Record]) -> None:
        self.new += records
        if len(self.new) >= store.BATCH:
            self.flush()

    def forget(self, snapshot_id: str) -> None:
        self.gone.append(snapshot_id)
        if len(self.gone) >= store.BATCH:
            self.flush()

    def flush(self) -> None:
        if self.dry_run:
            self.new, self.gone = [], []
            return
        if self.new:
            store.put(self.table, self.new)
            self.new = []
        if self.gone:
            store.forget(self.table, self.gone)
            self.gone = []


def _adopt(
    ctx: Context[Config],
    jobs: list[CreateJob],
    intent: Mapping[str, Any],
    current: list[Snapshot],
    recent: dict[str, str],
    book: _Book,
) -> dict[str, str]:
    """The snapshots the interrupted attempt created but did not record: for each volume of a
    job without a recorded snapshot of this period, the one snapshot of that volume that carries
    the stack's tag and this run's Description (with its token), pending or completed. Several
    such (someone copied the description): none is adopted, the volume counts as done, and
    they are left alone. Volume -> adopted (or first found) snapshot id."""
    stack = ctx.common.stack_name
    found: dict[str, str] = {}
    for job in jobs:
        for volume in job.volume_ids:
            if volume in recent:
                continue
            candidates = [
                s
                for s in current
                if not s.recorded
                and s.volume_id == volume
                and s.description == job.description
                and s.tags.get(MANAGED_BY) == stack
                and s.state in (PENDING, COMPLETED)
            ]
            if len(candidates) == 1:
                snap = candidates[0]
                book.record([_record(ctx, intent, job, volume, snap.id)])
                logger.info("adopted the interrupted attempt's snapshot", extra={"snapshot": snap.id})
                found[volume] = snap.id
            elif candidates:
                logger.warning(
                    "several snapshots carry this run's description: none adopted, none deleted",
                    extra={"volume": volume, "snapshots": sorted(s.id for s in candidates)},
                )
                found[volume] = sorted(s.id for s in candidates)[0]
    return found


def _record(
    ctx: Context[Config], intent: Mapping[str, Any], job: CreateJob, volume: str, snap_id: str
) -> Record:
    return Record(
        snapshot_id=snap_id,
        volume_id=volume,
        region=ctx.common.region,
        policy=job.policy(volume),
        created=str(intent["now"]),
        run=str(intent.get("run", "")),
    )


# CopySnapshot errors that mean "the destination has its maximum of copies in flight".
COPY_LIMIT_CODES = frozenset({"ResourceLimitExceeded", "ConcurrentSnapshotLimitExceeded"})


def _copy_all(
    ctx: Context[Config],
    jobs: list[CopyJob],
    intent: Mapping[str, Any],
    current: list[Snapshot] | None,
    result: dict[str, Any],
    book: _Book,
    pacer: pacing.Pacer,
) -> None:
    """Start the disaster-recovery copies, each recorded right after EC2 returned its id. A job
    whose source has a recorded copy by now (the interrupted attempt made it) has an empty
    ``source_id`` and is skipped; one the interrupted attempt made but did not record is adopted
    by this run's Description, if it is the only one."""
    for n, job in enumerate(jobs):
        if not job.source_id:
            result["copied"].append({"job": n, "snapshot": None, "earlier": True})
            continue
        if current is not None:
            found = [
                s
                for s in current
                if s.region == job.region and not s.recorded and s.description == job.description
            ]
            if len(found) == 1:
                book.record([_copy_record(intent, job, found[0].id)])
                result["copied"].append({"job": n, "snapshot": found[0].id, "earlier": True})
                continue
        operation = f"CopySnapshot@{job.region}"
        if not _may_call(ctx, pacer, operation):
            result["copies_left"] = list(range(n, len(jobs)))
            logger.warning("time is up: copies left for the next run", extra={"left": len(jobs) - n})
            return
        if ctx.dry_run:
            result["copied"].append({"job": n, "snapshot": None})
            continue
        try:
            copy = service.copy(job, ctx.common.region)
        except ClientError as err:
            code = error_code(err)
            result["copy_failures"].append({"job": n, **_error(err, result["copy_failures"])})
            logger.error("copy failed", extra={"source": job.source_id, "region": job.region, "code": code})
            if code in COPY_LIMIT_CODES or is_transient(err):
                result["copies_left"] = list(range(n + 1, len(jobs)))
                return
            continue
        book.record([_copy_record(intent, job, copy.id)])
        result["copied"].append({"job": n, "snapshot": copy.id})
        logger.info("copied snapshot", extra={"source": job.source_id, "copy": copy.id, "region": job.region})


def _may_call(ctx: Context[Config], pacer: pacing.Pacer, operation: str) -> bool:
    """Whether the next call may be made: time is left, and (except in dry run, which makes no
    call) the API's token came within it."""
    return not ctx.deadline.expired() and (ctx.dry_run or pacer.take(operation, ctx.deadline.remaining()))


def _copy_record(intent: Mapping[str, Any], job: CopyJob, copy_id: str) -> Record:
    return Record(
        snapshot_id=copy_id,
        volume_id=job.volume_id,
        region=job.region,
        policy=job.policy,
        created=str(intent["now"]),
        run=str(intent.get("run", "")),
        source=job.source_id,
    )


def _create_all(
    ctx: Context[Config],
    jobs: list[CreateJob],
    intent: Mapping[str, Any],
    current: list[Snapshot] | None,
    result: dict[str, Any],
    book: _Book,
    pacer: pacing.Pacer,
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
        recent.update(_adopt(ctx, jobs, intent, current, recent, book))
    for index, job in enumerate(jobs):
        done = {v: recent[v] for v in job.volume_ids if v in recent}
        if done:
            logger.info("already snapshotted by the interrupted attempt", extra={"snapshots": done})
            result["created"].append({"job": index, "snapshots": done, "earlier": True})
        todo = remaining(job, done)
        if todo is not None:
            work.append((index, todo))
    for n, (index, job) in enumerate(work):
        operation = "CreateSnapshots" if job.kind == "instance" else "CreateSnapshot"
        if not _may_call(ctx, pacer, operation):
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
        book.record([_record(ctx, intent, job, v, s) for v, s in made.items()])
        result["created"].append({"job": index, "snapshots": made})
        logger.info("created snapshot", extra={"resource": job.resource_id, "snapshots": made})


def _delete_all(
    ctx: Context[Config],
    decisions: list[Decision],
    planned_at: datetime,
    fresh_since: datetime,
    current: list[Snapshot] | None,
    result: dict[str, Any],
    book: _Book,
    pacer: pacing.Pacer,
) -> None:
    stack = ctx.common.stack_name
    result["held"] = [n for n, d in enumerate(decisions) if d.reason is Reason.HELD]
    todo = [(n, d) for n, d in enumerate(decisions) if d.reason is not Reason.HELD]
    # Finishing an interrupted run: decide each deletion again on what exists now.
    live = None
    if current is not None:
        live = {
            d.snapshot.id: d
            for d in plan_retention(
                current,
                stack_name=stack,
                policy=ctx.config.policy,
                policies=ctx.config.retention,
                now=planned_at,
                fresh_since=fresh_since,
            )
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
        operation = f"DeleteSnapshot@{snap.region}" if snap.region else "DeleteSnapshot"
        if not _may_call(ctx, pacer, operation):
            result["deletes_left"] = [i for i, _ in todo[position:]]
            logger.warning(
                "time is up: deletions left for the next run", extra={"left": len(todo) - position}
            )
            return
        if ctx.dry_run:
            result["deleted"].append(index)
            continue
        try:
            service.delete(snap.id, snap.region)
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
                book.forget(snap.id)
                continue
            result["delete_failures"].append({"index": index, **_error(err, result["delete_failures"])})
            logger.error("delete failed", extra={"snapshot": snap.id, "code": code})
            if is_transient(err):
                result["deletes_left"] = [i for i, _ in todo[position + 1 :]]
                return
            continue
        result["deleted"].append(index)
        book.forget(snap.id)
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
