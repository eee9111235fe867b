"""What a run tells people: the digest mail (only when there is something to say) and the
act-side numbers. Pure: everything comes from the recorded intent and the act's result."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from autopilot import console, freeze, routing
from autopilot.notify import Digest, Item, Severity, plural
from autopilot.outbox import Mail
from autopilot.runner import Context, Counts
from snapshot_rotator.config import Config
from snapshot_rotator.decide.copies import COPY_CONCURRENCY, CopyJob
from snapshot_rotator.decide.policies import DEFAULT, describe
from snapshot_rotator.decide.retention import Decision, Reason, RetentionPolicy, Snapshot
from snapshot_rotator.decide.selection import OPT_IN_TAG, CreateJob

AUTOMATION = "snapshot_rotator"


@dataclass(frozen=True)
class Outcome:
    """The intent and the act's result, read together."""

    intent: Mapping[str, Any]
    result: Mapping[str, Any]

    @cached_property
    def jobs(self) -> list[CreateJob]:
        return [CreateJob.from_json(j) for j in self.intent["jobs"]]

    @cached_property
    def deletions(self) -> list[Decision]:
        return [Decision.from_json(d) for d in self.intent["delete"]]

    @property
    def dry_run(self) -> bool:
        return bool(self.result["dry_run"])

    @property
    def now(self) -> datetime:
        return datetime.fromisoformat(str(self.intent["now"]))

    @property
    def created(self) -> list[tuple[CreateJob, Mapping[str, Any]]]:
        return [(self.jobs[e["job"]], e) for e in self.result["created"]]

    @property
    def snapshots_created(self) -> int:
        """Snapshots made (in dry run: that would be made)."""
        return sum(len(e["snapshots"]) for e in self.result["created"])

    def decisions(self, key: str) -> list[Decision]:
        """The deletions the result lists under ``key`` (indices into the intent's)."""
        return [self.deletions[i] for i in self.result.get(key, [])]

    @property
    def create_failures(self) -> list[tuple[CreateJob, Mapping[str, Any]]]:
        return [(self.jobs[f["job"]], f) for f in self.result["create_failures"]]

    @property
    def delete_failures(self) -> list[tuple[Decision, Mapping[str, Any]]]:
        return [(self.deletions[f["index"]], f) for f in self.result["delete_failures"]]

    @property
    def delete_skipped(self) -> list[tuple[Decision, str]]:
        return [(self.deletions[s["index"]], str(s["why"])) for s in self.result["delete_skipped"]]

    @property
    def deferred(self) -> Mapping[str, int]:
        """Work the plan left for the next run so that the intent fits the outbox."""
        return dict(self.intent.get("deferred") or {})

    @cached_property
    def copies(self) -> list[CopyJob]:
        return [CopyJob.from_json(j) for j in self.intent.get("copies", [])]

    @property
    def snapshots_copied(self) -> int:
        """Disaster-recovery copies started (in dry run: that would be started)."""
        return len(self.result.get("copied", []))

    @property
    def failed_backups(self) -> list[Snapshot]:
        """Snapshots of ours found in ``error`` state (said once; the next run deletes them)."""
        return [Snapshot.from_json(f["snapshot"]) for f in self.intent.get("failed", [])]

    @property
    def news(self) -> dict[str, int]:
        """What the backups themselves need from a person, by kind (each said once)."""
        return {
            "stale": len(self.intent.get("stale", {})),
            "ended": len(self.intent.get("ended", {})),
            "unknown": len(self.intent.get("unknown", {})),
        }

    @property
    def failed(self) -> int:
        return (
            sum(len(f["volumes"]) for f in self.result["create_failures"])
            + len(self.result["delete_failures"])
            + len(self.failed_backups)
            + len(self.result.get("copy_failures", []))
        )

    @property
    def later(self) -> Mapping[str, int]:
        """Work queued for the next rounds of this run (in the first round's intent only)."""
        return dict(self.intent.get("later") or {})

    @property
    def queued_later(self) -> int:
        return sum(int(self.later.get(k, 0)) for k in ("volumes", "deletions", "copies"))

    @property
    def not_reached(self) -> int:
        """What this round's time (or EC2's throttling) did not reach: queued again."""
        return (
            sum(len(j["volumes"]) for j in self.result["jobs_left"])
            + len(self.result["deletes_left"])
            + len(self.result.get("copies_left", []))
        )

    @property
    def undone(self) -> int:
        """Left by this round and not queued behind it (the next run plans it again)."""
        return self.not_reached + sum(self.deferred.values())

    @property
    def left(self) -> int:
        """Everything this invocation did not do: not reached, deferred, queued for later rounds."""
        return self.undone + self.queued_later


