"""One run: gather, decide (selection + retention plans), act, and report what happened.

Order matters for safety: snapshots are created first, so that retention knows which
volumes got their new backup in this run; a volume whose new snapshot failed (or was not
attempted because time ran out) keeps all its snapshots.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from autopilot.aws import error_code, is_transient
from autopilot.runtime import Deadline
from snapshot_rotator import ec2
from snapshot_rotator.config import RotatorConfig
from snapshot_rotator.retention import PENDING, Decision, Reason, Snapshot, plan_retention
from snapshot_rotator.selection import CreateJob, plan_creation, recent_snapshots

logger = Logger(child=True)

# Limits of one volume: its pending-snapshot limit (5 for gp2/gp3/io1/io2/magnetic, 1 for
# st1/sc1) and its snapshot rate. That volume fails, the others go on. Every other transient
# code (throttling that outlived botocore's retries) stops starting new work for this run.
PER_VOLUME_LIMITS = frozenset({"ConcurrentSnapshotLimitExceeded", "SnapshotCreationPerVolumeRateExceeded"})

# DeleteSnapshot errors that mean "this snapshot is not ours to delete right now".
IN_USE = "InvalidSnapshot.InUse"
NOT_FOUND = "InvalidSnapshot.NotFound"


@dataclass(frozen=True)
class CreateFailure:
    job: CreateJob
    code: str
    message: str


@dataclass(frozen=True)
class DeleteFailure:
    decision: Decision
    code: str
    message: str


@dataclass
class RunReport:
    """Everything one run did or would do (dry-run), for the mail, the metrics and the log."""

    now: datetime
    dry_run: bool
    volumes_checked: int = 0
    created: list[tuple[CreateJob, list[Snapshot]]] = field(default_factory=list)
    already_done: dict[str, str] = field(default_factory=dict)
    create_failures: list[CreateFailure] = field(default_factory=list)
    jobs_left: list[CreateJob] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    deleted: list[Decision] = field(default_factory=list)
    delete_skipped: list[tuple[Decision, str]] = field(default_factory=list)  # (decision, why)
    delete_failures: list[DeleteFailure] = field(default_factory=list)
    deletes_left: list[Decision] = field(default_factory=list)

    @property
    def snapshots_created(self) -> int:
        return sum(len(job.volume_ids) if self.dry_run else len(snaps) for job, snaps in self.created)

    @property
    def skipped(self) -> list[Decision]:
        """Expired but kept by a safety rule (AMI, failed volume), and pending from earlier runs."""
        new_ids = {s.id for _, snaps in self.created for s in snaps}
        return [
            d
            for d in self.decisions
            if d.reason.skipped or (d.reason is Reason.PENDING and d.snapshot.id not in new_ids)
        ] + [d for d, _ in self.delete_skipped]

    @property
    def failed(self) -> int:
        return sum(len(f.job.volume_ids) for f in self.create_failures) + len(self.delete_failures)

    @property
    def left(self) -> int:
        return sum(len(j.volume_ids) for j in self.jobs_left) + len(self.deletes_left)

    def summary(self) -> dict[str, object]:
        return {
            "status": "done" if not self.left else "partial",
            "dry_run": self.dry_run,
            "volumes_checked": self.volumes_checked,
            "snapshots_created": self.snapshots_created,
            "already_snapshotted": len(self.already_done),
            "snapshots_deleted": len(self.deleted),
            "skipped": len(self.skipped),
            "failed": self.failed,
            "left_for_next_run": self.left,
        }


def _create_all(jobs: list[CreateJob], report: RunReport, deadline: Deadline) -> None:
    for index, job in enumerate(jobs):
        if deadline.expired():
            report.jobs_left = jobs[index:]
            logger.warning(
                "time is up: snapshots left for the next run", extra={"jobs_left": len(jobs) - index}
            )
            return
        if report.dry_run:
            report.created.append((job, []))
            logger.info("would create snapshot", extra={"job": job.resource_id, "volumes": job.volume_ids})
            continue
        try:
            snaps = ec2.create(job)
        except ClientError as err:
            report.create_failures.append(CreateFailure(job, error_code(err), str(err)))
            logger.error(
                "snapshot failed",
                extra={"resource": job.resource_id, "volumes": job.volume_ids, "code": error_code(err)},
            )
            if is_transient(err) and error_code(err) not in PER_VOLUME_LIMITS:
                # Throttling that outlived botocore's retries: more calls now would fail the
                # same way. The rest waits for the next run.
                report.jobs_left = jobs[index + 1 :]
                return
            continue
        report.created.append((job, snaps))
        logger.info(
            "created snapshot",
            extra={"resource": job.resource_id, "snapshots": {s.volume_id: s.id for s in snaps}},
        )


def _delete_all(to_delete: list[Decision], report: RunReport, deadline: Deadline, stack: str) -> None:
    for index, decision in enumerate(to_delete):
        snap = decision.snapshot
        if not decision.delete or not snap.managed_by(stack) or snap.used_by_ami:
            # The plan never produces this; refuse loudly rather than lose a backup.
            raise RuntimeError(f"refusing to delete {snap.id}: {decision.reason.name}")
        if deadline.expired():
            report.deletes_left = to_delete[index:]
            logger.warning(
                "time is up: deletions left for the next run", extra={"left": len(to_delete) - index}
            )
            return
        if report.dry_run:
            report.deleted.append(decision)
            continue
        try:
            ec2.delete(snap.id)
        except ClientError as err:
            code = error_code(err)
            if code == IN_USE:
                # An AMI registered after we listed them: the safety rule holds, skip it.
                report.delete_skipped.append((decision, "used by an AMI registered during this run"))
                continue
            if code == NOT_FOUND:
                logger.info("snapshot already gone", extra={"snapshot": snap.id})
                continue
            report.delete_failures.append(DeleteFailure(decision, code, str(err)))
            logger.error("delete failed", extra={"snapshot": snap.id, "code": code})
            if is_transient(err):
                report.deletes_left = to_delete[index + 1 :]
                return
            continue
        report.deleted.append(decision)
        logger.info(
            "deleted snapshot",
            extra={"snapshot": snap.id, "volume": snap.volume_id, "started": snap.start_time.isoformat()},
        )


def execute(config: RotatorConfig, now: datetime, deadline: Deadline) -> RunReport:
    """Snapshot the opted-in volumes, then apply retention; ``now`` is the clock of the run."""
    stack = config.common.stack_name
    report = RunReport(now=now, dry_run=config.common.dry_run)

    ami_snapshots = ec2.ami_snapshot_ids()
    existing = list(ec2.managed_snapshots(stack, ami_snapshots))
    recent = recent_snapshots(existing, stack_name=stack, now=now, window=config.retry_window)
    plan = plan_creation(
        ec2.opted_in_instances(), ec2.opted_in_volumes(), recent=recent, stack_name=stack, now=now
    )
    report.volumes_checked = plan.volume_count
    report.already_done = dict(plan.already_done)
    for volume_id, snap_id in plan.already_done.items():
        logger.info("already snapshotted this period", extra={"volume": volume_id, "snapshot": snap_id})

    _create_all(plan.jobs, report, deadline)

    held = {v for f in report.create_failures for v in f.job.volume_ids}
    held |= {v for job in report.jobs_left for v in job.volume_ids}
    if not report.dry_run:
        # A volume the call was meant to snapshot but returned no snapshot for (e.g. detached
        # in between) got no new backup either.
        held |= {
            v for job, snaps in report.created for v in set(job.volume_ids) - {s.volume_id for s in snaps}
        }
    # This run's snapshots are never counted as retained backups yet, whatever state the API
    # answered (EC2 says pending): so dry-run and real runs decide the same.
    new_snapshots = [replace(s, state=PENDING) for _, snaps in report.created for s in snaps]
    report.decisions = plan_retention(
        existing + new_snapshots, stack_name=stack, policy=config.policy, now=now, held_volumes=held
    )
    for decision in report.decisions:
        if decision.reason.skipped:
            logger.info(
                "kept past retention",
                extra={"snapshot": decision.snapshot.id, "reason": decision.reason.value},
            )
    _delete_all([d for d in report.decisions if d.delete], report, deadline, stack)
    return report
