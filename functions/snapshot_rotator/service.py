"""Every AWS call of snapshot_rotator: gather what the plans need, carry out one create or delete.

Per run: the ledger (store.py: a ``Query`` per 1 MB of records), ``DescribeImages``
(Owners=self, 1,000 per page), ``DescribeSnapshots`` (OwnerIds=self, tag filter
``ManagedBy=<stack>``, 1,000 per page; the tag only narrows the listing, the ledger says what
is ours; recorded snapshots missing from it are looked up by id, 200 a call, only when there
are any), ``DescribeInstances`` and ``DescribeVolumes`` (1,000 / 500 per page), each filtered
on the ``Backup`` tag key; one more ``DescribeInstances`` (200 ids per page) only when a loose
opted-in volume without an owner tag is attached to an instance that is not opted in (its owner
is copied to the snapshot). Then one ``CreateSnapshots`` per instance, one ``CreateSnapshot``
per loose volume and one ``DeleteSnapshot`` per expired snapshot: neither API has a batch form.
A run finished by a later invocation lists the images and snapshots once more, to see what the
interrupted attempt did.

Every list is paginated at the API's maximum page size. The calls that change something raise
``ClientError``; the caller decides per resource what an error means.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from autopilot import aws
from autopilot.tags import as_dict, as_list
from snapshot_rotator.decide.copies import CopyJob
from snapshot_rotator.decide.retention import MANAGED_BY, Snapshot
from snapshot_rotator.decide.selection import OPT_IN_TAG, CreateJob, Instance, Volume
from snapshot_rotator.store import Record

SNAPSHOT_PAGE = 1000  # DescribeSnapshots MaxResults maximum
IMAGE_PAGE = 1000  # DescribeImages MaxResults maximum
INSTANCE_PAGE = 1000  # DescribeInstances MaxResults maximum
VOLUME_PAGE = 500  # DescribeVolumes MaxResults maximum
FILTER_VALUES = 200  # values per filter EC2 accepts
LIVE_INSTANCES = ["pending", "running", "stopping", "stopped"]


def ec2(region: str = "") -> Any:
    """This region's EC2 client, or a disaster-recovery destination's."""
    return aws.client("ec2", region) if region else aws.client("ec2")


def ami_snapshot_ids(region: str = "") -> set[str]:
    """Every snapshot referenced by one of this account's AMIs (disabled and deprecated ones too)."""
    found: set[str] = set()
    for image in aws.paginate(
        ec2(region),
        "describe_images",
        "Images[]",
        Owners=["self"],
        IncludeDeprecated=True,
        IncludeDisabled=True,
        PaginationConfig={"PageSize": IMAGE_PAGE},
    ):
        for mapping in image.get("BlockDeviceMappings", []):
            snap_id = mapping.get("Ebs", {}).get("SnapshotId")
            if snap_id:
                found.add(str(snap_id))
    return found