def continues(intent: Mapping[str, Any], result: Mapping[str, Any]) -> bool:
    """Whether the next round takes up this run's remaining work at once - the runner's rule:
    work is queued (later rounds, or what this round did not reach) and this round changed
    something, unless it left nothing itself (a round that could do nothing would not be helped
    by the next one at once). Never in dry run: it has no rounds."""
    o = Outcome(intent, result)
    if o.dry_run:
        return False
    queued = o.queued_later > 0 or o.not_reached > 0
    return queued and (o.not_reached == 0 or counts(intent, result).changed > 0)


def counts(intent: Mapping[str, Any], result: Mapping[str, Any]) -> Counts:
    """Changed (created + deleted; 0 in dry run), Skipped (held and refused deletions; the
    plan counts the AMI-used and pending ones), Failed (volumes whose snapshot failed + failed
    deletions), and SnapshotsCreated, SnapshotsDeleted, LeftForNextRun."""
    outcome = Outcome(intent, result)
    created = 0 if outcome.dry_run else outcome.snapshots_created
    deleted = 0 if outcome.dry_run else len(result["deleted"])
    copied = 0 if outcome.dry_run else outcome.snapshots_copied
    return Counts(
        changed=created + deleted + copied,
        skipped=len(result["held"]) + len(result["delete_skipped"]) + len(result.get("frozen", [])),
        failed=outcome.failed + freeze.unreadable(result),
        extra={
            "SnapshotsCreated": created,
            "SnapshotsDeleted": deleted,
            "SnapshotsCopied": copied,
            "LeftForNextRun": outcome.left,
        },
    )


def _age(decision: Decision, now: datetime) -> str:
    snap = decision.snapshot
    days = (now - snap.start_time).total_seconds() / 86400
    return f"started {snap.start_time:%Y-%m-%d %H:%M} UTC ({days:.0f} days old)"


def _who(name: str, owner: str, owner_key: str) -> str:
    parts = [f"Name {name}" if name else "", f"{owner_key} {owner}" if owner else ""]
    text = ", ".join(p for p in parts if p)
    return f" ({text})" if text else ""


def _job_link(region: str, job: CreateJob) -> str:
    if job.kind == "instance":
        return console.ec2_instance(region, job.resource_id)
    return console.ec2_volume(region, job.resource_id)


def _job_title(job: CreateJob, owner_key: str) -> str:
    what = "instance" if job.kind == "instance" else "volume"
    return f"{what} {job.resource_id}{_who(job.name, job.owner, owner_key)}"


def _snapshot_item(
    region: str, decision: Decision, now: datetime, owner_key: str, why: str | None = None
) -> Item:
    snap = decision.snapshot
    return Item(
        title=f"{snap.id} of volume {snap.volume_id}"
        + _who(snap.tags.get("Name", ""), snap.tags.get(owner_key, ""), owner_key),
        details=[_age(decision, now), why or decision.reason.value],
        link=console.ec2_snapshot(region, snap.id),
    )


def _failure_item(region: str, job: CreateJob, failure: Mapping[str, Any], owner_key: str) -> Item:
    return Item(
        title=_job_title(job, owner_key),
        details=[f"volumes {', '.join(failure['volumes'])}", _error_text(failure)],
        link=_job_link(region, job),
    )


def _error_item(region: str, snap: Snapshot) -> Item:
    return Item(
        title=f"{snap.id} of volume {snap.volume_id}",
        details=[f"started {snap.start_time:%Y-%m-%d %H:%M} UTC", "state error: EBS could not complete it"],
        link=console.ec2_snapshot(region, snap.id),
    )


def _stale_heading(stale_after: timedelta) -> str:
    return f"Stale: no completed backup for more than {stale_after.total_seconds() / 3600:.0f} hours"


def _stale_line(volume: str, newest: str) -> str:
    when = newest[:16].replace("T", " ") + " UTC" if newest else "none"
    return f"- volume {volume}: newest completed backup {when}"


