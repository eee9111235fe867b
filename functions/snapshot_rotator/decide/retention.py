"""Which snapshots to keep and which to delete: a pure function of plain data.

The plan never deletes a snapshot unless all of these hold (PRODUCT.md safety rule 1): it is
in this stack's ledger (``recorded``: the stack wrote its id when it created it; a ``ManagedBy``
tag alone proves nothing) and still carries the stack's ``ManagedBy`` tag (IAM allows deleting
only those), it is not among the newest ``keep_newest`` completed snapshots of its volume (nor
inside any other retention rule of the volume's policy), no AMI uses it, it is not pending,
and this run's new snapshot of its volume did not fail (or was not left undone). Everything
else is kept, each with the reason why.

A snapshot's volume is the ledger's source volume, so copies (whose own VolumeId is
``vol-ffffffff``) are rotated with the backups of the volume they copy. A snapshot that ended
in ``error`` never counts as a backup; it is kept until a mail has said so
(``failed_reported``), then deleted. A backup made in this period (started after
``fresh_since``: the retry window) counts from the next period's run on, as if it were still
pending: so a retry, a second run or the next round of a large run decides exactly what the
first did, whether or not the new snapshots completed in between - running twice does the work
once.

The run decides in two steps, because whether a volume's new snapshot failed is known only
after acting: ``plan_retention`` before acting (nothing held yet), then ``with_holds`` once
the creations are done, which turns the deletions of every held volume into ``HELD`` - the
same decisions as ``plan_retention(..., held_volumes=held)``. ``refusal`` is the last check
the deleter makes before each call.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

MANAGED_BY = "ManagedBy"
DEFAULT_POLICY = "default"  # the policy Backup=true selects
COMPLETED = "completed"
PENDING = "pending"
ERROR = "error"


@dataclass(frozen=True)
class Snapshot:
    """What the plan needs to know about one EBS snapshot."""

    id: str
    volume_id: str
    start_time: datetime  # timezone-aware
    state: str  # pending | completed | error | recoverable | recovering
    tags: Mapping[str, str] = field(default_factory=dict)
    used_by_ami: bool = False
    recorded: bool = False  # in this stack's ledger: the stack created it
    failed_reported: bool = False  # ended in error, and a mail said so
    policy: str = "default"  # the retention policy it was created under (the ledger's)
    description: str = ""  # set by its creator at creation, never changed (not in the intent)
    region: str = ""  # "" for this region; a disaster-recovery copy's destination region

    def ours(self, stack_name: str) -> bool:
        """Created by this stack (its ledger says so) and still tagged as such (IAM needs it)."""
        return self.recorded and self.tags.get(MANAGED_BY) == stack_name

    def as_json(self, tag_keys: Collection[str]) -> dict[str, Any]:
        """Plain JSON for the intent, with only the tags in ``tag_keys`` (ManagedBy, Name, owner)."""
        return {
            "id": self.id,
            "volume_id": self.volume_id,
            "start_time": self.start_time.isoformat(),
            "state": self.state,
            "tags": {k: v for k, v in self.tags.items() if k in tag_keys},
            "used_by_ami": self.used_by_ami,
            "recorded": self.recorded,
            "failed_reported": self.failed_reported,
            "policy": self.policy,
            "region": self.region,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Snapshot:
        return cls(
            id=str(data["id"]),
            volume_id=str(data["volume_id"]),
            start_time=datetime.fromisoformat(str(data["start_time"])),
            state=str(data["state"]),
            tags=dict(data.get("tags") or {}),
            used_by_ami=bool(data.get("used_by_ami")),
            recorded=bool(data.get("recorded")),
            failed_reported=bool(data.get("failed_reported")),
            policy=str(data.get("policy") or "default"),
            region=str(data.get("region") or ""),
        )


@dataclass(frozen=True)
class RetentionPolicy:
    """Keep the newest ``keep_newest`` completed snapshots per volume, everything younger than
    ``keep_days`` days (0 = off), and the newest snapshot of each of the last ``keep_daily``
    days, ``keep_weekly`` ISO weeks, ``keep_monthly`` months and ``keep_yearly`` calendar years
    that have one (0 = off). Years outlive what daily/weekly/monthly cover, for the backups an
    audit asks for long after the fact."""

    keep_newest: int
    keep_days: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0

    def __post_init__(self) -> None:
        if self.keep_newest < 1:
            raise ValueError("keep_newest must be at least 1: the newest backup is never deleted")
        for name in ("keep_days", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")


class Reason(Enum):
    """Why a snapshot is kept or deleted (the value is the text people read)."""

    UNMANAGED = "not in this stack's record of the snapshots it created: never touched, whatever its tags"
    UNTAGGED = (
        "created by this stack, but its ManagedBy tag was removed: kept, not counted "
        "(tag it again to rotate it)"
    )
    PENDING = "still pending: not yet a usable backup, never deleted or counted"
    OTHER_STATE = "in a state other than completed, pending or error: left alone"
    NEWEST = "among the newest completed backups of its volume"
    YOUNG = "younger than the minimum age"
    DAILY = "newest backup of its day (daily tier)"
    WEEKLY = "newest backup of its week (weekly tier)"
    MONTHLY = "newest backup of its month (monthly tier)"
    YEARLY = "newest backup of its year (yearly tier)"
    AMI = "past retention but used by an AMI: kept (deregister the AMI to release it)"
    HELD = "past retention but this run made no new snapshot of its volume: kept until one succeeds"
    EXPIRED = "past retention"
    FAILED_SNAPSHOT = "in error state: not a usable backup"
    FAILED_NEW = "ended in error: not a usable backup; kept until this mail said so, deleted by the next run"
    FRESH = "made in this period: counted as a backup from the next period's run on, never deleted before"
    NO_POLICY = "its volume's retention policy is no longer declared: kept until it is"

    @property
    def deletes(self) -> bool:
        return self in (Reason.EXPIRED, Reason.FAILED_SNAPSHOT)

    @property
    def skipped(self) -> bool:
        """Kept only because a safety rule forbade the deletion (the Skipped metric)."""
        return self in (Reason.AMI, Reason.HELD, Reason.UNTAGGED, Reason.NO_POLICY)


@dataclass(frozen=True)
class Decision:
    snapshot: Snapshot
    reason: Reason

    @property
    def delete(self) -> bool:
        return self.reason.deletes

    def as_json(self, tag_keys: Collection[str]) -> dict[str, Any]:
        return {**self.snapshot.as_json(tag_keys), "reason": self.reason.name}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Decision:
        return cls(Snapshot.from_json(data), Reason[str(data["reason"])])


def _periods(ordered: list[Snapshot], count: int, key: Callable[[datetime], Hashable]) -> set[str]:
    """Ids of the newest snapshot in each of the ``count`` most recent periods that have one."""
    kept: set[str] = set()
    seen: set[Hashable] = set()
    for snap in ordered:
        if len(seen) >= count:
            break
        period = key(snap.start_time)
        if period not in seen:
            seen.add(period)
            kept.add(snap.id)
    return kept


def _day(t: datetime) -> Hashable:
    return t.date()


def _week(t: datetime) -> Hashable:
    iso = t.isocalendar()
    return (iso.year, iso.week)


def _month(t: datetime) -> Hashable:
    return (t.year, t.month)


def _year(t: datetime) -> Hashable:
    """The calendar year (not the ISO year: a yearly backup is "the one of 2025" as people say it)."""
    return t.year


def _newest_first(snapshots: Iterable[Snapshot]) -> list[Snapshot]:
    return sorted(snapshots, key=lambda s: (s.start_time, s.id), reverse=True)


def _retained(snaps: list[Snapshot], policy: RetentionPolicy, now: datetime) -> dict[str, Reason]:
    """The snapshots of one volume that retention keeps, with the first rule that keeps them.
    Only completed snapshots count as backups; the age rule applies to error ones too."""
    ordered = _newest_first(s for s in snaps if s.state == COMPLETED)
    keep: dict[str, Reason] = {}
    for snap in ordered[: policy.keep_newest]:
        keep[snap.id] = Reason.NEWEST
    if policy.keep_days > 0:
        cutoff = now - timedelta(days=policy.keep_days)
        for snap in _newest_first(snaps):
            if snap.start_time > cutoff:
                keep.setdefault(snap.id, Reason.YOUNG)
    for count, key, reason in (
        (policy.keep_daily, _day, Reason.DAILY),
        (policy.keep_weekly, _week, Reason.WEEKLY),
        (policy.keep_monthly, _month, Reason.MONTHLY),
        (policy.keep_yearly, _year, Reason.YEARLY),
    ):
        if count > 0:
            for snap_id in _periods(ordered, count, key):
                keep.setdefault(snap_id, reason)
    return keep


def plan_retention(
    snapshots: Iterable[Snapshot],
    *,
    stack_name: str,
    policy: RetentionPolicy,
    now: datetime,
    held_volumes: Collection[str] = (),
    fresh_since: datetime | None = None,
    policies: Mapping[str, RetentionPolicy] | None = None,
) -> list[Decision]:
    """A keep/delete decision with its reason for every snapshot, newest first per volume.

    ``policy``: the default policy (``Backup=true``); ``policies``: the other named ones. A
    volume's snapshots follow the policy its newest snapshot of this stack was created under.
    ``held_volumes``: volumes whose new snapshot failed in this run (or was not attempted,
    e.g. the time ran out); none of their snapshots is deleted.
    ``fresh_since``: completed snapshots started at or after it are this period's backups
    (FRESH: kept, not counted yet).
    """
    named = {DEFAULT_POLICY: policy, **(policies or {})}
    # A region's copies are rotated apart from the backups they copy (each region keeps the policy)
    by_volume: dict[tuple[str, str], list[Snapshot]] = defaultdict(list)
    newest: dict[tuple[str, str], Snapshot] = {}
    decisions: list[Decision] = []
    for snap in snapshots:
        if not snap.recorded:
            decisions.append(Decision(snap, Reason.UNMANAGED))
            continue
        if not snap.ours(stack_name):
            decisions.append(Decision(snap, Reason.UNTAGGED))
            continue
        group = (snap.region, snap.volume_id)
        best = newest.get(group)
        if best is None or (snap.start_time, snap.id) > (best.start_time, best.id):
            newest[group] = snap
        if snap.state == PENDING:
            decisions.append(Decision(snap, Reason.PENDING))
        elif snap.state == COMPLETED and fresh_since is not None and snap.start_time >= fresh_since:
            decisions.append(Decision(snap, Reason.FRESH))
        elif snap.state not in (COMPLETED, ERROR):
            decisions.append(Decision(snap, Reason.OTHER_STATE))
        else:
            by_volume[group].append(snap)
    for (region, volume_id), snaps in by_volume.items():
        volume_policy = named.get(newest[region, volume_id].policy)
        retained = _retained(snaps, volume_policy, now) if volume_policy is not None else {}
        for snap in _newest_first(snaps):
            if snap.id in retained:
                reason = retained[snap.id]
            elif snap.state == ERROR and not snap.failed_reported:
                reason = Reason.FAILED_NEW
            elif volume_policy is None:
                reason = Reason.NO_POLICY
            elif snap.used_by_ami:
                reason = Reason.AMI
            elif volume_id in held_volumes:
                reason = Reason.HELD
            elif snap.state == ERROR:
                reason = Reason.FAILED_SNAPSHOT
            else:
                reason = Reason.EXPIRED
            decisions.append(Decision(snap, reason))
    return decisions


def with_holds(decisions: Iterable[Decision], held_volumes: Collection[str]) -> list[Decision]:
    """The decisions once the run knows which volumes got no new snapshot: every deletion of a
    held volume becomes ``HELD`` (kept). Equal to ``plan_retention(..., held_volumes=held)``."""
    return [
        replace(d, reason=Reason.HELD) if d.delete and d.snapshot.volume_id in held_volumes else d
        for d in decisions
    ]


def refusal(decision: Decision, stack_name: str) -> str | None:
    """Why this deletion must not be made (safety rule 1), or None when it may: it must be a
    deletion, of a snapshot of this stack (in its ledger and still tagged), completed or in
    error (never pending; an error one only once a mail said so), no AMI's."""
    snap = decision.snapshot
    if not decision.delete:
        return f"kept: {decision.reason.value}"
    if not snap.recorded:
        return Reason.UNMANAGED.value
    if not snap.ours(stack_name):
        return Reason.UNTAGGED.value
    if snap.used_by_ami:
        return Reason.AMI.value
    if snap.state not in (COMPLETED, ERROR):
        return f"in state {snap.state}: not deleted"
    if snap.state == ERROR and not snap.failed_reported:
        return Reason.FAILED_NEW.value
    return None