def _as_utc(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def to_snapshot(
    raw: dict[str, Any],
    ami_snapshots: Collection[str],
    records: Mapping[str, Record] | None = None,
    region: str = "",
) -> Snapshot:
    """The snapshot as the plans see it: with its ledger record, it is ours, and its volume is
    the record's source volume (a copy's own VolumeId is vol-ffffffff)."""
    snap_id = str(raw["SnapshotId"])
    record = (records or {}).get(snap_id)
    return Snapshot(
        id=snap_id,
        volume_id=record.volume_id if record else str(raw.get("VolumeId", "")),
        start_time=_as_utc(raw["StartTime"]),
        state=str(raw.get("State", "")),
        tags=as_dict(raw.get("Tags")),
        used_by_ami=snap_id in ami_snapshots,
        recorded=record is not None,
        failed_reported=record.failed_reported if record else False,
        policy=record.policy if record else "default",
        description=str(raw.get("Description", "")),
        region=region,
    )


def managed_snapshots(
    stack_name: str,
    ami_snapshots: Collection[str],
    records: Mapping[str, Record] | None = None,
    region: str = "",
) -> Iterator[Snapshot]:
    """This account's snapshots tagged ManagedBy=<stack>, 1,000 per page, joined with the ledger
    (``region``: those in a disaster-recovery destination)."""
    for raw in aws.paginate(
        ec2(region),
        "describe_snapshots",
        "Snapshots[]",
        OwnerIds=["self"],
        Filters=[{"Name": f"tag:{MANAGED_BY}", "Values": [stack_name]}],
        PaginationConfig={"PageSize": SNAPSHOT_PAGE},
    ):
        yield to_snapshot(raw, ami_snapshots, records, region)


def recorded_snapshots(
    snapshot_ids: Collection[str], ami_snapshots: Collection[str], records: Mapping[str, Record]
) -> list[Snapshot]:
    """The ledger's snapshots that the tagged listing did not show (their tag was removed), by
    id, 200 a call; those that do not exist any more are simply not returned."""
    found: list[Snapshot] = []
    for batch in aws.chunked(sorted(snapshot_ids), FILTER_VALUES):
        for raw in aws.paginate(
            ec2(),
            "describe_snapshots",
            "Snapshots[]",
            OwnerIds=["self"],
            Filters=[{"Name": "snapshot-id", "Values": batch}],
        ):
            found.append(to_snapshot(raw, ami_snapshots, records))
    return found


def existing_volumes(volume_ids: Collection[str]) -> set[str]:
    """Which of these volumes still exist (200 ids a call; only for volumes whose backups ended)."""
    found: set[str] = set()
    for batch in aws.chunked(sorted(volume_ids), FILTER_VALUES):
        for raw in aws.paginate(
            ec2(), "describe_volumes", "Volumes[]", Filters=[{"Name": "volume-id", "Values": batch}]
        ):
            found.add(str(raw["VolumeId"]))
    return found


def _instance(raw: dict[str, Any]) -> Instance:
    root_device = raw.get("RootDeviceName")
    volume_ids: list[str] = []
    root_volume: str | None = None
    for mapping in raw.get("BlockDeviceMappings", []):
        volume_id = mapping.get("Ebs", {}).get("VolumeId")
        if not volume_id:
            continue
        volume_ids.append(str(volume_id))
        if mapping.get("DeviceName") == root_device:
            root_volume = str(volume_id)
    return Instance(
        id=str(raw["InstanceId"]),
        tags=as_dict(raw.get("Tags")),
        root_volume_id=root_volume,
        volume_ids=tuple(volume_ids),
    )


def backup_tagged_instances() -> Iterator[Instance]:
    """Instances that are not terminated and carry a ``Backup`` tag, whatever its value (tag
    filters match values exactly and case-sensitively; the plan reads the value itself)."""
    for raw in aws.paginate(
        ec2(),
        "describe_instances",
        "Reservations[].Instances[]",
        Filters=[
            {"Name": "tag-key", "Values": [OPT_IN_TAG]},
            {"Name": "instance-state-name", "Values": LIVE_INSTANCES},
        ],
        PaginationConfig={"PageSize": INSTANCE_PAGE},
    ):
        yield _instance(raw)


def backup_tagged_volumes() -> Iterator[Volume]:
    """Usable volumes that carry a ``Backup`` tag, whatever its value: opted in, or opted out
    of their instance's backup."""
    for raw in aws.paginate(
        ec2(),
        "describe_volumes",
        "Volumes[]",
        Filters=[
            {"Name": "tag-key", "Values": [OPT_IN_TAG]},
            {"Name": "status", "Values": ["available", "in-use"]},
        ],
        PaginationConfig={"PageSize": VOLUME_PAGE},
    ):
        attachments = raw.get("Attachments") or []
        yield Volume(
            id=str(raw["VolumeId"]),
            tags=as_dict(raw.get("Tags")),
            instance_id=str(attachments[0]["InstanceId"]) if attachments else None,
        )


def instance_owners(instance_ids: Collection[str], owner_key: str) -> dict[str, str]:
    """Instance id -> its owner tag value, for the instances that have one (200 ids a call)."""
    owners: dict[str, str] = {}
    for batch in aws.chunked(sorted(instance_ids), FILTER_VALUES):
        for raw in aws.paginate(
            ec2(),
            "describe_instances",
            "Reservations[].Instances[]",
            Filters=[{"Name": "instance-id", "Values": batch}],
        ):
            owner = as_dict(raw.get("Tags")).get(owner_key)
            if owner:
                owners[str(raw["InstanceId"])] = owner
    return owners


def create(job: CreateJob) -> list[Snapshot]:
    """Carry out one create job in one call, tags included; the new (pending) snapshots."""
    spec = [{"ResourceType": "snapshot", "Tags": as_list(job.tags)}]
    if job.kind == "volume":
        raw = ec2().create_snapshot(
            VolumeId=job.resource_id, Description=job.description, TagSpecifications=spec
        )
        created = [raw]
    else:
        instance_spec: dict[str, Any] = {"InstanceId": job.resource_id}
        if job.exclude_boot:
            instance_spec["ExcludeBootVolume"] = True
        if job.exclude_data_volume_ids:
            instance_spec["ExcludeDataVolumeIds"] = list(job.exclude_data_volume_ids)
        response = ec2().create_snapshots(
            InstanceSpecification=instance_spec,
            Description=job.description,
            TagSpecifications=spec,
            CopyTagsFromSource="volume",
        )
        created = list(response.get("Snapshots", []))
    return [to_snapshot(raw, ()) for raw in created]


def delete(snapshot_id: str, region: str = "") -> None:
    ec2(region).delete_snapshot(SnapshotId=snapshot_id)


# What EBS does with the caller's own credentials when it copies a snapshot with a KMS key: the
# caller's role needs these on the key, though no call of the function names them.
KMS_FOR_ENCRYPTED_COPY = frozenset(
    {
        "kms:CreateGrant",
        "kms:Decrypt",
        "kms:DescribeKey",
        "kms:GenerateDataKeyWithoutPlaintext",
        "kms:ReEncryptFrom",
        "kms:ReEncryptTo",
    }
)


def copy(job: CopyJob, source_region: str) -> Snapshot:
    """One CopySnapshot, made in the destination region (its endpoint decides where the copy
    goes), tagged in the same call; the new (pending) copy."""
    params: dict[str, Any] = {
        "SourceRegion": source_region,
        "SourceSnapshotId": job.source_id,
        "Description": job.description,
        "TagSpecifications": [{"ResourceType": "snapshot", "Tags": as_list(job.tags)}],
    }
    if job.kms_key:
        params.update(Encrypted=True, KmsKeyId=job.kms_key)
    raw = ec2(job.region).copy_snapshot(**params)
    return Snapshot(
        id=str(raw["SnapshotId"]),
        volume_id=job.volume_id,
        start_time=datetime.now(UTC),
        state="pending",
        tags=dict(job.tags),
        recorded=True,
        policy=job.policy,
        region=job.region,
    )