def _error_text(failure: Mapping[str, Any]) -> str:
    message = str(failure.get("message") or "")[:300]
    return f"{failure['code']}: {message}" if message else str(failure["code"])


def _policy_text(p: RetentionPolicy) -> str:
    rules = [f"the newest {p.keep_newest} completed"]
    if p.keep_days:
        rules.append(f"everything younger than {p.keep_days} days")
    tiers = [
        (p.keep_daily, "daily"),
        (p.keep_weekly, "weekly"),
        (p.keep_monthly, "monthly"),
        (p.keep_yearly, "yearly"),
    ]
    rules += [f"{n} {label}" for n, label in tiers if n]
    return "Retention per volume: " + ", ".join(rules) + "."


def mail(ctx: Context[Config], intent: Mapping[str, Any], result: Mapping[str, Any]) -> Mail | None:
    """The mail of this run, or None when there is nothing to say: always when something failed
    or was left for the next run; with SUMMARY_MAIL (or in dry run) also when something was
    created or deleted."""
    o = Outcome(intent, result)
    continuing = ctx.config.rounds and continues(intent, result)  # the next round starts now
    troubled = bool(
        o.create_failures
        or o.delete_failures
        or o.failed_backups
        or o.result.get("copy_failures")
        or (o.left and not continuing and not o.dry_run)
        or (o.undone and o.dry_run)
    )
    wants_summary = (ctx.config.summary_mail or o.dry_run) and (
        o.snapshots_created or result["deleted"] or o.snapshots_copied
    )
    frozen = bool(result.get("frozen"))  # deletions held back by a change freeze: said every run
    if not troubled and not any(o.news.values()) and not wants_summary and not frozen:
        return None
    digest = Digest(AUTOMATION, ctx.common.stack_name, ctx.common.region, dry_run=o.dry_run)
    _trouble(digest, o, ctx.common.owner_tag_key, continuing)
    _news(digest, o, ctx.config.stale_after)
    _work(digest, o, ctx.config, ctx.common.owner_tag_key)
    owners = owner_mails(ctx, o)
    if owners.unmailed:
        digest.section("Owner digests", text=owners.note())
    digest.advice = [
        f"Opt a volume in with the tag {OPT_IN_TAG}=true (or {OPT_IN_TAG}=<policy name>) on the volume, "
        "or on its instance for all its volumes (snapshotted together, crash-consistent); "
        f"{OPT_IN_TAG}=false on a volume leaves it out; remove the tag to stop new backups.",
        f"Only snapshots this stack created (its own record of them; a ManagedBy={ctx.common.stack_name} "
        "tag alone is not enough) are ever deleted; the newest "
        f"{ctx.config.policy.keep_newest} completed ones of each volume are always kept.",
        "Restore: EC2 console > Snapshots > select the snapshot > Actions > Create volume from snapshot, "
        "then attach it to an instance in the same Availability Zone.",
    ]
    if o.create_failures or o.left:
        digest.advice.insert(
            0,
            "A failed or skipped volume is tried again on the next run; "
            "ConcurrentSnapshotLimitExceeded means that volume already has its maximum of pending "
            "snapshots (5, or 1 for st1/sc1): it clears once they complete.",
        )
    subject, severity = _headline(o, troubled)
    operators = digest.mail(subject, _summary(o), severity, now=ctx.now)
    return None if operators is None else replace(operators, routed=owners.mails)


