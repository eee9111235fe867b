"""One run of snapshot_rotator, in the runner's two steps.

``plan`` gathers (service) and decides (decide), changing nothing: which volumes to snapshot
(the create jobs) and which snapshots are past retention (the deletions). The runner records
that intent, then calls ``act``. A volume's deletions are made only after this act made its
new snapshot: a volume whose new snapshot failed (or was not attempted because time ran out)
keeps all its snapshots (HELD), and the deleter checks safety rule 1 (``refusal``) before every
DeleteSnapshot. Each EC2 API has its own token bucket, so the deletions that may be made go
between the creates whenever DeleteSnapshot has a token, and the rest after them (``_Deleter``).

A plan larger than one invocation can do is cut into rounds (``_rounds``): the first is this
run's intent, the others the runner queues (``Plan.later``) and later invocations take without
planning again; what a round's time did not reach is its ``rest``.

The intent (plain JSON): ``now`` and ``retry_window_seconds`` (the plan's clock and retry
window), ``checked`` (opted-in volumes), ``jobs`` (the create calls), ``delete`` (the
deletions), ``copies``, ``part`` (0 for the first round), ``later`` (what is queued behind the
first round, for its mail), ``deferred`` (left for the next run: more than the rounds can do);
and for the mail only: ``already_done`` (how many volumes have this period's snapshot),
``opted_out`` (volume -> instance), ``kept_past_retention`` (kept by a safety rule: AMI-used,
pending) and ``kept`` (volume -> reason -> count), each at most what the mail shows (50). The
result refers to jobs and deletions by their index in the intent.

``act`` is idempotent. When the runner finishes an interrupted run (``ctx.resumed``), it first
lists the images and this stack's snapshots again (2 calls): a volume that already has a
snapshot started in this period (since ``now`` less the retry window: the interrupted attempt
made it) is not snapshotted again, and each deletion is decided again on what exists now - a
snapshot already gone is not deleted twice, one that an AMI uses by now, or that is no longer
past retention, is kept. In dry run, ``act`` makes no mutating call at all.
"""

from __future__ import annotations

import copy
import hashlib
import json
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from autopilot import freeze, pacing, routing
from autopilot.aws import error_code, is_transient
from autopilot.events import MAX_ROUNDS
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
    Instance,
    Volume,
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

# What became of one deletion attempt (_Deleter).
DONE, NOT_MADE, STOP = "done", "not made", "stop"
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
HEAD_ROOM = 256  # bytes the first intent keeps for the counts of what is queued behind it
NOTHING_LATER = {"rounds": 0, "volumes": 0, "deletions": 0, "copies": 0}
# What a later round's intent carries instead of the first round's one-time parts: the mail says
# them once, the notes and records are written once, the counts are the first round's.
ROUND_BLANK: dict[str, Any] = {
    "checked": 0,
    "already_done": 0,
    "opted_out": {},
    "kept_past_retention": [],
    "kept": {},
    "deferred": {"deletions": 0, "volumes": 0, "copies": 0},
    "later": NOTHING_LATER,
    "forget": [],
    "copies_waiting": {},
    "adopt": None,
    "failed": [],
    "stale": {},
    "stale_count": 0,
    "fresh_again": [],
    "ended": {},
    "ended_kept": {},
    "unknown": {},
    "notes": [],
}


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
        "deferred": {"deletions": 0, "volumes": 0, "copies": 0},
        "later": dict(NOTHING_LATER),
        "part": 0,
        "forget": gone[:MAX_NOTED],
        "since": began,
        "copies": [j.as_json() for j in copies.jobs],
        "copies_waiting": copies.waiting,
        "adopt": [r.as_json() for r in adopted] if contents.since is None else None,
        **watch,
    }
    intent["kept"] = _kept(decisions, intent)
    intent["to"] = _recipients(run, instances, volumes, intent)
    budget = run.deadline
    intent, later = _rounds(
        intent,
        first=_capacity(budget.remaining()),
        each=_capacity(budget.remaining_at_start - budget.reserve),
    )
    return Plan(intent=intent, counts=counts, decisions=log, later=later)


