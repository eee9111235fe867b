"""Disaster-recovery copies: which backups to copy to another region, a pure function.

A policy with ``copy=<region>`` (``SnapshotRotatorPolicies``) keeps a copy of its volumes'
backups in that region: each run copies the newest *completed* backup of each such volume that
has no copy yet (a backup is copied once it is usable, so the copy of today's backup is made by
the next run). Copies are rotated in their region by the same policy, grouped by their source
volume (a copy's own VolumeId means nothing), and like every snapshot of the stack they are
recorded in the ledger when made - only recorded copies are ever deleted.

EBS allows :data:`COPY_CONCURRENCY` copy requests in flight per destination region: the plan
starts at most that many less the copies still pending there, the backups that waited longest
first; the rest waits for the next run (or round).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from autopilot.tags import clean_value
from snapshot_rotator.decide.policies import Policy
from snapshot_rotator.decide.retention import COMPLETED, MANAGED_BY, PENDING, Snapshot

COPY_CONCURRENCY = 20  # concurrent snapshot copies EBS allows per destination region
SOURCE_SNAPSHOT_TAG = "SourceSnapshotId"
SOURCE_REGION_TAG = "SourceRegion"


@dataclass(frozen=True)
class CopyJob:
    """One CopySnapshot call, made in the destination region."""

    source_id: str  # the backup in this region
    volume_id: str  # its source volume
    policy: str
    region: str  # the destination
    kms_key: str | None
    tags: Mapping[str, str] = field(default_factory=dict)
    description: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "source_id": self.source_id,
            "volume_id": self.volume_id,
            "policy": self.policy,
            "region": self.region,
            "kms_key": self.kms_key,
            "tags": dict(self.tags),
            "description": self.description,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CopyJob:
        return cls(
            source_id=str(data["source_id"]),
            volume_id=str(data["volume_id"]),
            policy=str(data["policy"]),
            region=str(data["region"]),
            kms_key=str(data["kms_key"]) if data.get("kms_key") else None,
            tags={str(k): str(v) for k, v in dict(data.get("tags") or {}).items()},
            description=str(data.get("description", "")),
        )


@dataclass(frozen=True)
class CopyPlan:
    jobs: list[CopyJob]
    waiting: dict[str, int]  # destination region -> copies left for the next run (concurrency)


def plan_copies(
    local: Iterable[Snapshot],
    remote: Iterable[Snapshot],
    copied: Collection[str],
    *,
    policies: Mapping[str, Policy],
    stack_name: str,
    region: str,
    token: str = "",
    owner_key: str = "Owner",
) -> CopyPlan:
    """``local``: this region's snapshots (the ledger's ones are copied); ``remote``: the
    destination regions' snapshots (their pending copies count against the concurrency);
    ``copied``: ids of local snapshots that already have a recorded copy."""
    newest: dict[str, Snapshot] = {}
    for snap in local:
        if not snap.ours(stack_name) or snap.state != COMPLETED or snap.region:
            continue
        best = newest.get(snap.volume_id)
        if best is None or (snap.start_time, snap.id) > (best.start_time, best.id):
            newest[snap.volume_id] = snap
    in_flight: dict[str, int] = {}
    last_copy: dict[tuple[str, str], float] = {}  # (region, volume) -> start of its newest copy
    for snap in remote:
        if not snap.recorded:
            continue
        if snap.state == PENDING:
            in_flight[snap.region] = in_flight.get(snap.region, 0) + 1
        key = (snap.region, snap.volume_id)
        last_copy[key] = max(last_copy.get(key, 0.0), snap.start_time.timestamp())

    def waited(item: tuple[str, Snapshot]) -> tuple[float, float, str]:
        volume_id, snap = item
        policy = policies.get(snap.policy)
        there = last_copy.get((policy.copy_region or "", volume_id), 0.0) if policy else 0.0
        return (there, snap.start_time.timestamp(), volume_id)  # never copied, or longest ago, first

    wanted: dict[str, list[CopyJob]] = {}
    for volume_id, snap in sorted(newest.items(), key=waited):
        policy = policies.get(snap.policy)
        if policy is None or not policy.copy_region or policy.copy_region == region or snap.id in copied:
            continue
        name = snap.tags.get("Name", "") or volume_id
        tags = {
            MANAGED_BY: stack_name,
            "Name": clean_value(f"{name} (copy from {region})"),
            "SourceVolumeId": volume_id,
            SOURCE_SNAPSHOT_TAG: snap.id,
            SOURCE_REGION_TAG: region,
        }
        if snap.tags.get(owner_key):
            tags[owner_key] = snap.tags[owner_key]
        suffix = f" - run {token}" if token else ""
        description = clean_value(f"{stack_name}: copy of {snap.id} of volume {volume_id} from {region}")
        wanted.setdefault(policy.copy_region, []).append(
            CopyJob(
                source_id=snap.id,
                volume_id=volume_id,
                policy=snap.policy,
                region=policy.copy_region,
                kms_key=policy.copy_kms_key,
                tags=tags,
                description=description[: 255 - len(suffix)] + suffix,
            )
        )
    jobs: list[CopyJob] = []
    waiting: dict[str, int] = {}
    for destination, candidates in sorted(wanted.items()):
        room = max(0, COPY_CONCURRENCY - in_flight.get(destination, 0))
        jobs += candidates[:room]
        if len(candidates) > room:
            waiting[destination] = len(candidates) - room
    return CopyPlan(jobs=jobs, waiting=waiting)