def owner_mails(ctx: Context[Config], o: Outcome) -> routing.Owners:
    """One digest per recipient (intent ``to``, autopilot.routing) about their own backups only:
    failed, ended in error, stale. Empty in dry run or without routing (the plan resolved no
    one). The operators' digest lists every finding as before."""
    to: Mapping[str, str] = o.intent.get("to") or {}
    if not to or o.dry_run:
        return routing.Owners()
    region, owner_key = ctx.common.region, ctx.common.owner_tag_key
    findings = [
        routing.Finding(to.get(job.resource_id), "failed", _failure_item(region, job, f, owner_key))
        for job, f in o.create_failures
    ]
    findings += [
        routing.Finding(to.get(s.volume_id), "error", _error_item(region, s)) for s in o.failed_backups
    ]
    findings += [
        routing.Finding(to.get(v), "stale", line=_stale_line(v, t))
        for v, t in sorted((o.intent.get("stale") or {}).items())
    ]
    kinds = {
        "failed": routing.Kind(
            "Backups that FAILED (every older snapshot of these volumes is kept; tried again next run)",
            "{count} failed",
        ),
        "error": routing.Kind(
            "Snapshots that ended in ERROR (not usable; the volume is snapshotted again on the next run)",
            "{count} ended in error",
        ),
        "stale": routing.Kind(_stale_heading(ctx.config.stale_after), "{count} overdue"),
    }
    return routing.owner_digests(
        findings,
        kinds,
        digest=Digest(AUTOMATION, ctx.common.stack_name, region),
        noun="backup",
        advice=[
            "A failed backup is tried again on the next run; ConcurrentSnapshotLimitExceeded clears "
            "once the volume's pending snapshots complete. A volume that fails again: check its health.",
            f"Only snapshots this stack made are ever deleted, and never while a volume's backups fail; "
            f"the newest {ctx.config.policy.keep_newest} completed ones are always kept.",
            f"You get this mail for the volumes and instances whose {owner_key} or "
            f"{ctx.common.team_tag_key} tag names you; your operators get every finding too.",
        ],
        now=ctx.now,
    )


def _headline(o: Outcome, troubled: bool) -> tuple[str, Severity]:
    created, deleted = o.snapshots_created, len(o.result["deleted"])
    if o.create_failures or o.failed_backups:
        volumes = len(
            {v for _, f in o.create_failures for v in f["volumes"]} | {s.volume_id for s in o.failed_backups}
        )
        return (
            f"Backup FAILED for {plural(volumes, 'volume')} ({created} created, {deleted} deleted)",
            "critical",
        )
    if troubled:
        return (
            f"Backups incomplete: {o.failed} failed, {o.left} left ({created} created, {deleted} deleted)",
            "warning",
        )
    if any(o.news.values()):
        labels = {"stale": "stale", "ended": "ended", "unknown": "with an unknown policy"}
        said = ", ".join(f"{plural(n, 'volume')} {labels[k]}" for k, n in o.news.items() if n)
        return f"Backups need a look: {said} ({created} created, {deleted} deleted)", "warning"
    waiting = len(o.result.get("frozen", []))
    if waiting:  # the freeze is news enough for the subject
        return f"{plural(created, 'snapshot')} created, {waiting} deletions wait: change freeze", "info"
    if o.dry_run:
        return f"{plural(created, 'snapshot')} would be created, {deleted} deleted", "info"
    return f"{plural(created, 'snapshot')} created, {deleted} deleted", "info"


def _summary(o: Outcome) -> str:
    would = "would be " if o.dry_run else ""
    part = int(o.intent.get("part", 0))
    continued = f" (continued: part {part + 1} of the run)" if part else ""
    return (
        f"Backup run at {o.now:%Y-%m-%d %H:%M} UTC{continued}: "
        f"{plural(int(o.intent['checked']), 'opted-in volume')} checked, "
        f"{plural(o.snapshots_created, 'snapshot')} {would}created, "
        f"{int(o.intent['already_done'])} already done this period, "
        f"{len(o.result['deleted'])} {would}deleted past retention, {o.failed} failed."
    )


