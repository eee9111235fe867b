"""Which volumes to snapshot in this run: a pure function of plain data.

Opt-in is the ``Backup=true`` tag (the default policy) or ``Backup=<policy>`` (a named
retention policy of this stack; values case-insensitive) on a volume, or on an instance, which
then means all its attached EBS volumes, snapshotted together and crash-consistent with one
``CreateSnapshots`` call. A volume that is opted in both ways is done with its instance, under
its own tag's policy. A value that names no policy of this stack backs nothing up and is
reported (``unknown``: a typo must not look like a backup). A volume tagged ``Backup`` with an
opt-out word (``false``, ``no``, ``never``, ``off``: :data:`autopilot.tags.OPT_OUT_VALUES`) is
left out of its instance's backup (``ExcludeBootVolume`` / ``ExcludeDataVolumeIds``): the
volume's own tag wins.

Retries are harmless (PRODUCT.md rule 4): a volume that already has a pending or completed
snapshot of this stack (in its ledger: a tagged snapshot proves nothing) started at most
``window`` before the run (half the schedule period, 12 hours for the default daily schedule)
is not snapshotted again. Half a period is longer than any retry of the same run (Lambda
retries within the event's maximum age of one hour) and shorter than the gap to the next
scheduled run, so it never swallows a real run, even when a run straddles midnight. The same
rule, applied again before creating when a run is finished by a later invocation
(``remaining``), keeps that from snapshotting a volume twice.

Owners: every new snapshot carries its source's owner under the product-wide owner tag key
(``OwnerTagKey``): the volume's own value, else its instance's.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from autopilot.tags import clean_value, opted_out
from snapshot_rotator.decide.policies import DEFAULT, read_backup_tag
from snapshot_rotator.decide.retention import COMPLETED, MANAGED_BY, PENDING, Snapshot

OPT_IN_TAG = "Backup"
MAX_TAGS = 50  # EC2 allows 50 tags per resource
SOURCE_VOLUME_TAG = "SourceVolumeId"
SOURCE_INSTANCE_TAG = "SourceInstanceId"


def policy_of(tags: Mapping[str, str], policies: Collection[str] = (DEFAULT,)) -> str | None:
    """The name of the policy the ``Backup`` tag selects, or None (absent, opted out, unknown)."""
    return read_backup_tag(tags.get(OPT_IN_TAG), policies).policy


def opted_in(tags: Mapping[str, str], policies: Collection[str] = (DEFAULT,)) -> bool:
    return policy_of(tags, policies) is not None


def unknown_value(tags: Mapping[str, str], policies: Collection[str]) -> str | None:
    """The ``Backup`` tag's value when it names no policy of this stack (nor opts out)."""
    tag = read_backup_tag(tags.get(OPT_IN_TAG), policies)
    return tag.raw if tag.kind == "unknown" else None


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
    owner: str  # the owner (owner tag key) of the resource, or ""
    exclude_boot: bool = False
    exclude_data_volume_ids: tuple[str, ...] = ()
    root_volume_id: str | None = None  # instance jobs: the boot volume
    policies: Mapping[str, str] = field(default_factory=dict)  # volume -> retention policy name

    def policy(self, volume_id: str) -> str:
        return self.policies.get(volume_id, DEFAULT)

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "resource_id": self.resource_id,
            "volume_ids": list(self.volume_ids),
            "tags": dict(self.tags),
            "description": self.description,
            "name": self.name,
            "owner": self.owner,
            "exclude_boot": self.exclude_boot,
            "exclude_data_volume_ids": list(self.exclude_data_volume_ids),
            "root_volume_id": self.root_volume_id,
            "policies": dict(self.policies),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CreateJob:
        kind: Literal["instance", "volume"] = "instance" if data["kind"] == "instance" else "volume"
        return cls(
            kind=kind,
            resource_id=str(data["resource_id"]),
            volume_ids=tuple(str(v) for v in data["volume_ids"]),
            tags={str(k): str(v) for k, v in dict(data["tags"]).items()},
            description=str(data["description"]),
            name=str(data.get("name", "")),
            owner=str(data.get("owner", "")),
            exclude_boot=bool(data.get("exclude_boot")),
            exclude_data_volume_ids=tuple(str(v) for v in data.get("exclude_data_volume_ids") or ()),
            root_volume_id=data.get("root_volume_id"),
            policies={str(k): str(v) for k, v in dict(data.get("policies") or {}).items()},
        )


