"""Which snapshots to keep and which to delete: a pure function of plain data.

The plan never deletes a snapshot unless all of these hold (PRODUCT.md safety rule 1):
it carries this stack's ``ManagedBy`` tag, it is not among the newest ``keep_newest``
completed snapshots of its volume (nor inside any other retention rule), no AMI uses it,
it is not pending, and this run's new snapshot of its volume did not fail (or was not left
undone). Everything else is kept, each with the reason why.

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

    def managed_by(self, stack_name: str) -> bool:
        return self.tags.get(MANAGED_BY) == stack_name

    def as_json(self, tag_keys: Collection[str]) -> dict[str, Any]:
        """Plain JSON for the intent, with only the tags in ``tag_keys`` (ManagedBy, Name, owner)."""
        return {
            "id": self.id,
            "volume_id": self.volume_id,
            "start_time": self.start_time.isoformat(),
            "state": self.state,
            "tags": {k: v for k, v in self.tags.items() if k in tag_keys},
            "used_by_ami": self.used_by_ami,
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
        )


@dataclass(frozen=True)
class RetentionPolicy:
    """Keep the newest ``keep_newest`` completed snapshots per volume, everything younger than
    ``keep_days`` days (0 = off), and the newest snapshot of each of the last ``keep_daily``
    days, ``keep_weekly`` ISO weeks and ``keep_monthly`` months that have one (0 = off)."""

    keep_newest: int
    keep_days: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0

    def __post_init__(self) -> None:
        if self.keep_newest < 1:
            raise ValueError("keep_newest must be at least 1: the newest backup is never deleted")
        for name in ("keep_days", "keep_daily", "keep_weekly", "keep_monthly"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")


class Reason(Enum):
    """Why a snapshot is kept or deleted (the value is the text people read)."""

    UNMANAGED = "not created by this stack (no matching ManagedBy tag): never touched"
    PENDING = "still pending: not yet a usable backup, never deleted or counted"
    OTHER_STATE = "in a state other than completed, pending or error: left alone"
    NEWEST = "among the newest completed backups of its volume"
    YOUNG = "younger than the minimum age"
    DAILY = "newest backup of its day (daily tier)"
    WEEKLY = "newest backup of its week (weekly tier)"
    MONTHLY = "newest backup of its month (monthly tier)"
    AMI = "past retention but used by an AMI: kept (deregister the AMI to release it)"
    HELD = "past retention but this run made no new snapshot of its volume: kept until one succeeds"
    EXPIRED = "past retention"
    FAILED_SNAPSHOT = "in error state: not a usable backup"

    @property
    def deletes(self) -> bool:
        return self in (Reason.EXPIRED, Reason.FAILED_SNAPSHOT)

    @property
    def skipped(self) -> bool:
        """Kept only because a safety rule forbade the deletion (the Skipped metric)."""
        return self in (Reason.AMI, Reason.HELD)


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
) -> list[Decision]:
    """A keep/delete decision with its reason for every snapshot, newest first per volume.

    ``held_volumes``: volumes whose new snapshot failed in this run (or was not attempted,
    e.g. the time ran out); none of their snapshots is deleted.
    """
    by_volume: dict[str, list[Snapshot]] = defaultdict(list)
    decisions: list[Decision] = []
    for snap in snapshots:
        if not snap.managed_by(stack_name):
            decisions.append(Decision(snap, Reason.UNMANAGED))
        elif snap.state == PENDING:
            decisions.append(Decision(snap, Reason.PENDING))
        elif snap.state not in (COMPLETED, ERROR):
            decisions.append(Decision(snap, Reason.OTHER_STATE))
        else:
            by_volume[snap.volume_id].append(snap)
    for volume_id, snaps in by_volume.items():
        retained = _retained(snaps, policy, now)
        for snap in _newest_first(snaps):
            if snap.id in retained:
                reason = retained[snap.id]
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
    deletion, of a snapshot of this stack, completed or in error (never pending), no AMI's."""
    snap = decision.snapshot
    if not decision.delete:
        return f"kept: {decision.reason.value}"
    if not snap.managed_by(stack_name):
        return Reason.UNMANAGED.value
    if snap.used_by_ami:
        return Reason.AMI.value
    if snap.state not in (COMPLETED, ERROR):
        return f"in state {snap.state}: not deleted"
    return None
