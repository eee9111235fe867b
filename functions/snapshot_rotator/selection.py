"""Which volumes to snapshot in this run: a pure function of plain data.

Opt-in is the ``Backup=true`` tag (value case-insensitive) on a volume, or on an instance,
which then means all its attached EBS volumes, snapshotted together and crash-consistent
with one ``CreateSnapshots`` call. A volume that is opted in both ways is done with its
instance.

Retries are harmless (PRODUCT.md rule 4): a volume that already has a pending or completed
snapshot of this stack started at most ``window`` before the run (half the schedule period,
12 hours for the default daily schedule) is not snapshotted again. Half a period is longer
than any retry of the same run (Lambda retries within the event's maximum age of one hour)
and shorter than the gap to the next scheduled run, so it never swallows a real run, even
when a run straddles midnight.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from autopilot.tags import clean_value
from snapshot_rotator.retention import COMPLETED, MANAGED_BY, PENDING, Snapshot

OPT_IN_TAG = "Backup"
MAX_TAGS = 50  # EC2 allows 50 tags per resource
SOURCE_VOLUME_TAG = "SourceVolumeId"
SOURCE_INSTANCE_TAG = "SourceInstanceId"


def opted_in(tags: Mapping[str, str]) -> bool:
    return tags.get(OPT_IN_TAG, "").strip().lower() == "true"


@dataclass(frozen=True)
class Volume:
    id: str
    tags: Mapping[str, str] = field(default_factory=dict)
    instance_id: str | None = None


@dataclass(frozen=True)
class Instance:
    id: str
    tags: Mapping[str, str] = field(default_factory=dict)
    root_volume_id: str | None = None
    volume_ids: tuple[str, ...] = ()  # every attached EBS volume, root included


@dataclass(frozen=True)
class CreateJob:
    """One create call: CreateSnapshots for an instance, CreateSnapshot for a volume."""

    kind: Literal["instance", "volume"]
    resource_id: str
    volume_ids: tuple[str, ...]  # the volumes this call snapshots
    tags: Mapping[str, str]  # set on the new snapshot(s) at creation
    description: str
    name: str  # the resource's Name tag (for the mail), or ""
    owner: str  # the resource's Owner tag, or ""
    exclude_boot: bool = False
    exclude_data_volume_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class CreationPlan:
    jobs: list[CreateJob]
    # opted-in volume -> the recent snapshot of this stack that makes a new one unnecessary
    already_done: dict[str, str]

    @property
    def volume_count(self) -> int:
        return sum(len(j.volume_ids) for j in self.jobs) + len(self.already_done)


def recent_snapshots(
    snapshots: Iterable[Snapshot], *, stack_name: str, now: datetime, window: timedelta
) -> dict[str, str]:
    """Volume id -> id of its newest pending or completed snapshot of this stack started in the window."""
    found: dict[str, Snapshot] = {}
    for snap in snapshots:
        if (
            snap.managed_by(stack_name)
            and snap.state in (PENDING, COMPLETED)
            and snap.start_time >= now - window
        ):
            best = found.get(snap.volume_id)
            if best is None or snap.start_time > best.start_time:
                found[snap.volume_id] = snap
    return {vol: snap.id for vol, snap in found.items()}


def _label(tags: Mapping[str, str], fallback: str) -> str:
    return tags.get("Name", "").strip() or fallback


def _own_tags(stack_name: str, name: str, now: datetime, **sources: str) -> dict[str, str]:
    tags = {MANAGED_BY: stack_name, "Name": clean_value(f"{name} backup {now:%Y-%m-%d %H:%M}")}
    tags.update({k: v for k, v in sources.items() if v})
    return tags


def _with_copied(own: dict[str, str], source: Mapping[str, str]) -> dict[str, str]:
    """The source's tags (not aws:*), then ours on top, at most 50 in all (ours always fit)."""
    copied = {k: v for k, v in source.items() if not k.lower().startswith("aws:") and k not in own}
    room = MAX_TAGS - len(own)
    return {**dict(list(copied.items())[: max(room, 0)]), **own}


def plan_creation(
    instances: Iterable[Instance],
    volumes: Iterable[Volume],
    *,
    recent: Mapping[str, str],
    stack_name: str,
    now: datetime,
) -> CreationPlan:
    """One job per opted-in instance (its volumes not yet done) and per opted-in loose volume."""
    jobs: list[CreateJob] = []
    already: dict[str, str] = {}
    covered: set[str] = set()
    for inst in sorted(instances, key=lambda i: i.id):
        if not opted_in(inst.tags) or not inst.volume_ids:
            continue
        covered.update(inst.volume_ids)
        done = {v for v in inst.volume_ids if v in recent}
        already.update({v: recent[v] for v in done})
        todo = tuple(v for v in inst.volume_ids if v not in done)
        if not todo:
            continue
        name = _label(inst.tags, inst.id)
        jobs.append(
            CreateJob(
                kind="instance",
                resource_id=inst.id,
                volume_ids=todo,
                # Same tags on every snapshot of the call; each volume's own tags are copied by
                # CopyTagsFromSource=volume, and each snapshot's VolumeId names its volume.
                tags=_own_tags(stack_name, name, now, **{SOURCE_INSTANCE_TAG: inst.id}),
                description=clean_value(f"{stack_name}: backup of instance {inst.id} ({name})"),
                name=inst.tags.get("Name", ""),
                owner=inst.tags.get("Owner", ""),
                exclude_boot=inst.root_volume_id is not None and inst.root_volume_id in done,
                exclude_data_volume_ids=tuple(sorted(v for v in done if v != inst.root_volume_id)),
            )
        )
    for vol in sorted(volumes, key=lambda v: v.id):
        if not opted_in(vol.tags) or vol.id in covered:
            continue
        if vol.id in recent:
            already[vol.id] = recent[vol.id]
            continue
        name = _label(vol.tags, vol.id)
        own = _own_tags(
            stack_name, name, now, **{SOURCE_VOLUME_TAG: vol.id, SOURCE_INSTANCE_TAG: vol.instance_id or ""}
        )
        jobs.append(
            CreateJob(
                kind="volume",
                resource_id=vol.id,
                volume_ids=(vol.id,),
                tags=_with_copied(own, vol.tags),
                description=clean_value(f"{stack_name}: backup of volume {vol.id} ({name})"),
                name=vol.tags.get("Name", ""),
                owner=vol.tags.get("Owner", ""),
            )
        )
    return CreationPlan(jobs=jobs, already_done=already)
