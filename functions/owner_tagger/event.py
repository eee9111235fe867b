"""The trigger: CloudTrail "AWS API Call via CloudTrail" events of EC2 creation calls, parsed
by lookup table (:func:`parse`, the runner's ``Automation.parse``). No I/O.

:data:`CREATION_CALLS` maps each event name to the resource type it creates and the JMESPath
(relative to the event's ``detail``) of the new resource ids, in the style of Cloud Custodian's
``c7n/cwe.py``. Adding a call is one line here (and its name in the template's rule, which a
test checks). Anything that is not such an event raises :class:`autopilot.events.BadEvent`, and
so does a call that failed (``errorCode``): it created nothing, and the rule filters those out
already, so one that arrives anyway is unexpected (one log line, nothing changed, no AWS call).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import jmespath  # type: ignore[import-untyped]  # no stubs published; used for one search

from autopilot.events import BadEvent, EmptyEvent, parse_time, require

DETAIL_TYPE: Final = "AWS API Call via CloudTrail"
SOURCE: Final = "aws.ec2"
EVENT_SOURCE: Final = "ec2.amazonaws.com"


@dataclass(frozen=True)
class CreationCall:
    resource_type: str  # EC2's name for it, as in DescribeTags' ResourceType
    ids: str  # JMESPath of the new resource ids in the event's detail


# CreateSnapshots logs its response in the raw XML-to-JSON form - "item" (singular) is a list,
# or one object for one snapshot - with or without the CreateSnapshotsResponse wrapper; and in
# CloudTrail's usual "items" form. Every shape seen is tried.
_CREATE_SNAPSHOTS_IDS = (
    "responseElements.CreateSnapshotsResponse.snapshotSet.item[].snapshotId"
    " || responseElements.CreateSnapshotsResponse.snapshotSet.item.snapshotId"
    " || responseElements.snapshotSet.item[].snapshotId"
    " || responseElements.snapshotSet.item.snapshotId"
    " || responseElements.snapshotSet.items[].snapshotId"
)

# CreateFleet (type instant: EC2 Fleet, Karpenter) logs its response in the XML-to-JSON form
# too: one fleetInstanceSet item per launch-template override, each with its instanceIds.item - a
# list, or one id as a string; the set itself an object for one item. Instances that could not be
# launched are in errorSet and have no id. (Fleets of type maintain or request name no instance.)
_CREATE_FLEET_IDS = (
    "responseElements.CreateFleetResponse.fleetInstanceSet.item[].instanceIds.item[]"
    " || responseElements.CreateFleetResponse.fleetInstanceSet.item.instanceIds.item"
)

CREATION_CALLS: Final[Mapping[str, CreationCall]] = {
    "RunInstances": CreationCall("instance", "responseElements.instancesSet.items[].instanceId"),
    "CreateFleet": CreationCall("instance", _CREATE_FLEET_IDS),
    "CreateVolume": CreationCall("volume", "responseElements.volumeId"),
    "CreateSnapshot": CreationCall("snapshot", "responseElements.snapshotId"),
    "CreateSnapshots": CreationCall("snapshot", _CREATE_SNAPSHOTS_IDS),
    "CopySnapshot": CreationCall("snapshot", "responseElements.snapshotId"),
    "CreateImage": CreationCall("image", "responseElements.imageId"),
    "CopyImage": CreationCall("image", "responseElements.imageId"),
    "RegisterImage": CreationCall("image", "responseElements.imageId"),
}

_COMPILED = {name: jmespath.compile(call.ids) for name, call in CREATION_CALLS.items()}
_ID_PATTERN = {
    "instance": re.compile(r"i-[0-9a-f]{8,17}"),
    "volume": re.compile(r"vol-[0-9a-f]{8,17}"),
    "snapshot": re.compile(r"snap-[0-9a-f]{8,17}"),
    "image": re.compile(r"ami-[0-9a-f]{8,17}"),
    "network-interface": re.compile(r"eni-[0-9a-f]{8,17}"),
}


@dataclass(frozen=True)
class LaunchedInstance:
    """What RunInstances' response says about one new instance."""

    id: str
    tags: Mapping[str, str] = field(default_factory=dict)
    network_interface_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class CreationEvent:
    """One EC2 creation call: who made it, what it created, what tags it set at creation."""

    event_id: str
    event_name: str
    resource_type: str
    resource_ids: tuple[str, ...]
    identity: Any  # the raw userIdentity object; decide.resolve_owner copes with anything
    region: str
    instances: tuple[LaunchedInstance, ...] = ()
    # Tags set at creation (TagSpecifications), by resource type: {"volume": {"Owner": "x"}}.
    creation_tags: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # False when tags may have been set at creation without showing in the event (a launch
    # template, or launch data in a shape we do not recognise): then current tags are read.
    creation_tags_known: bool = True
    # When the call was made (CloudTrail's eventTime): the resources it names were created then.
    event_time: datetime | None = None


def valid_id(resource_type: str, value: object) -> bool:
    pattern = _ID_PATTERN.get(resource_type)
    return isinstance(value, str) and pattern is not None and pattern.fullmatch(value) is not None


