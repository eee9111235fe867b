"""owner_backfill's sequence, for the runner: ``plan`` finds the untagged resources and their
creators in CloudTrail's history (read-only) and decides each owner; ``act`` writes them -
owner_tagger's own ``act``, so the same batching, the same resumed-run re-read and the same
handling of the IAM Deny that keeps an owner set meanwhile.

**A pass** looks for every untagged resource that existed at its start. It may take several
runs (LookupEvents allows 2 requests a second): the runner's memory (``Run.memory``) carries
the pass from run to run - where the paging of each event name has come, the owners written,
the resources that got none and why. Each run writes the owners it found; the run that ends
the pass mails one summary. A resource that got no owner is remembered and not looked for again
(its creation event will not appear later); a new untagged resource is looked for by the next
pass. A dry run keeps a pass of its own, so that it never hides anything from a real one.

AWS calls of a run: ceil(n / 1000) DescribeInstances, DescribeVolumes, DescribeSnapshots and
DescribeImages; LookupEvents as :mod:`owner_backfill.decide` chooses, within the run's time;
DescribeAutoScalingGroups for an Auto Scaling launch; CreateTags per owner value and 1,000
resources. The runner adds its DynamoDB calls (claim, outbox, memory) and the mail's Publish.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, replace
from datetime import datetime
from typing import Any, Final

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from autopilot import aws, pacing
from autopilot.events import ScheduledRun
from autopilot.runner import Context, Counts, Plan, Run
from owner_backfill import decide, service
from owner_backfill.config import Config
from owner_backfill.decide import NameCursor, Resource
from owner_tagger import run as owner_tagger_run
from owner_tagger import service as owner_tagger_service
from owner_tagger.decide import CREATED_WITHIN

logger = Logger(child=True)

ACT_RESERVE: Final = 30.0  # seconds kept for writing the tags and the runner's records
EXAMPLES_MAX: Final = 20  # resources named in the mail per section (the log has them all)


# Ids a memory key holds at most: the runner keeps each key in one DynamoDB item (400 KB), and
# an account may hold tens of thousands of snapshots without an owner or a history.
IDS_PER_KEY: Final = 8000


def _memory_prefixes(dry_run: bool) -> tuple[str, str, str]:
    """The memory keys of a mode: its pass, and the prefixes of its chunked id lists."""
    mode = "dry" if dry_run else "real"
    return f"pass.{mode}", f"examined.{mode}.", f"writing.{mode}."


def _examined(memory: Mapping[str, Any], prefix: str) -> dict[str, str]:
    """The remembered resources that got no owner: {reason: [ids]} per key -> {id: reason}."""
    found: dict[str, str] = {}
    for key, remembered in memory.items():
        if not key.startswith(prefix) or not isinstance(remembered, Mapping):
            continue
        for reason, ids in remembered.items():
            if isinstance(ids, list):
                found.update((str(i), str(reason)) for i in ids)
    return found


def _writing(memory: Mapping[str, Any], prefix: str) -> list[str]:
    """What the last run of the pass meant to write."""
    ids: list[str] = []
    for key in sorted(memory):
        if key.startswith(prefix) and isinstance(memory[key], list):
            ids += [str(i) for i in memory[key]]
    return ids


def _chunks(prefix: str, ids: list[str]) -> dict[str, list[str]]:
    return {
        f"{prefix}{n // IDS_PER_KEY:04d}": ids[n : n + IDS_PER_KEY] for n in range(0, len(ids), IDS_PER_KEY)
    }


def _grouped(prefix: str, examined: Mapping[str, str]) -> dict[str, dict[str, list[str]]]:
    """{id: reason} -> memory keys of at most IDS_PER_KEY ids, each {reason: [ids]}."""
    chunks: dict[str, dict[str, list[str]]] = {}
    for n, resource_id in enumerate(sorted(examined)):
        chunk = chunks.setdefault(f"{prefix}{n // IDS_PER_KEY:04d}", {})
        chunk.setdefault(examined[resource_id], []).append(resource_id)
    return chunks


def _cursor(remembered: object) -> NameCursor:
    """A remembered cursor; one that cannot be read starts its name over (costs calls, loses nothing)."""
    if not isinstance(remembered, Mapping):
        return NameCursor()
    fields = NameCursor.__dataclass_fields__
    return NameCursor(**{k: v for k, v in remembered.items() if k in fields})


def _new_pass(now: datetime) -> dict[str, Any]:
    return {
        "started": now.isoformat(),
        # Events later than this are not looked at in this pass (CloudTrail delivers within
        # about 15 minutes): the end of every query, so that a page token stays valid.
        "end": (now - decide.SETTLE).isoformat(),
        "runs": 0,
        "lookups": 0,
        "cursors": {},
        "tagged": 0,
        "tagged_examples": [],
        "unresolved": {},
        "unresolved_examples": [],
    }


def plan(run: Run[Config, ScheduledRun]) -> Plan:
    """Look for the owners of untagged resources (see the module doc). Changes nothing."""
    if not run.config.enabled:
        line = {"action": "off", "reason": "OwnerBackfill is not true: nothing is looked at"}
        return Plan(None, Counts(), [line])
    key = run.common.owner_tag_key
    prefixes = _memory_prefixes(run.dry_run)
    pass_key = prefixes[0]
    examined = _examined(run.memory, prefixes[1])
    writing = _writing(run.memory, prefixes[2])
    state: dict[str, Any] | None = (
        dict(run.memory[pass_key]) if isinstance(run.memory.get(pass_key), Mapping) else None
    )
    everything = service.resources(key)
    by_id = {r.id: r for r in everything}
    found_now = decide.candidates(everything, examined, run.now)
    if state is None and not (found_now.lookup or found_now.inherit or found_now.before_history):
        counts = _counts(len(everything), found_now.recent)
        return Plan(None, counts, [], memory=_memory(run.memory, prefixes, None, [], examined))
    state = state or _new_pass(run.now)
    # What the last run of this pass meant to write and now carries an owner: written.
    state["tagged"] = int(state["tagged"]) + sum(
        1 for i in writing if i in by_id and by_id[i].owner is not None
    )
    unresolved: list[tuple[Resource, str]] = [(r, decide.BEFORE_HISTORY) for r in found_now.before_history]
    end = datetime.fromisoformat(str(state["end"]))
    in_pass = [r for r in found_now.lookup if r.created_at and r.created_at + CREATED_WITHIN <= end]
    later = len(found_now.lookup) - len(in_pass)
    cursors = {str(n): _cursor(c) for n, c in dict(state["cursors"]).items()}
    budget_end = pacing.clock() + run.deadline.remaining() - ACT_RESERVE
    searched = decide.search(in_pass, cursors, end, _fetch(budget_end))
    found, pending, calls = searched.found, searched.pending, searched.calls
    state["cursors"] = {n: asdict(c) for n, c in cursors.items()}
    unresolved += [(r, decide.NO_EVENT) for r in searched.asked]
    for resource in decide.not_found(list(pending.values()), cursors):
        unresolved.append((resource, decide.NO_EVENT))
        pending.pop(resource.id)
    groups = {f.resource.group for f in found if f.owner.kind == "service" and f.resource.group}
    group_owner = owner_tagger_service.group_owners(groups, key) if groups else {}
    writes, nobody = decide.owners(found, group_owner)
    unresolved += nobody
    for resource, reason in unresolved:
        examined[resource.id] = reason
    parent_owner = {r.id: r.owner for r in everything if r.owner is not None}
    parent_owner.update((w.resource.id, w.value) for w in writes)
    children, orphans, waiting = decide.inherited(found_now.inherit, parent_owner, set(examined))
    writes += children
    for resource, reason in orphans:
        examined[resource.id] = reason
    unresolved += orphans
    complete = not pending and not waiting
    writing = _add_to_pass(state, writes, unresolved, calls, run.dry_run)
    lines = [_line(w.resource, "tag", value=w.value, source=w.source, event=w.event) for w in writes]
    lines += [_line(r, "unresolved", reason=decide.REASONS[reason]) for r, reason in unresolved]
    counts = _counts(len(everything), found_now.recent, len(writes), len(unresolved), calls, later)
    summary = _summary(state, complete, len(pending) + len(waiting), later)
    memory = _memory(run.memory, prefixes, None if complete else state, writing, examined)
    if not writes and not (complete and _has_news(state)):
        return Plan(None, counts, lines, memory=memory)
    intent = {"tag": [w.as_dict() for w in writes], "pass": summary}
    return Plan(intent, counts, lines, memory=memory)


def _fetch(budget_end: float) -> decide.Fetch:
    """decide.search's I/O: one paced LookupEvents page, None once the run's time is up."""

    def fetch(
        attribute: tuple[str, str], start: datetime, end: datetime, token: str | None
    ) -> decide.Page | None:
        try:
            return service.lookup(attribute, start, end, token, budget_end - pacing.clock())
        except ClientError as err:
            if token and aws.error_code(err) == "InvalidNextTokenException":
                raise decide.TokenExpired from err
            if aws.is_transient(err):
                # Throttled (the quota is the account's: another tool may be paging too) or
                # failing after the client's retries: this run's lookups end here, what it
                # found is written, and the pass goes on from its cursors next run.
                logger.warning(
                    "LookupEvents failed, the pass goes on next run",
                    extra={"error": aws.error_code(err), "attribute": attribute[0]},
                )
                return None
            raise

    return fetch


def _add_to_pass(
    state: dict[str, Any],
    writes: list[decide.Write],
    unresolved: list[tuple[Resource, str]],
    calls: int,
    dry_run: bool,
) -> list[str]:
    """This run's share of the pass: the resources left without an owner by reason, the calls,
    a few of each for the mail; returns its writes, for the next run to verify (in dry run,
    what would be written is counted at once)."""
    state["runs"] = int(state["runs"]) + 1
    state["lookups"] = int(state["lookups"]) + calls
    writing = [w.resource.id for w in writes]
    if dry_run:
        state["tagged"] = int(state["tagged"]) + len(writes)
        writing = []
    tagged = list(state.get("tagged_examples", []))
    tagged += [w.as_dict() for w in writes][: max(0, EXAMPLES_MAX - len(tagged))]
    state["tagged_examples"] = tagged
    totals = dict(state.get("unresolved", {}))
    for _, reason in unresolved:
        totals[reason] = int(totals.get(reason, 0)) + 1
    state["unresolved"] = totals
    examples = list(state.get("unresolved_examples", []))
    examples += [{**r.as_dict(), "reason": reason} for r, reason in unresolved][
        : max(0, EXAMPLES_MAX - len(examples))
    ]
    state["unresolved_examples"] = examples
    return writing


def _has_news(state: Mapping[str, Any]) -> bool:
    return bool(int(state.get("tagged", 0)) or state.get("unresolved"))


def _summary(state: Mapping[str, Any], complete: bool, pending: int, later: int) -> dict[str, Any]:
    """What the mail needs of the pass (written before this run's writes are verified: the
    report adds them from the act's result)."""
    return {
        "complete": complete,
        "started": state["started"],
        "runs": state["runs"],
        "lookups": state["lookups"],
        "tagged_before": int(state["tagged"]),
        "tagged_examples": state["tagged_examples"],
        "unresolved": state["unresolved"],
        "unresolved_examples": state["unresolved_examples"],
        "pending": pending,
        "later": later,
    }


def _memory(
    remembered: Mapping[str, Any],
    prefixes: tuple[str, str, str],
    state: Mapping[str, Any] | None,
    writing: list[str],
    examined: Mapping[str, str],
) -> dict[str, Any]:
    """The memory for the next run: the other mode's as it was; this mode's pass (none once it
    is complete), what this run writes and the resources that got no owner, by reason."""
    pass_key, examined_prefix, writing_prefix = prefixes
    memory = {
        k: v
        for k, v in remembered.items()
        if k != pass_key and not k.startswith(examined_prefix) and not k.startswith(writing_prefix)
    }
    if state is not None:
        memory[pass_key] = dict(state)
        memory.update(_chunks(writing_prefix, writing))
    memory.update(_grouped(examined_prefix, examined))
    return memory


def _line(resource: Resource, action: str, **extra: Any) -> dict[str, Any]:
    return {"resource": resource.id, "type": resource.type, "action": action, **extra}


def _counts(
    checked: int, recent: int, tagged: int = 0, unresolved: int = 0, calls: int = 0, later: int = 0
) -> Counts:
    """The plan's numbers, every name always emitted (report.counts adds the act's)."""
    extra = {
        "ResourcesTagged": 0,
        "OwnersUnresolved": unresolved,
        "OwnersFound": tagged,
        "LookupCalls": calls,
        "ResourcesRecent": recent,
        "ResourcesNextPass": later,
    }
    return Counts(checked=checked, skipped=recent + later, extra=extra)


def act(ctx: Context[Config], intent: Mapping[str, Any]) -> dict[str, Any]:
    """Write the owners: owner_tagger's act, always as a resumed one - it reads the owner tags
    of the intended resources first (ceil(n / 200) DescribeTags) and leaves those that have one,
    because minutes of lookups lie between the plan's read and this write; an owner set in the
    last instant is kept by the IAM Deny (NeverOverwriteAnOwner). Idempotent."""
    return owner_tagger_run.act(replace(ctx, resumed=True), intent)  # type: ignore[arg-type]