def _recipients(
    run: Run[Config, Trigger], instances: list[Instance], volumes: list[Volume], intent: Mapping[str, Any]
) -> dict[str, str]:
    """Who hears about what this run may report on a backup (autopilot.routing: the owner tag
    when it is an address, else the routing map by owner or team tag): {instance or volume id:
    address} for the create jobs (a job that fails is known only when it runs), the volumes whose
    backups ended in error and the stale volumes. A volume's own tags first, then its instance's.
    Empty when routing is off or in dry run; else 1 ssm:GetParameter."""
    if not (intent["jobs"] or intent["failed"] or intent["stale"]):
        return {}
    routes = routing.load(run.common)
    if routes is None:
        return {}
    owner_key, team_key = run.common.owner_tag_key, run.common.team_tag_key
    people: dict[str, tuple[str | None, str | None]] = {}
    for inst in instances:
        for key in (inst.id, *inst.volume_ids):
            people[key] = (inst.tags.get(owner_key), inst.tags.get(team_key))
    for vol in volumes:
        owner, team = people.get(vol.instance_id or "", (None, None))
        people[vol.id] = (vol.tags.get(owner_key) or owner, vol.tags.get(team_key) or team)
    nobody: tuple[str | None, str | None] = (None, None)
    wanted = [
        (str(j["resource_id"]), str(j["owner"]) or None, people.get(str(j["resource_id"]), nobody)[1])
        for j in intent["jobs"]
    ]
    for f in intent["failed"]:
        snap = f["snapshot"]
        owner, team = people.get(str(snap["volume_id"]), nobody)
        wanted.append((str(snap["volume_id"]), owner or snap["tags"].get(owner_key), team))
    wanted += [(str(v), *people.get(str(v), nobody)) for v in intent["stale"]]
    return routes.recipients(wanted)


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


@dataclass(frozen=True)
class _Unit:
    """Work that must stay in one round: a create job with the deletions of its volumes (they
    are held if its snapshot fails, which only that round knows), a volume's deletions without a
    job, or one copy."""

    jobs: tuple[Mapping[str, Any], ...] = ()
    delete: tuple[Mapping[str, Any], ...] = ()
    copies: tuple[Mapping[str, Any], ...] = ()


def _units(intent: Mapping[str, Any]) -> list[_Unit]:
    """The plan's work in the order it is done: copies first (few: EBS's concurrency limit),
    then the create jobs (oldest backup first) with their volumes' deletions, then the
    deletions of volumes without a job, in plan order."""
    by_volume: dict[str, list[Mapping[str, Any]]] = {}
    for d in intent["delete"]:
        by_volume.setdefault(str(d["volume_id"]), []).append(d)
    units = [_Unit(copies=(c,)) for c in intent.get("copies", [])]
    for job in intent["jobs"]:
        own = tuple(d for v in job["volume_ids"] for d in by_volume.pop(v, []))
        units.append(_Unit(jobs=(job,), delete=own))
    units += [_Unit(delete=tuple(ds)) for ds in by_volume.values()]
    return units


def _capacity(seconds: float) -> int:
    """The calls of one API one round makes in ``seconds`` at EC2's refill rate, a twentieth
    kept for the calls' own time and the ledger writes (what is not reached goes back to the
    queue)."""
    _, rate = pacing.EC2_MUTATING
    return max(1, int(seconds * rate * 0.95))


def _with_work(base: Mapping[str, Any], units: list[_Unit]) -> dict[str, Any]:
    """``base`` with the work of ``units``; its owners' addresses (``to``) only for that work's
    resources and the backups ``base`` reports (a round's intent carries no one else's)."""
    jobs = [j for u in units for j in u.jobs]
    to: Mapping[str, str] = base.get("to") or {}
    about = {str(j["resource_id"]) for j in jobs} | set(base["stale"])
    about |= {str(f["snapshot"]["volume_id"]) for f in base["failed"]}
    return {
        **base,
        "jobs": jobs,
        "delete": [d for u in units for d in u.delete],
        "copies": [c for u in units for c in u.copies],
        "to": {k: v for k, v in to.items() if k in about},
    }


def _round_base(intent: Mapping[str, Any], part: int) -> dict[str, Any]:
    """A later round's intent without its work: the plan's clock, token and retry window, and
    nothing the first round's mail says already (notes, failed backups, adoption, counts)."""
    return {**intent, **copy.deepcopy(ROUND_BLANK), "part": part}