@dataclass(frozen=True)
class CreationPlan:
    jobs: list[CreateJob]
    # opted-in volume -> the recent snapshot of this stack that makes a new one unnecessary
    already_done: dict[str, str]
    # volume -> its instance: opted out on the volume, so not backed up with its instance
    opted_out: dict[str, str] = field(default_factory=dict)
    # instance or volume -> its Backup value that names no policy of this stack
    unknown: dict[str, str] = field(default_factory=dict)

    @property
    def volume_count(self) -> int:
        return sum(len(j.volume_ids) for j in self.jobs) + len(self.already_done)


def recent_snapshots(
    snapshots: Iterable[Snapshot], *, stack_name: str, now: datetime, window: timedelta
) -> dict[str, str]:
    """Volume id -> id of its newest pending or completed snapshot of this stack started in the window."""
    found: dict[str, Snapshot] = {}
    for snap in snapshots:
        # a copy in another region (``region``) is not this region's backup
        local = snap.ours(stack_name) and not snap.region
        if local and snap.state in (PENDING, COMPLETED) and snap.start_time >= now - window:
            best = found.get(snap.volume_id)
            if best is None or snap.start_time > best.start_time:
                found[snap.volume_id] = snap
    return {vol: snap.id for vol, snap in found.items()}


def _label(tags: Mapping[str, str], fallback: str) -> str:
    return tags.get("Name", "").strip() or fallback


def _own_tags(stack_name: str, name: str, now: datetime, **sources: str) -> dict[str, str]:
    """ManagedBy and Name (never overridden), and the non-empty ``sources`` tags."""
    tags = {k: v for k, v in sources.items() if v}
    tags.update({MANAGED_BY: stack_name, "Name": clean_value(f"{name} backup {now:%Y-%m-%d %H:%M}")})
    return tags


def _with_copied(own: dict[str, str], source: Mapping[str, str]) -> dict[str, str]:
    """The source's tags (not aws:*), then ours on top, at most 50 in all (ours always fit)."""
    copied = {k: v for k, v in source.items() if not k.lower().startswith("aws:") and k not in own}
    room = MAX_TAGS - len(own)
    return {**dict(list(copied.items())[: max(room, 0)]), **own}


def _excluded(inst: Instance, left_out: Collection[str]) -> dict[str, Any]:
    """CreateSnapshots' exclusions for the volumes of ``inst`` that are not to be snapshotted."""
    return {
        "exclude_boot": inst.root_volume_id is not None and inst.root_volume_id in left_out,
        "exclude_data_volume_ids": tuple(sorted(v for v in left_out if v != inst.root_volume_id)),
    }


def description(stack_name: str, what: str, resource_id: str, name: str, token: str) -> str:
    """The new snapshot's Description: set once at creation, it names the run's token, by which
    a retry adopts a snapshot its killed attempt made before recording it."""
    suffix = f" - run {token}" if token else ""
    return clean_value(f"{stack_name}: backup of {what} {resource_id} ({name})")[: 255 - len(suffix)] + suffix