def _trouble(digest: Digest, o: Outcome, owner_key: str, continuing: bool = False) -> None:
    """The sections about what failed or was left undone (first in the mail)."""
    region, now = digest.region, o.now
    if o.create_failures:
        digest.section(
            "Backups that FAILED (all older snapshots of these volumes are kept)",
            [_failure_item(region, job, f, owner_key) for job, f in o.create_failures],
        )
    if o.result.get("copy_failures"):
        digest.section(
            "Disaster-recovery copies that FAILED (the backups here are unchanged; tried again next run)",
            [
                Item(
                    title=f"copy of {o.copies[f['job']].source_id} (volume {o.copies[f['job']].volume_id}) "
                    f"to {o.copies[f['job']].region}",
                    details=[_error_text(f)],
                    link=console.ec2_snapshot(region, o.copies[f["job"]].source_id),
                )
                for f in o.result["copy_failures"]
            ],
        )
    if o.delete_failures:
        digest.section(
            "Deletions that failed (the snapshots still exist)",
            [_snapshot_item(region, d, now, owner_key, _error_text(f)) for d, f in o.delete_failures],
        )
    if o.left:
        lines = [f"- snapshot of {_job_title(o.jobs[j['job']], owner_key)}" for j in o.result["jobs_left"]]
        lines += [
            f"- delete {d.snapshot.id} of volume {d.snapshot.volume_id}" for d in o.decisions("deletes_left")
        ]
        if o.deferred.get("volumes"):
            lines.append(
                f"- snapshots of {plural(o.deferred['volumes'], 'more volume')} (this run's list was full)"
            )
        if o.deferred.get("deletions"):
            lines.append(f"- {plural(o.deferred['deletions'], 'more deletion')} (this run's list was full)")
        if o.deferred.get("copies"):
            copies = plural(o.deferred["copies"], "more copy", "more copies")
            lines.append(f"- {copies} (this run's list was full)")
        if o.queued_later:
            later = o.later
            lines.insert(
                0,
                f"- {plural(int(later['rounds']), 'more round')} of this run"
                + (" (a real run; a dry run has none)" if o.dry_run else "")
                + f": snapshots of {plural(int(later['volumes']), 'volume')}, "
                f"{plural(int(later['deletions']), 'deletion')}, "
                f"{plural(int(later['copies']), 'copy', 'copies')}",
            )
        if o.dry_run and not o.undone:
            title = "More work than one invocation: a real run continues in rounds"
        elif continuing:
            title = "Continued in the next round, which starts now (more work than one invocation)"
        else:
            title = "Left for the next run (time ran out, or EC2 kept throttling)"
        digest.section(title, text=[f"{plural(o.left, 'action')} not started:", *lines[:50]])


def _news(digest: Digest, o: Outcome, stale_after: timedelta) -> None:
    """What the backups themselves need from a person: failed snapshots, stale, ended and
    unknown-policy volumes. Each is said in one mail only (the ledger's notes)."""
    region = digest.region
    if o.failed_backups:
        digest.section(
            "Snapshots that ended in ERROR (not usable backups; never counted, deleted by the next run)",
            [_error_item(region, s) for s in o.failed_backups],
            text=[
                "The volume is snapshotted again on the next run; "
                "if it fails again, check the volume's health."
            ],
        )
    stale = o.intent.get("stale", {})
    if stale:
        digest.section(
            f"{_stale_heading(stale_after)} (alarm StaleBackups until fixed)",
            text=[_stale_line(v, t) for v, t in sorted(stale.items())][:50],
        )
    ended = o.intent.get("ended", {})
    if ended:
        kept = o.intent.get("ended_kept", {})
        digest.section(
            "Backups ended: these volumes are no longer backed up (their snapshots are kept)",
            text=[
                f"- volume {v}: {why}; {plural(int(kept.get(v, 0)), 'snapshot')} kept, rotated down to the "
                "newest of its policy, never all deleted"
                for v, why in sorted(ended.items())
            ][:50],
        )
    unknown = o.intent.get("unknown", {})
    if unknown:
        digest.section(
            f"Not backed up: the {OPT_IN_TAG} tag names no policy of this stack",
            text=[f"- {r}: {OPT_IN_TAG}={value}" for r, value in sorted(unknown.items())][:50],
        )