def _take(base: Mapping[str, Any], units: list[_Unit], calls: int, room: int = 0) -> int:
    """How many of the first ``units`` one round takes: as many as its ``calls`` per API allow
    (at least one), fewer if the intent would not fit :data:`INTENT_BUDGET` less ``room`` bytes
    (0: not even one)."""
    budget = INTENT_BUDGET - room
    n, creates, deletes = 0, 0, 0
    while n < len(units):
        unit = units[n]
        more_creates, more_deletes = creates + len(unit.jobs) + len(unit.copies), deletes + len(unit.delete)
        if n and max(more_creates, more_deletes) > calls:
            break
        creates, deletes = more_creates, more_deletes
        n += 1
    if _packed_size(_with_work(base, units[:n])) <= budget:
        return n
    fits, too_big = 0, n  # the largest count that fits, by bisection (a few compressions)
    while too_big - fits > 1:
        middle = (fits + too_big) // 2
        if _packed_size(_with_work(base, units[:middle])) <= budget:
            fits = middle
        else:
            too_big = middle
    return fits


def _rounds(intent: dict[str, Any], *, first: int, each: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The plan's work as the intents of this round and of the next ones (the runner queues
    those before anything acts; each round takes the next, without listing again). ``first``
    and ``each``: the mutating calls this round (its time left) and a whole round can make.
    Every intent fits :data:`INTENT_BUDGET`. What would need more than the state machine's
    rounds (or a single unit larger than an outbox item) is ``deferred``: the next run plans it
    again. The first intent says how much is queued behind it (``later``, for the mail)."""
    units = _units(intent)
    taken = _take(intent, units, first, room=HEAD_ROOM)
    head = _with_work(intent, units[:taken])
    units = units[taken:]
    later: list[dict[str, Any]] = []
    while units and len(later) < MAX_ROUNDS:
        base = _round_base(intent, len(later) + 1)
        n = _take(base, units, each)
        if n == 0:  # one unit larger than an outbox item: left to the next run
            _defer(head, [units.pop(0)])
            continue
        later.append(_with_work(base, units[:n]))
        units = units[n:]
    _defer(head, units)
    head["later"] = {
        "rounds": len(later),
        "volumes": sum(len(j["volume_ids"]) for r in later for j in r["jobs"]),
        "deletions": sum(len(r["delete"]) for r in later),
        "copies": sum(len(r["copies"]) for r in later),
    }
    if later or sum(head["deferred"].values()):
        logger.info(
            "the work is more than one round", extra={"later": head["later"], "deferred": head["deferred"]}
        )
    return head, later


def _defer(intent: dict[str, Any], units: list[_Unit]) -> None:
    intent["deferred"]["volumes"] += sum(len(j["volume_ids"]) for u in units for j in u.jobs)
    intent["deferred"]["deletions"] += sum(len(u.delete) for u in units)
    intent["deferred"]["copies"] = intent["deferred"].get("copies", 0) + sum(len(u.copies) for u in units)


def rest(intent: Mapping[str, Any], result: Mapping[str, Any]) -> dict[str, Any] | None:
    """The work ``intent`` left for the next round (its time ran out, or EC2 kept throttling),
    as that round's intent: the volumes not snapshotted with the deletions of their volumes
    (held until their snapshot is made), and the deletions and copies not reached. A volume
    whose snapshot failed is not in it: its snapshots are all kept until the next run. None when
    nothing is left, and always in dry run. Pure: the runner queues it."""
    if result["dry_run"]:
        return None
    jobs: list[dict[str, Any]] = []
    waiting: set[str] = set()
    for left in result["jobs_left"]:
        job = CreateJob.from_json(intent["jobs"][left["job"]])
        todo = remaining(job, set(job.volume_ids) - set(left["volumes"]))
        if todo is not None:
            jobs.append(todo.as_json())
            waiting |= set(todo.volume_ids)
    deletions = intent["delete"]
    delete = [deletions[i] for i in result["held"] if deletions[i]["volume_id"] in waiting]
    delete += [deletions[i] for i in result["deletes_left"]]
    copies = [intent["copies"][i] for i in result.get("copies_left", [])]
    if not (jobs or delete or copies):
        return None
    base = _round_base(intent, int(intent.get("part", 0)))
    return {**base, "jobs": jobs, "delete": delete, "copies": copies}


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
    # A change freeze holds the deletions back (never the new snapshots, nor their copies): they
    # wait for a run after the calendar opens, which plans them again.
    calendar = freeze.read(ctx.common.change_calendar) if deletions else None
    if calendar is not None and calendar.closed:
        result.update({"freeze": calendar.as_json(), "frozen": list(range(len(deletions)))})
        logger.info("change freeze: no deletion", extra={**calendar.as_json(), "waiting": len(deletions)})
        deletions = []
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
    fresh_since = planned_at - timedelta(seconds=float(intent["retry_window_seconds"]))
    deleter = _Deleter(ctx, deletions, jobs, (planned_at, fresh_since), current, (result, book, pacer))
    try:
        _create_all(ctx, jobs, intent, current, result, book, pacer, deleter)
        _copy_all(ctx, copy_jobs, intent, current, result, book, pacer)
        deleter.finish()
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
    """The ledger writes of one act, 25 to a BatchWriteItem (new records and forgotten ones
    together): a new snapshot is recorded once EC2 returned its id, a deleted one forgotten once
    DeleteSnapshot succeeded (or NotFound), in the same or the next call. Up to 24 writes wait
    for the call; a run killed before it is finished by its retry, which adopts what it made by
    the run token in the Description and forgets what is gone (run.py, module doc)."""

    def __init__(self, table: str, *, dry_run: bool) -> None:
        self.table, self.dry_run = table, dry_run
        self.new: list[Record] = []
        self.gone: list[str] = []

    def record(self, records: list[Record]) -> None:
        if {r.snapshot_id for r in records} & set(self.gone):  # never two writes of one item in a call
            self.flush()
        self.new += records
        self._flush_full()

    def forget(self, snapshot_id: str) -> None:
        if snapshot_id in {r.snapshot_id for r in self.new}:
            self.flush()
        self.gone.append(snapshot_id)
        self._flush_full()

    def _flush_full(self) -> None:
        if len(self.new) + len(self.gone) >= store.BATCH:
            self.flush()

    def flush(self) -> None:
        if self.dry_run:
            self.new, self.gone = [], []
            return
        if self.new or self.gone:
            store.write(self.table, self.new, self.gone)
            self.new, self.gone = [], []


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
    deleter: _Deleter,
) -> None:
    """The create calls, each recorded once EC2 returned its ids; after each, the deletions its
    volumes (or volumes without a job) allow, as far as DeleteSnapshot's bucket has tokens."""
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
            deleter.release(done)
        todo = remaining(job, done)
        if todo is not None:
            work.append((index, todo))
    for n, (index, job) in enumerate(work):
        deleter.drain(wait=False)  # what the creates so far allow, while the bucket has tokens
        operation = "CreateSnapshots" if job.kind == "instance" else "CreateSnapshot"
        if not _may_call(ctx, pacer, operation):
            result["jobs_left"] = [{"job": i, "volumes": list(j.volume_ids)} for i, j in work[n:]]
            logger.warning("time is up: snapshots left for the next run", extra={"jobs_left": len(work) - n})
            return
        if ctx.dry_run:
            result["created"].append({"job": index, "snapshots": dict.fromkeys(job.volume_ids)})
            logger.info("would create snapshot", extra={"job": job.resource_id, "volumes": job.volume_ids})
            deleter.release(job.volume_ids)
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
        deleter.release(made)
        logger.info("created snapshot", extra={"resource": job.resource_id, "snapshots": made})