def plan_creation(
    instances: Iterable[Instance],
    volumes: Iterable[Volume],
    *,
    recent: Mapping[str, str],
    stack_name: str,
    now: datetime,
    owner_key: str = "Owner",
    instance_owners: Mapping[str, str] | None = None,
    policies: Collection[str] = (DEFAULT,),
    token: str = "",
) -> CreationPlan:
    """One job per opted-in instance (its volumes not yet done nor opted out) and per opted-in
    loose volume. ``volumes``: every volume with a ``Backup`` tag, whatever its value.
    ``instance_owners``: owner of instances that are not in ``instances`` (for loose volumes).
    ``policies``: the names of this stack's retention policies; ``token``: the run's token."""
    jobs: list[CreateJob] = []
    already: dict[str, str] = {}
    left_out: dict[str, str] = {}
    unknown: dict[str, str] = {}
    covered: set[str] = set()
    volumes = sorted(volumes, key=lambda v: v.id)
    refused = {v.id for v in volumes if opted_out(v.tags, OPT_IN_TAG)}
    own_policy = {v.id: p for v in volumes if (p := policy_of(v.tags, policies)) is not None}
    for vol in volumes:
        if (value := unknown_value(vol.tags, policies)) is not None:
            unknown[vol.id] = value
    owners = dict(instance_owners or {})
    for inst in sorted(instances, key=lambda i: i.id):
        owner = inst.tags.get(owner_key, "")
        if owner:
            owners[inst.id] = owner
        if (value := unknown_value(inst.tags, policies)) is not None:
            unknown[inst.id] = value
        policy = policy_of(inst.tags, policies)
        if policy is None or not inst.volume_ids:
            continue
        covered.update(inst.volume_ids)
        left_out.update({v: inst.id for v in inst.volume_ids if v in refused})
        done = {v for v in inst.volume_ids if v in recent and v not in refused}
        already.update({v: recent[v] for v in done})
        todo = tuple(v for v in inst.volume_ids if v not in done and v not in refused)
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
                tags=_own_tags(stack_name, name, now, **{SOURCE_INSTANCE_TAG: inst.id, owner_key: owner}),
                description=description(stack_name, "instance", inst.id, name, token),
                name=inst.tags.get("Name", ""),
                owner=owner,
                root_volume_id=inst.root_volume_id,
                policies={v: own_policy.get(v, policy) for v in todo if own_policy.get(v, policy) != DEFAULT},
                **_excluded(inst, done | (set(inst.volume_ids) & refused)),
            )
        )
    for vol in volumes:
        if vol.id not in own_policy or vol.id in covered:
            continue
        if vol.id in recent:
            already[vol.id] = recent[vol.id]
            continue
        name = _label(vol.tags, vol.id)
        # The volume's own owner is copied with its tags; else its instance's is set.
        owner = vol.tags.get(owner_key, "") or owners.get(vol.instance_id or "", "")
        inherited = {owner_key: owner} if owner and owner_key not in vol.tags else {}
        own = _own_tags(
            stack_name,
            name,
            now,
            **{SOURCE_VOLUME_TAG: vol.id, SOURCE_INSTANCE_TAG: vol.instance_id or "", **inherited},
        )
        jobs.append(
            CreateJob(
                kind="volume",
                resource_id=vol.id,
                volume_ids=(vol.id,),
                tags=_with_copied(own, vol.tags),
                description=description(stack_name, "volume", vol.id, name, token),
                name=vol.tags.get("Name", ""),
                owner=owner,
                policies={vol.id: own_policy[vol.id]} if own_policy[vol.id] != DEFAULT else {},
            )
        )
    return CreationPlan(jobs=jobs, already_done=already, opted_out=left_out, unknown=unknown)


def oldest_backup_first(
    jobs: Iterable[CreateJob], snapshots: Iterable[Snapshot], *, stack_name: str
) -> list[CreateJob]:
    """``jobs`` ordered by the start of their volumes' newest backup of this stack, never backed up
    first, ties in the plan's order: when a run cannot do every job (its time ran out, or its
    intent had to be cut), the volumes that waited longest went first, so none waits for ever."""
    newest: dict[str, float] = {}
    for snap in snapshots:
        if snap.ours(stack_name) and not snap.region and snap.state in (PENDING, COMPLETED):
            newest[snap.volume_id] = max(newest.get(snap.volume_id, 0.0), snap.start_time.timestamp())

    def waited(job: CreateJob) -> tuple[int, float]:
        if any(v not in newest for v in job.volume_ids):
            return (0, 0.0)
        return (1, min(newest[v] for v in job.volume_ids))

    return sorted(jobs, key=waited)  # stable: ties keep the plan's order


def loose_volume_instances(
    instances: Iterable[Instance],
    volumes: Iterable[Volume],
    owner_key: str,
    policies: Collection[str] = (DEFAULT,),
) -> set[str]:
    """Instances whose owner a loose opted-in volume needs (it has no owner tag of its own) and
    that are not among ``instances``: one more lookup, only when there are any."""
    known = {i.id for i in instances}
    return {
        v.instance_id
        for v in volumes
        if v.instance_id
        and v.instance_id not in known
        and opted_in(v.tags, policies)
        and owner_key not in v.tags
    }


def remaining(job: CreateJob, done: Collection[str]) -> CreateJob | None:
    """``job`` without the volumes in ``done`` (they have this period's snapshot already), or
    None when nothing is left: what a run finished by a later invocation still has to create."""
    todo = tuple(v for v in job.volume_ids if v not in done)
    if not todo:
        return None
    if len(todo) == len(job.volume_ids):
        return job
    skipped = set(job.exclude_data_volume_ids) | {v for v in job.volume_ids if v in done}
    if job.exclude_boot and job.root_volume_id:
        skipped.add(job.root_volume_id)
    return replace(
        job,
        volume_ids=todo,
        exclude_boot=job.root_volume_id is not None and job.root_volume_id in skipped,
        exclude_data_volume_ids=tuple(sorted(v for v in skipped if v != job.root_volume_id)),
    )
