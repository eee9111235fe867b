"""Every AWS call owner_tagger makes: read instances and owner tags, write the owner tag. No
decisions here.

Batching: DescribeInstances takes 1,000 InstanceIds, a filter at most 200 values (DescribeTags,
the Describe calls of volumes, snapshots and images), CreateTags at
most 1,000 resource ids per call (one tag set per call, so one batch per owner value). For ``n``
ids, with every answer paginated:
- :func:`describe_instances`: ceil(n / 1000) DescribeInstances (InstanceIds), plus ceil(n / 200)
  for a batch naming an instance that does not exist (then read with an id filter);
- :func:`created`: ceil(n / 200) DescribeVolumes, DescribeSnapshots or DescribeImages;
- :func:`owner_tags`: ceil(n / 200) DescribeTags;
- :func:`create_tags`: ceil(n / 1000) CreateTags; a batch IAM refuses because some of it carries
  the owner key already: + ceil(n / 200) DescribeTags and 1 CreateTags for the rest; a batch
  refused for another permanent reason: + 1 per id (retried id by id).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from botocore.exceptions import ClientError

from autopilot import aws
from autopilot.tags import as_dict
from owner_tagger.decide import InstanceView

FILTER_VALUES_MAX: Final = 200  # values per filter of a Describe call (EC2's FilterLimitExceeded)
INSTANCE_IDS_MAX: Final = 1000  # DescribeInstances' InstanceIds
CREATE_TAGS_MAX: Final = 1000


@dataclass(frozen=True)
class TagFailure:
    resource_id: str
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"id": self.resource_id, "code": self.code, "message": self.message}


def _created_at(instance: Mapping[str, Any]) -> datetime | None:
    """When the instance was created: the attach time of its primary network interface (device
    index 0), which stays when the instance is stopped and started; LaunchTime (the last start)
    only for an instance without one."""
    for interface in instance.get("NetworkInterfaces", []):
        attachment = interface.get("Attachment", {})
        if attachment.get("DeviceIndex") == 0 and isinstance(attachment.get("AttachTime"), datetime):
            return _utc(attachment["AttachTime"])
    launched = instance.get("LaunchTime")
    return _utc(launched) if isinstance(launched, datetime) else None


def _utc(when: datetime) -> datetime:
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)


def _view(instance: Mapping[str, Any]) -> InstanceView:
    return InstanceView(
        id=str(instance["InstanceId"]),
        state=str(instance.get("State", {}).get("Name", "unknown")),
        root_device_type=str(instance.get("RootDeviceType", "ebs")),
        tags=as_dict(instance.get("Tags")),
        volume_ids=tuple(
            str(m["Ebs"]["VolumeId"])
            for m in instance.get("BlockDeviceMappings", [])
            if isinstance(m.get("Ebs"), Mapping) and m["Ebs"].get("VolumeId")
        ),
        network_interface_ids=tuple(
            str(n["NetworkInterfaceId"])
            for n in instance.get("NetworkInterfaces", [])
            if n.get("NetworkInterfaceId")
        ),
        created_at=_created_at(instance),
    )


def describe_instances(ids: Iterable[str]) -> dict[str, InstanceView]:
    """Instances by id: one DescribeInstances per 1,000 ids (its InstanceIds limit), which is
    the API's minimum for a launch event. InstanceIds fails the whole call when one id does not
    exist (yet, or any more); then that batch is read again with an id filter (200 values a
    call), where such an id is just absent from the answer."""
    ec2 = aws.client("ec2")
    found: dict[str, InstanceView] = {}
    for batch in aws.chunked(list(dict.fromkeys(ids)), INSTANCE_IDS_MAX):
        try:
            pages = aws.paginate(ec2, "describe_instances", "Reservations[].Instances[]", InstanceIds=batch)
            found.update((view.id, view) for view in map(_view, pages))
            continue
        except ClientError as err:
            if aws.error_code(err) not in ("InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"):
                raise
        for part in aws.chunked(batch, FILTER_VALUES_MAX):
            filters = [{"Name": "instance-id", "Values": part}]
            pages = aws.paginate(ec2, "describe_instances", "Reservations[].Instances[]", Filters=filters)
            found.update((view.id, view) for view in map(_view, pages))
    return found


@dataclass(frozen=True)
class Created:
    """When a volume, snapshot or image was created, and its owner tag (None: it has none); for
    an image, its state and the EBS snapshots behind it (BlockDeviceMappings)."""

    created_at: datetime | None
    owner: str | None
    state: str = ""
    snapshots: tuple[str, ...] = ()


# Per resource type: the Describe call, its id filter, the list in its answer, its id field
# and its creation-time field (CreateTime; a snapshot's StartTime; an image's CreationDate).
_DESCRIBE: Final = {
    "volume": ("describe_volumes", "volume-id", "Volumes[]", "VolumeId", "CreateTime"),
    "snapshot": ("describe_snapshots", "snapshot-id", "Snapshots[]", "SnapshotId", "StartTime"),
    "image": ("describe_images", "image-id", "Images[]", "ImageId", "CreationDate"),
}


def created(resource_type: str, ids: Iterable[str], key: str) -> dict[str, Created]:
    """Resource id -> when it was created and its ``key`` tag, for those of ``ids`` that exist:
    ceil(n / 200) DescribeVolumes, DescribeSnapshots or DescribeImages (an id filter, so that
    one that no longer exists is only absent). The tags come with the answer: no DescribeTags."""
    operation, id_filter, path, id_field, time_field = _DESCRIBE[resource_type]
    ec2 = aws.client("ec2")
    found: dict[str, Created] = {}
    for batch in aws.chunked(ids, FILTER_VALUES_MAX):
        extra: dict[str, Any] = {"OwnerIds": ["self"]} if resource_type == "snapshot" else {}
        if resource_type == "image":
            extra = {"Owners": ["self"]}
        pages = aws.paginate(ec2, operation, path, Filters=[{"Name": id_filter, "Values": batch}], **extra)
        for item in pages:
            tags = as_dict(item.get("Tags"))
            snapshots = tuple(
                str(m["Ebs"]["SnapshotId"])
                for m in item.get("BlockDeviceMappings", [])
                if isinstance(m.get("Ebs"), Mapping) and m["Ebs"].get("SnapshotId")
            )
            state = str(item.get("State", ""))
            found[str(item[id_field])] = Created(_time(item.get(time_field)), tags.get(key), state, snapshots)
    return found


def _time(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return _utc(value)
    if isinstance(value, str):  # DescribeImages' CreationDate is an ISO 8601 string
        try:
            return _utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return None
    return None


def owner_tags(ids: Iterable[str], key: str) -> dict[str, str]:
    """Resource id -> value of its ``key`` tag, for those of ``ids`` that have one:
    ceil(n / 200) DescribeTags (none for no ids)."""
    ec2 = aws.client("ec2")
    found: dict[str, str] = {}
    for batch in aws.chunked(ids, FILTER_VALUES_MAX):
        filters = [{"Name": "resource-id", "Values": batch}, {"Name": "key", "Values": [key]}]
        for tag in aws.paginate(ec2, "describe_tags", "Tags[]", Filters=filters):
            if tag.get("Key") == key:
                found[str(tag["ResourceId"])] = str(tag.get("Value", ""))
    return found


@dataclass(frozen=True)
class Written:
    """What :func:`create_tags` could not write: the ids that failed, and the ids IAM refused
    because they carry the owner key already (their value, as found), which stay as they are."""

    failures: list[TagFailure]
    kept: dict[str, str]


# The stack's Deny (template.yaml NeverOverwriteAnOwner) refuses a CreateTags naming a
# resource that carries the owner key; EC2 answers the whole call with this code.
DENIED: Final = "UnauthorizedOperation"
DENIED_ROUNDS: Final = 3  # reads of who carries the key, for owners being set while we write


def create_tags(ids: list[str], key: str, value: str) -> Written:
    """Tag ``ids`` with ``key=value`` in batches of 1,000.

    IAM refuses a batch naming a resource that already carries the owner key (set by hand
    after the launch, or meanwhile): then the batch's tags are read (:func:`carrying_key`,
    ceil(n / 200) DescribeTags), those resources are kept as they are and the rest written again
    - up to DENIED_ROUNDS times, for owners set while this runs. A refusal with nobody carrying
    the key is a missing permission: the batch fails as a whole (no call per id).
    A batch that fails for another permanent reason (a resource gone, say) is retried id by id
    so the others still get their tag. Transient errors (after the client's own retries) raise,
    so the invocation is retried as a whole, which is harmless: the runner finishes the recorded
    intent first (re-reading the owner tags), and an existing owner tag is never written again."""
    failures: list[TagFailure] = []
    kept: dict[str, str] = {}
    for chunk in aws.chunked(ids, CREATE_TAGS_MAX):
        batch = list(chunk)
        error = _create_tags(batch, key, value)
        rounds = 0
        while error is not None and aws.error_code(error) == DENIED and rounds < DENIED_ROUNDS:
            rounds += 1
            carrying = carrying_key(batch, key)
            if not carrying:
                break
            kept.update(carrying)
            batch = [i for i in batch if i not in carrying]
            error = _create_tags(batch, key, value) if batch else None
        if error is None:
            continue
        if len(batch) == 1 or aws.error_code(error) == DENIED:
            failures += [TagFailure(i, aws.error_code(error), _message(error)) for i in batch]
            continue
        for resource_id in batch:
            single = _create_tags([resource_id], key, value)
            if single is not None:
                failures.append(TagFailure(resource_id, aws.error_code(single), _message(single)))
    return Written(failures, kept)


def carrying_key(ids: Iterable[str], key: str) -> dict[str, str]:
    """Resource id -> the value of its tag whose key is ``key`` compared as IAM compares
    condition keys (case-insensitively; the exact key wins), for those of ``ids`` that have
    one: ceil(n / 200) DescribeTags of every tag of the resources."""
    ec2 = aws.client("ec2")
    found: dict[str, str] = {}
    exact: set[str] = set()
    for batch in aws.chunked(list(ids), FILTER_VALUES_MAX):
        filters = [{"Name": "resource-id", "Values": batch}]
        for tag in aws.paginate(ec2, "describe_tags", "Tags[]", Filters=filters):
            resource_id, tag_key = str(tag.get("ResourceId", "")), str(tag.get("Key", ""))
            if tag_key.lower() != key.lower() or resource_id in exact:
                continue
            found[resource_id] = str(tag.get("Value", ""))
            if tag_key == key:
                exact.add(resource_id)
    return found


def _create_tags(batch: list[str], key: str, value: str) -> ClientError | None:
    try:
        aws.client("ec2").create_tags(Resources=batch, Tags=[{"Key": key, "Value": value}])
    except ClientError as err:
        if aws.is_transient(err):
            raise
        return err
    return None


def _message(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Message", ""))[:300]


GROUPS_MAX: Final = 100  # DescribeAutoScalingGroups' AutoScalingGroupNames


def group_owners(groups: Iterable[str], key: str) -> dict[str, str]:
    """Auto Scaling group name -> its own ``key`` tag, for the groups that have one:
    ceil(n / 100) DescribeAutoScalingGroups (the tags come with the groups)."""
    found: dict[str, str] = {}
    client = aws.client("autoscaling")
    for batch in aws.chunked(sorted(set(groups)), GROUPS_MAX):
        for group in aws.paginate(
            client, "describe_auto_scaling_groups", "AutoScalingGroups[]", AutoScalingGroupNames=batch
        ):
            for tag in group.get("Tags", []):
                if tag.get("Key") == key and str(tag.get("Value", "")).strip():
                    found[str(group["AutoScalingGroupName"])] = str(tag["Value"])
    return found
