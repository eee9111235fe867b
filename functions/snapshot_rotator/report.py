"""What a run tells people: the digest mail (only when there is something to say) and metrics."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

from autopilot import console
from autopilot.notify import Digest, Item, Severity, plural
from snapshot_rotator.config import RotatorConfig
from snapshot_rotator.retention import Decision, Reason, Snapshot
from snapshot_rotator.rotate import RunReport
from snapshot_rotator.selection import CreateJob

AUTOMATION = "snapshot_rotator"


def _age(snap: Snapshot, now: datetime) -> str:
    days = (now - snap.start_time).total_seconds() / 86400
    return f"started {snap.start_time:%Y-%m-%d %H:%M} UTC ({days:.0f} days old)"


def _who(name: str, owner: str) -> str:
    parts = [f"Name {name}" if name else "", f"Owner {owner}" if owner else ""]
    text = ", ".join(p for p in parts if p)
    return f" ({text})" if text else ""


def _job_link(region: str, job: CreateJob) -> str:
    if job.kind == "instance":
        return console.ec2_instance(region, job.resource_id)
    return console.ec2_volume(region, job.resource_id)


def _job_title(job: CreateJob) -> str:
    what = "instance" if job.kind == "instance" else "volume"
    return f"{what} {job.resource_id}{_who(job.name, job.owner)}"


def _snapshot_item(region: str, decision: Decision, now: datetime, why: str | None = None) -> Item:
    snap = decision.snapshot
    return Item(
        title=f"{snap.id} of volume {snap.volume_id}"
        + _who(snap.tags.get("Name", ""), snap.tags.get("Owner", "")),
        details=[_age(snap, now), why or decision.reason.value],
        link=console.ec2_snapshot(region, snap.id),
    )


def _policy_text(config: RotatorConfig) -> str:
    p = config.policy
    rules = [f"the newest {p.keep_newest} completed"]
    if p.keep_days:
        rules.append(f"everything younger than {p.keep_days} days")
    tiers = [(p.keep_daily, "daily"), (p.keep_weekly, "weekly"), (p.keep_monthly, "monthly")]
    rules += [f"{n} {label}" for n, label in tiers if n]
    return "Retention per volume: " + ", ".join(rules) + "."


def build_digest(config: RotatorConfig, report: RunReport) -> tuple[Digest, str, str, Severity] | None:
    """The mail for this run (digest, subject, summary, severity), or None when there is nothing to say."""
    common = config.common
    region = common.region
    created = report.snapshots_created
    deleted = len(report.deleted)
    failures = report.create_failures or report.delete_failures or report.left
    wants_summary = (config.summary_mail or common.dry_run) and (created or deleted)
    if not failures and not wants_summary:
        return None

    digest = Digest(AUTOMATION, common.stack_name, region, dry_run=common.dry_run)
    if report.create_failures:
        digest.section(
            "Backups that FAILED (all older snapshots of these volumes are kept)",
            [
                Item(
                    title=_job_title(f.job),
                    details=[f"volumes {', '.join(f.job.volume_ids)}", f"{f.code}: {f.message[:300]}"],
                    link=_job_link(region, f.job),
                )
                for f in report.create_failures
            ],
        )
    if report.delete_failures:
        digest.section(
            "Deletions that failed (the snapshots still exist)",
            [
                _snapshot_item(region, f.decision, report.now, f"{f.code}: {f.message[:300]}")
                for f in report.delete_failures
            ],
        )
    if report.left:
        lines = [f"- snapshot of {_job_title(j)}" for j in report.jobs_left]
        lines += [f"- delete {d.snapshot.id} of volume {d.snapshot.volume_id}" for d in report.deletes_left]
        digest.section(
            "Left for the next run (time ran out, or EC2 kept throttling)",
            text=[f"{plural(report.left, 'action')} not started:", *lines[:50]],
        )
    if created:
        digest.section(
            "Snapshots created" if not common.dry_run else "Snapshots that would be created",
            [
                Item(
                    title=_job_title(job),
                    details=[
                        ", ".join(f"{s.volume_id} -> {s.id}" for s in snaps)
                        if snaps
                        else f"volumes {', '.join(job.volume_ids)}",
                    ],
                    link=_job_link(region, job),
                )
                for job, snaps in report.created
            ],
        )
    if deleted:
        digest.section(
            "Snapshots deleted" if not common.dry_run else "Snapshots that would be deleted",
            [_snapshot_item(region, d, report.now) for d in report.deleted],
            text=[_policy_text(config)],
        )
    late = {d.snapshot.id: why for d, why in report.delete_skipped}
    skipped = report.skipped
    if skipped:
        digest.section(
            "Kept although past retention, or not yet usable",
            [_snapshot_item(region, d, report.now, late.get(d.snapshot.id)) for d in skipped],
        )
    digest.section("Backups kept per volume", text=_kept_lines(report))
    digest.advice = [
        "Opt a volume in with the tag Backup=true on the volume, or on its instance for all its volumes "
        "(snapshotted together, crash-consistent); remove the tag to stop new backups.",
        f"Only snapshots tagged ManagedBy={common.stack_name} are ever deleted; the newest "
        f"{config.policy.keep_newest} completed ones of each volume are always kept.",
        "Restore: EC2 console > Snapshots > select the snapshot > Actions > Create volume from snapshot, "
        "then attach it to an instance in the same Availability Zone.",
    ]
    if report.create_failures or report.left:
        digest.advice.insert(
            0,
            "A failed or skipped volume is tried again on the next run; "
            "ConcurrentSnapshotLimitExceeded means that volume already has its maximum of pending "
            "snapshots (5, or 1 for st1/sc1): it clears once they complete.",
        )

    if report.create_failures:
        volumes = sum(len(f.job.volume_ids) for f in report.create_failures)
        subject = f"Backup FAILED for {plural(volumes, 'volume')} ({created} created, {deleted} deleted)"
        severity: Severity = "critical"
    elif failures:
        subject = (
            f"Backups incomplete: {report.failed} failed, {report.left} left "
            f"({created} created, {deleted} deleted)"
        )
        severity = "warning"
    elif digest.dry_run:
        subject = f"{plural(created, 'snapshot')} would be created, {deleted} deleted"
        severity = "info"
    else:
        subject = f"{plural(created, 'snapshot')} created, {deleted} deleted"
        severity = "info"
    summary = (
        f"Backup run at {report.now:%Y-%m-%d %H:%M} UTC: "
        f"{plural(report.volumes_checked, 'opted-in volume')} checked, "
        f"{plural(created, 'snapshot')} {'would be ' if digest.dry_run else ''}created, "
        f"{len(report.already_done)} already done this period, "
        f"{deleted} {'would be ' if digest.dry_run else ''}deleted past retention, {report.failed} failed."
    )
    return digest, subject, summary, severity


def _kept_lines(report: RunReport) -> list[str]:
    """Per volume: how many of its snapshots remain, by the reason they are kept."""
    deleted = {d.snapshot.id for d in report.deleted}
    reasons: dict[str, Counter[str]] = defaultdict(Counter)
    for d in report.decisions:
        if d.snapshot.id not in deleted:
            reasons[d.snapshot.volume_id]["not deleted yet" if d.delete else _SHORT[d.reason]] += 1
    lines = []
    for volume_id in sorted(reasons)[:50]:
        counts = reasons[volume_id]
        parts = ", ".join(f"{n} {label}" for label, n in sorted(counts.items()))
        lines.append(f"- {volume_id}: {sum(counts.values())} kept ({parts})")
    return lines


_SHORT = {
    Reason.UNMANAGED: "not ours",
    Reason.PENDING: "pending",
    Reason.OTHER_STATE: "other state",
    Reason.NEWEST: "newest",
    Reason.YOUNG: "young",
    Reason.DAILY: "daily",
    Reason.WEEKLY: "weekly",
    Reason.MONTHLY: "monthly",
    Reason.AMI: "used by an AMI",
    Reason.HELD: "held: no new backup this run",
    Reason.EXPIRED: "expired",
    Reason.FAILED_SNAPSHOT: "error state",
}


def send(config: RotatorConfig, report: RunReport) -> str | None:
    mail = build_digest(config, report)
    if mail is None:
        return None
    digest, subject, summary, severity = mail
    return digest.send(config.common.topic_arn, subject, summary, severity)


def add_metrics(metrics: Metrics, report: RunReport) -> None:
    created = 0 if report.dry_run else report.snapshots_created
    deleted = 0 if report.dry_run else len(report.deleted)
    metrics.add_metric("Checked", MetricUnit.Count, report.volumes_checked)
    metrics.add_metric("Changed", MetricUnit.Count, created + deleted)
    metrics.add_metric("Skipped", MetricUnit.Count, len(report.skipped))
    metrics.add_metric("Failed", MetricUnit.Count, report.failed)
    metrics.add_metric("SnapshotsCreated", MetricUnit.Count, created)
    metrics.add_metric("SnapshotsDeleted", MetricUnit.Count, deleted)
    metrics.add_metric("LeftForNextRun", MetricUnit.Count, report.left)
