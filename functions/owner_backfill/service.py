"""Every AWS call owner_backfill makes; no decisions here. The owner tag itself is written by
owner_tagger's ``service.create_tags`` (the same batching, and the same handling of the IAM
Deny that keeps an owner set meanwhile).

- :func:`resources`: every instance (not terminated), volume, snapshot and AMI of this account
  and region, 1,000 a page (each API's maximum): ceil(n / 1000) DescribeInstances,
  DescribeVolumes, DescribeSnapshots (OwnerIds=self) and DescribeImages (Owners=self); the tags
  come with them.
- :func:`lookup`: one LookupEvents page (50 events, the API's maximum), paced at the 2 requests a
  second CloudTrail allows per account and region (:data:`PACER`: none is refused, so none is
  retried).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, Final

from autopilot import aws, pacing
from autopilot.tags import as_dict
from owner_backfill.decide import PAGE_MAX, Page, Resource, as_utc, page
from owner_tagger.decide import ASG_TAG

PAGE_SIZE: Final = 1000
LOOKUPS_PER_SECOND: Final = 2.0  # CloudTrail LookupEvents: 2 requests a second, account and region
PACER = pacing.Pacer({"LookupEvents": (1, LOOKUPS_PER_SECOND)})


def _owner(tags: Mapping[str, str], key: str) -> str | None:
    """The owner tag's value: ``key``, or the same key in another case (``owner``) - IAM's Deny
    compares the key case-insensitively, and a person who wrote ``owner`` meant one."""
    if key in tags:
        return tags[key]
    return next((v for k, v in sorted(tags.items()) if k.lower() == key.lower()), None)


def _pages(operation: str, path: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    config = {"PageSize": PAGE_SIZE}
    yield from aws.paginate(aws.client("ec2"), operation, path, PaginationConfig=config, **kwargs)


def _instance_created(instance: Mapping[str, Any]) -> datetime | None:
    """The attach time of the primary interface (stays across stop and start), else LaunchTime."""
    for interface in instance.get("NetworkInterfaces", []):
        attachment = interface.get("Attachment", {})
        if attachment.get("DeviceIndex") == 0 and attachment.get("AttachTime"):
            return as_utc(attachment["AttachTime"])
    return as_utc(instance.get("LaunchTime"))


def resources(key: str) -> list[Resource]:
    """Every instance, volume, own snapshot and own AMI, with its ``key`` tag (see the module
    doc for the calls). A volume's parent is the instance it is attached to, a snapshot's the
    own AMI it backs."""
    found: list[Resource] = []
    states = ["pending", "running", "stopping", "stopped"]
    for item in _pages(
        "describe_instances",
        "Reservations[].Instances[]",
        Filters=[{"Name": "instance-state-name", "Values": states}],
    ):
        tags = as_dict(item.get("Tags"))
        found.append(
            Resource(
                str(item["InstanceId"]),
                "instance",
                _instance_created(item),
                _owner(tags, key),
                group=tags.get(ASG_TAG),
                name=tags.get("Name", ""),
            )
        )
    for item in _pages("describe_volumes", "Volumes[]"):
        tags = as_dict(item.get("Tags"))
        attached = [a["InstanceId"] for a in item.get("Attachments", []) if a.get("InstanceId")]
        parent = str(attached[0]) if attached else None
        volume_id = str(item["VolumeId"])
        found.append(Resource(volume_id, "volume", as_utc(item.get("CreateTime")), _owner(tags, key), parent))
    backing: dict[str, str] = {}
    images: list[Resource] = []
    for item in _pages("describe_images", "Images[]", Owners=["self"]):
        tags = as_dict(item.get("Tags"))
        image_id = str(item["ImageId"])
        for mapping in item.get("BlockDeviceMappings", []):
            snapshot = (mapping.get("Ebs") or {}).get("SnapshotId")
            if snapshot:
                backing[str(snapshot)] = image_id
        images.append(
            Resource(
                image_id,
                "image",
                as_utc(item.get("CreationDate")),
                _owner(tags, key),
                name=str(item.get("Name", "")),
            )
        )
    for item in _pages("describe_snapshots", "Snapshots[]", OwnerIds=["self"]):
        tags = as_dict(item.get("Tags"))
        snapshot_id = str(item["SnapshotId"])
        created = as_utc(item.get("StartTime"))
        found.append(Resource(snapshot_id, "snapshot", created, _owner(tags, key), backing.get(snapshot_id)))
    return found + images


def lookup(
    attribute: tuple[str, str], start: datetime, end: datetime, token: str | None, budget: float
) -> Page | None:
    """One page of CloudTrail's event history for ``attribute`` (EventName or ResourceName, and
    its value) between ``start`` and ``end``, newest first; None (nothing called) when the
    pacer's wait would outlast ``budget`` seconds."""
    if not PACER.take("LookupEvents", budget):
        return None
    kwargs: dict[str, Any] = {
        "LookupAttributes": [{"AttributeKey": attribute[0], "AttributeValue": attribute[1]}],
        "StartTime": start,
        "EndTime": end,
        "MaxResults": PAGE_MAX,
    }
    if token:
        kwargs["NextToken"] = token
    return page(aws.client("cloudtrail").lookup_events(**kwargs))