def parse(event: Any) -> CreationEvent:
    """The event as a :class:`CreationEvent`, or BadEvent saying why it is not one."""
    source = require(event, "source", str)
    detail_type = require(event, "detail-type", str)
    if source != SOURCE or detail_type != DETAIL_TYPE:
        raise BadEvent(f"expected an EC2 CloudTrail API call, got {source!r} / {detail_type!r}")
    if not require(event, "id", str).strip():  # the runner claims the event by its id
        raise BadEvent("event.id is empty")
    detail = require(event, "detail", Mapping)
    event_source = require(detail, "eventSource", str, "event.detail")
    name = require(detail, "eventName", str, "event.detail")
    if event_source != EVENT_SOURCE or name not in CREATION_CALLS:
        raise BadEvent(f"not an EC2 creation call this function handles: {event_source} {name}")
    call = CREATION_CALLS[name]
    event_id = str(detail.get("eventID") or event["id"])
    region = str(detail.get("awsRegion") or event.get("region") or "")
    delivered = parse_time(require(event, "time", str))
    call_time = detail.get("eventTime")
    event_time = parse_time(call_time, "event.detail.eventTime") if isinstance(call_time, str) else delivered
    error_code = detail.get("errorCode")
    if error_code is not None:
        raise BadEvent(f"{name} failed ({str(error_code)[:100]}): it created nothing to tag")
    ids = _COMPILED[name].search(detail)
    id_list = [ids] if isinstance(ids, str) else ids if isinstance(ids, list) else []
    if not id_list and name == "CreateFleet":
        errors = jmespath.search("responseElements.CreateFleetResponse.errorSet", detail)
        if errors:  # every launch failed (capacity, say): nothing was created, nothing missed
            found = jmespath.search("item[].errorCode || item.errorCode", errors)
            codes = sorted({str(c) for c in (found if isinstance(found, list) else [found or "unknown"])})
            raise EmptyEvent(f"CreateFleet launched no instance ({', '.join(map(str, codes))[:200]})")
    if not id_list:
        raise BadEvent(f"{name} event has no resource ids at detail.{call.ids.split(' ||')[0]}")
    bad = [i for i in id_list if not valid_id(call.resource_type, i)]
    if bad:
        raise BadEvent(
            f"{name} event has malformed {call.resource_type} ids: {[str(b)[:40] for b in bad[:5]]!r}"
        )
    unique = tuple(dict.fromkeys(id_list))
    request = detail.get("requestParameters")
    request = request if isinstance(request, Mapping) else {}
    creation_tags, known = _tag_specifications(request.get("tagSpecificationSet"))
    instances: tuple[LaunchedInstance, ...] = ()
    if call.resource_type == "instance":
        instances, instances_known = _launched_instances(detail.get("responseElements"), unique)
        # a launch template (every fleet launches from one) may tag what it launches unseen
        known = known and instances_known and "launchTemplate" not in request and name != "CreateFleet"
    return CreationEvent(
        event_id=event_id,
        event_name=name,
        resource_type=call.resource_type,
        resource_ids=unique,
        identity=detail.get("userIdentity"),
        region=region,
        instances=instances,
        creation_tags=creation_tags,
        creation_tags_known=known,
        event_time=event_time,
    )


def _items(container: object) -> list[Any] | None:
    """CloudTrail's ``{"items": [...]}`` list wrapper as a list; None if it has another shape."""
    if container is None:
        return []
    if isinstance(container, Mapping):
        items = container.get("items", [])
        return items if isinstance(items, list) else None
    return None


def _tag_pairs(tags: object) -> dict[str, str] | None:
    if tags is None:
        return {}
    raw = tags if isinstance(tags, list) else _items(tags)
    if raw is None:
        return None
    pairs: dict[str, str] = {}
    for tag in raw:
        if not isinstance(tag, Mapping) or not isinstance(tag.get("key"), str):
            return None
        pairs[tag["key"]] = str(tag.get("value", ""))
    return pairs


def _tag_specifications(spec_set: object) -> tuple[dict[str, dict[str, str]], bool]:
    specs = _items(spec_set)
    if specs is None:
        return {}, False
    by_type: dict[str, dict[str, str]] = {}
    for spec in specs:
        if not isinstance(spec, Mapping) or not isinstance(spec.get("resourceType"), str):
            return {}, False
        pairs = _tag_pairs(spec.get("tags", spec.get("tagSet")))
        if pairs is None:
            return {}, False
        by_type.setdefault(spec["resourceType"], {}).update(pairs)
    return by_type, True


def _launched_instances(response: object, ids: tuple[str, ...]) -> tuple[tuple[LaunchedInstance, ...], bool]:
    items = _items(response.get("instancesSet")) if isinstance(response, Mapping) else None
    found: dict[str, LaunchedInstance] = {}
    known = items is not None
    for item in items or []:
        if not isinstance(item, Mapping) or not valid_id("instance", item.get("instanceId")):
            known = False
            continue
        tags = _tag_pairs(item.get("tagSet"))
        enis = _items(item.get("networkInterfaceSet"))
        eni_ids = tuple(
            str(e["networkInterfaceId"])
            for e in enis or []
            if isinstance(e, Mapping) and valid_id("network-interface", e.get("networkInterfaceId"))
        )
        if tags is None or enis is None:
            known = False
        found[item["instanceId"]] = LaunchedInstance(item["instanceId"], tags or {}, eni_ids)
    return tuple(found.get(i, LaunchedInstance(i)) for i in ids), known