class _Deleter:
    """The deletions of one act, each made as soon as it may be. A volume's deletions wait until
    this act made its new snapshot (a volume without a job here waits for nothing); a volume
    whose new snapshot failed, or was not reached, keeps all its snapshots (``HELD``). Each EC2
    API has its own token bucket, so deletions go between the creates whenever
    ``DeleteSnapshot``'s bucket has a token (never making a create wait), and the rest after
    them. Safety rule 1 (``refusal``) is checked before every call; finishing an interrupted
    run, each deletion is decided again on what exists now."""

    def __init__(
        self,
        ctx: Context[Config],
        decisions: list[Decision],
        jobs: list[CreateJob],
        clock: tuple[datetime, datetime],
        current: list[Snapshot] | None,
        parts: tuple[dict[str, Any], _Book, pacing.Pacer],
    ) -> None:
        planned_at, fresh_since = clock  # the plan's time, and the start of its retry window
        self.ctx, self.decisions = ctx, decisions
        self.result, self.book, self.pacer = parts
        self.waiting = {v for job in jobs for v in job.volume_ids}  # until their new snapshot
        self.pending = list(range(len(decisions)))  # not yet deleted or set aside, in plan order
        self.stopped = False  # time is up, or EC2 kept throttling: no more deletions now
        self.live: dict[str, Decision] | None = None
        if current is not None:  # finishing an interrupted run: decide each deletion again
            self.live = {
                d.snapshot.id: d
                for d in plan_retention(
                    current,
                    stack_name=ctx.common.stack_name,
                    policy=ctx.config.policy,
                    policies=ctx.config.retention,
                    now=planned_at,
                    fresh_since=fresh_since,
                )
            }

    def release(self, volumes: Iterable[str]) -> None:
        """These volumes got their new snapshot (or the interrupted attempt made it)."""
        self.waiting -= set(volumes)

    def drain(self, *, wait: bool) -> None:
        """Make the deletions that may be made now; ``wait=False`` (between creates): only while
        a token is there without waiting."""
        kept: list[int] = []
        for position, index in enumerate(self.pending):
            snap = self.decisions[index].snapshot
            if snap.volume_id in self.waiting:
                kept.append(index)
                continue
            if self.stopped or (not wait and not self._token_now(snap)):
                kept += self.pending[position:]
                break
            outcome = self._delete(index, wait=wait)
            if outcome == NOT_MADE:
                kept += self.pending[position:]
                break
            if outcome == STOP:
                kept += self.pending[position + 1 :]
                break
        self.pending = kept

    def finish(self) -> None:
        """After the creates: hold what is still waiting, make the rest, say what is left."""
        decided = with_holds(self.decisions, self.waiting)  # the retention rule's own hold
        held = {i for i in self.pending if decided[i].reason is Reason.HELD}
        self.result["held"] = sorted(held)
        self.pending = [i for i in self.pending if i not in held]
        self.waiting = set()
        self.drain(wait=True)
        if self.pending:
            self.result["deletes_left"] = list(self.pending)
            logger.warning("time is up: deletions left for the next run", extra={"left": len(self.pending)})

    def _operation(self, snap: Snapshot) -> str:
        return f"DeleteSnapshot@{snap.region}" if snap.region else "DeleteSnapshot"

    def _token_now(self, snap: Snapshot) -> bool:
        return self.ctx.dry_run or self.pacer.ready(self._operation(snap))

    def _delete(self, index: int, *, wait: bool) -> str:
        """One deletion: DONE (made, or set aside), NOT_MADE (no time now: it stays pending) or
        STOP (it failed and EC2 keeps throttling: no more deletions in this act)."""
        ctx, result = self.ctx, self.result
        decision = self.decisions[index]
        snap = decision.snapshot
        refused = refusal(decision, ctx.common.stack_name)
        if refused:  # the plan never produces this; refuse loudly rather than lose a backup
            raise RuntimeError(f"refusing to delete {snap.id}: {refused}")
        if self.live is not None:
            now_decided = self.live.get(snap.id)
            if now_decided is None:
                result["gone"].append(index)
                return DONE
            why = refusal(now_decided, ctx.common.stack_name)
            if why:
                result["delete_skipped"].append({"index": index, "why": why})
                return DONE
        if not _may_call(ctx, self.pacer, self._operation(snap)):
            if wait:
                self.stopped = True
            return NOT_MADE
        if ctx.dry_run:
            result["deleted"].append(index)
            return DONE
        try:
            service.delete(snap.id, snap.region)
        except ClientError as err:
            return self._failed(index, snap, err)
        result["deleted"].append(index)
        self.book.forget(snap.id)
        logger.info(
            "deleted snapshot",
            extra={"snapshot": snap.id, "volume": snap.volume_id, "started": snap.start_time.isoformat()},
        )
        return DONE

    def _failed(self, index: int, snap: Snapshot, err: ClientError) -> str:
        result = self.result
        code = error_code(err)
        if code == IN_USE:
            # An AMI registered after we listed them: the safety rule holds, skip it.
            result["delete_skipped"].append(
                {"index": index, "why": "used by an AMI registered during this run"}
            )
            return DONE
        if code == NOT_FOUND:
            logger.info("snapshot already gone", extra={"snapshot": snap.id})
            result["gone"].append(index)
            self.book.forget(snap.id)
            return DONE
        result["delete_failures"].append({"index": index, **_error(err, result["delete_failures"])})
        logger.error("delete failed", extra={"snapshot": snap.id, "code": code})
        if is_transient(err):  # throttling that outlived botocore's retries: no more now
            self.stopped = True
            return STOP
        return DONE


def _error(err: ClientError, failures: list[Any]) -> dict[str, str]:
    """A failure's code, and its message for the first :data:`MESSAGES` of a list (a run where
    every call fails, e.g. a broken policy, must still fit its result in the outbox)."""
    error = {"code": error_code(err)}
    if len(failures) < MESSAGES:
        error["message"] = str(err)[:MESSAGE_CHARS]
    return error