def _work(digest: Digest, o: Outcome, config: Config, owner_key: str) -> None:
    """The sections about what was (or would be) created, deleted and kept."""
    region, now = digest.region, o.now
    if o.snapshots_created:
        digest.section(
            "Snapshots created" if not o.dry_run else "Snapshots that would be created",
            [
                Item(
                    title=_job_title(job, owner_key),
                    details=[
                        f"volumes {', '.join(entry['snapshots'])}"
                        if o.dry_run
                        else ", ".join(f"{v} -> {s}" for v, s in entry["snapshots"].items()),
                        *(
                            ["made by the interrupted first attempt of this run"]
                            if entry.get("earlier")
                            else []
                        ),
                    ],
                    link=_job_link(region, job),
                )
                for job, entry in o.created
            ],
        )
    if o.snapshots_copied or o.intent.get("copies_waiting"):
        waiting = dict(o.intent.get("copies_waiting") or {})
        lines = [
            f"- {o.copies[e['job']].source_id} of volume {o.copies[e['job']].volume_id} -> "
            f"{o.copies[e['job']].region}: {e['snapshot'] or 'would be copied'}"
            for e in o.result.get("copied", [])
        ][:50]
        lines += [
            f"- {n} more to {r}: EBS allows {COPY_CONCURRENCY} copies in flight per destination region; "
            "the next run copies them"
            for r, n in sorted(waiting.items())
        ]
        digest.section("Disaster-recovery copies", text=lines)
    gone = [d.snapshot.id for d in o.decisions("gone")]
    if o.result["deleted"] or gone:
        digest.section(
            "Snapshots deleted" if not o.dry_run else "Snapshots that would be deleted",
            [_snapshot_item(region, d, now, owner_key) for d in o.decisions("deleted")],
            text=[_policy_text(config.policy)]
            + [f"Policy {describe(p)}." for name, p in config.named.items() if name != DEFAULT]
            + (
                [f"{plural(len(gone), 'expired snapshot')} already gone: {', '.join(gone[:20])}."]
                if gone
                else []
            ),
        )
    freeze.section(
        digest,
        o.result,
        "snapshots not deleted" if not o.dry_run else "snapshots that would not be deleted",
        [_snapshot_item(region, d, now, owner_key) for d in o.decisions("frozen")],
        "New snapshots are still made; the first run after the calendar opens deletes what has "
        "expired by then.",
    )
    skipped = [
        *(
            _snapshot_item(region, Decision.from_json(d), now, owner_key)
            for d in o.intent["kept_past_retention"]
        ),
        *(_snapshot_item(region, d, now, owner_key, Reason.HELD.value) for d in o.decisions("held")),
        *(_snapshot_item(region, d, now, owner_key, why) for d, why in o.delete_skipped),
    ]
    if skipped:
        digest.section("Kept although past retention, or not yet usable", skipped)
    if o.intent["opted_out"]:
        digest.section(
            f"Not backed up: opted out on the volume ({OPT_IN_TAG}=false, no, never or off)",
            text=[f"- volume {v} of instance {i}" for v, i in sorted(o.intent["opted_out"].items())][:50],
        )
    digest.section("Backups kept per volume", text=_kept_lines(o))


def _kept_lines(o: Outcome) -> list[str]:
    """Per volume: how many of its snapshots remain, by the reason they are kept."""
    reasons: dict[str, Counter[str]] = {}
    for volume_id, kept in o.intent["kept"].items():
        reasons[volume_id] = Counter(
            {_NOT_YET if name == "DEFERRED" else _SHORT[Reason[name]]: n for name, n in kept.items()}
        )
    gone = {*o.result["deleted"], *o.result["gone"]}
    held = set(o.result["held"])
    for index, d in enumerate(o.deletions):
        if index not in gone:
            label = _SHORT[Reason.HELD] if index in held else _NOT_YET
            reasons.setdefault(d.snapshot.volume_id, Counter())[label] += 1
    if not o.dry_run:
        for entry in o.result["created"]:
            for volume_id in entry["snapshots"]:
                reasons.setdefault(volume_id, Counter())[_SHORT[Reason.PENDING]] += 1
    lines = []
    for volume_id in sorted(reasons)[:50]:
        tally = reasons[volume_id]
        parts = ", ".join(f"{n} {label}" for label, n in sorted(tally.items()))
        lines.append(f"- {volume_id}: {sum(tally.values())} kept ({parts})")
    return lines


_NOT_YET = "not deleted yet"
_SHORT = {
    Reason.UNMANAGED: "not ours",
    Reason.PENDING: "pending",
    Reason.OTHER_STATE: "other state",
    Reason.NEWEST: "newest",
    Reason.YOUNG: "young",
    Reason.DAILY: "daily",
    Reason.WEEKLY: "weekly",
    Reason.MONTHLY: "monthly",
    Reason.YEARLY: "yearly",
    Reason.AMI: "used by an AMI",
    Reason.HELD: "held: no new backup this run",
    Reason.EXPIRED: "expired",
    Reason.FAILED_SNAPSHOT: "error state",
    Reason.UNTAGGED: "ManagedBy tag removed",
    Reason.FAILED_NEW: "error state, reported now",
    Reason.FRESH: "made this period",
    Reason.NO_POLICY: "policy no longer declared",
}
