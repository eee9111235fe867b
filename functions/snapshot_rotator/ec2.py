"""The thin AWS layer: gather what the plans need, carry out one create or delete.

Every list is paginated at the API's maximum page size. The calls that change something
raise ``ClientError``; the caller decides per resource what an error means.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from autopilot import aws
from autopilot.tags import as_dict, as_list
from snapshot_rotator.retention import MANAGED_BY, Snapshot
from snapshot_rotator.selection import OPT_IN_TAG, CreateJob, Instance, Volume

SNAPSHOT_PAGE = 1000  # DescribeSnapshots MaxResults maximum
IMAGE_PAGE = 1000  # DescribeImages MaxResults maximum
INSTANCE_PAGE = 1000  # DescribeInstances MaxResults maximum
VOLUME_PAGE = 500  # DescribeVolumes MaxResults maximum
# Tag filters match values exactly; these are the spellings of "true" people write.
OPT_IN_VALUES = ["true", "True", "TRUE"]


def ec2() -> Any:
    return aws.client("ec2")


def ami_snapshot_ids() -> set[str]:
    """Every snapshot referenced by one of this account's AMIs (disabled and deprecated ones too)."""
    found: set[str] = set()
    for image in aws.paginate(
        ec2(),
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


def to_snapshot(raw: dict[str, Any], ami_snapshots: set[str]) -> Snapshot:
    return Snapshot(
        id=str(raw["SnapshotId"]),
        volume_id=str(raw.get("VolumeId", "")),
        start_time=_as_utc(raw["StartTime"]),
        state=str(raw.get("State", "")),
        tags=as_dict(raw.get("Tags")),
        used_by_ami=str(raw["SnapshotId"]) in ami_snapshots,
    )


def managed_snapshots(stack_name: str, ami_snapshots: set[str]) -> Iterator[Snapshot]:
    """This account's snapshots tagged ManagedBy=<stack>, 1,000 per page."""
    for raw in aws.paginate(
        ec2(),
        "describe_snapshots",
        "Snapshots[]",
        OwnerIds=["self"],
        Filters=[{"Name": f"tag:{MANAGED_BY}", "Values": [stack_name]}],
        PaginationConfig={"PageSize": SNAPSHOT_PAGE},
    ):
        yield to_snapshot(raw, ami_snapshots)


def opted_in_instances() -> Iterator[Instance]:
    for raw in aws.paginate(
        ec2(),
        "describe_instances",
        "Reservations[].Instances[]",
        Filters=[
            {"Name": f"tag:{OPT_IN_TAG}", "Values": OPT_IN_VALUES},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
        ],
        PaginationConfig={"PageSize": INSTANCE_PAGE},
    ):
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
        yield Instance(
            id=str(raw["InstanceId"]),
            tags=as_dict(raw.get("Tags")),
            root_volume_id=root_volume,
            volume_ids=tuple(volume_ids),
        )


def opted_in_volumes() -> Iterator[Volume]:
    for raw in aws.paginate(
        ec2(),
        "describe_volumes",
        "Volumes[]",
        Filters=[
            {"Name": f"tag:{OPT_IN_TAG}", "Values": OPT_IN_VALUES},
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
    return [to_snapshot(raw, set()) for raw in created]


def delete(snapshot_id: str) -> None:
    ec2().delete_snapshot(SnapshotId=snapshot_id)
