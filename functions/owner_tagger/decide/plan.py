"""Decide, per resource, whether to write the owner tag and with which value. Pure.

Rules, in order (docs/owner_tagger.md "Decisions"):
1. A resource that already has the owner tag keeps it, whatever its value (never overwritten).
2. A volume or network interface launched with an instance that already has an owner tag
   gets the instance's value (the owner someone chose on purpose beats the caller's identity).
3. Otherwise it gets the owner resolved from the CloudTrail identity.
4. If there is none, it is left untagged and reported as unresolved.

Also here, as pure functions of plain data: what DescribeInstances and the event's launch data
say about a RunInstances launch (:func:`launch`: the targets, their known owner tags, which
attachments' tags must still be read), and the run's intent (:func:`intent`: the plain JSON the
runner records before acting, and from which ``act`` and ``report`` work).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from owner_tagger.decide.identity import Resolution, owner_value
from owner_tagger.event import CreationEvent

Action = Literal["tag", "keep", "unresolved"]

# Waits before re-reading instances whose EBS volumes are not attached yet: 14 s at most.
ATTACH_WAITS: Final = (2.0, 4.0, 8.0)
ATTACHMENT_TYPES: Final = ("volume", "network-interface")
# A resource the event names must have been created this close to the event's call time. The
# creation call makes it within seconds; one created long before is not this call's (a forged
# or replayed event naming someone else's old resource) and gets no owner from this event.
CREATED_WITHIN: Final = timedelta(minutes=15)


def created_by_the_call(created_at: datetime | None, event_time: datetime | None) -> bool:
    """Was the resource created at the time of the creation call (within CREATED_WITHIN)? An
    unknown creation time or call time is not proof: False."""
    if created_at is None or event_time is None:
        return False
    return abs(created_at - event_time) <= CREATED_WITHIN


@dataclass(frozen=True)
class InstanceView:
    """What DescribeInstances says about one instance, reduced to what the decision needs."""

    id: str
    state: str
    root_device_type: str
    tags: Mapping[str, str] = field(default_factory=dict)
    volume_ids: tuple[str, ...] = ()
    network_interface_ids: tuple[str, ...] = ()
    # When the instance was created: its primary network interface's attach time (LaunchTime
    # changes at every start, so a stopped-and-started old instance would look new).
    created_at: datetime | None = None

    @property
    def gone(self) -> bool:
        return self.state in {"shutting-down", "terminated"}

    @property
    def volumes_pending(self) -> bool:
        """An EBS-backed instance whose root volume is not attached (yet)."""
        return self.root_device_type == "ebs" and not self.volume_ids and not self.gone


@dataclass(frozen=True)
class Target:
    """A resource the creation call made: its id, EC2 type and the instance it came with."""

    id: str
    type: str  # instance, volume, network-interface, snapshot, image
    parent: str | None = None
    name: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "parent": self.parent, "name": self.name}


@dataclass(frozen=True)
class Decision:
    target: Target
    action: Action
    value: str | None  # tag: the value to write; keep: the existing value; unresolved: None
    source: str  # identity | instance | group (an Auto Scaling group's owner tag) | existing | none


@dataclass(frozen=True)
class Decisions:
    decisions: tuple[Decision, ...]

    def of(self, action: Action) -> list[Decision]:
        return [d for d in self.decisions if d.action == action]

    def writes(self) -> dict[str, list[str]]:
        """Owner value -> resource ids to tag with it (one CreateTags batch per value)."""
        return by_value((d.target.id, d.value) for d in self.of("tag") if d.value is not None)


def by_value(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """(resource id, owner value) pairs grouped by value, in order: one tag set per CreateTags."""
    grouped: dict[str, list[str]] = {}
    for resource_id, value in pairs:
        grouped.setdefault(value, []).append(resource_id)
    return grouped


def _usable(value: str | None) -> str | None:
    """An instance's own owner tag, as its attachments inherit it: as it is (identity.owner_value)."""
    return owner_value(value)


def decide(targets: Iterable[Target], current: Mapping[str, str], owner: Resolution) -> Decisions:
    """One decision per distinct target. ``current`` maps resource id -> its existing owner tag
    value (absent = no owner tag); it must cover every target and every target's parent."""
    decisions: list[Decision] = []
    seen: set[str] = set()
    for target in targets:
        if target.id in seen:
            continue
        seen.add(target.id)
        if target.id in current:
            decisions.append(Decision(target, "keep", current[target.id], "existing"))
            continue
        inherited = _usable(current.get(target.parent)) if target.parent else None
        if inherited:
            decisions.append(Decision(target, "tag", inherited, "instance"))
        elif owner.value is not None:
            decisions.append(Decision(target, "tag", owner.value, "identity"))
        else:
            decisions.append(Decision(target, "unresolved", None, "none"))
    return Decisions(tuple(decisions))


ASG_TAG: Final = "aws:autoscaling:groupName"  # EC2 puts it on every instance of a group


def decide_by_group(
    targets: Sequence[Target],
    current: Mapping[str, str],
    owner: Resolution,
    group_of: Mapping[str, str],
    group_owner: Mapping[str, str],
) -> Decisions:
    """:func:`decide`, where an Auto Scaling launch (the owner is the service) gives each
    group's instances - and their volumes and interfaces - the group's own owner tag, when the
    group has one (``group_of``: instance id -> its group; ``group_owner``: group -> the value).
    Everything else as :func:`decide`: an existing owner tag stays, the instance's is inherited."""
    if owner.kind != "service":
        return decide(targets, current, owner)
    by_group: dict[str | None, list[Target]] = {}
    for target in targets:
        group = group_of.get(target.parent or target.id)
        value = owner_value(group_owner.get(group, "")) if group else None
        by_group.setdefault(group if value else None, []).append(target)
    decisions: list[Decision] = []
    for group, members in by_group.items():
        if group is None:
            decisions += decide(members, current, owner).decisions
            continue
        resolution = Resolution(owner_value(group_owner[group]), "service", f"Auto Scaling group {group}")
        decisions += [
            replace(d, source="group") if d.source == "identity" else d
            for d in decide(members, current, resolution).decisions
        ]
    order = {t.id: n for n, t in enumerate(targets)}
    return Decisions(tuple(sorted(decisions, key=lambda d: order[d.target.id])))


# -- RunInstances: what the instances look like now, and what the event says about the launch --


def waiting(ids: Iterable[str], views: Mapping[str, InstanceView]) -> list[str]:
    """The instances worth reading again: not found yet, or EBS-backed without a volume yet."""
    return [i for i in ids if i not in views or views[i].volumes_pending]


@dataclass(frozen=True)
class Launch:
    """The resources of one RunInstances event and what is known about their owner tags."""

    targets: tuple[Target, ...]
    current: Mapping[str, str]  # resource id -> its owner tag value, where known to exist
    gone: tuple[str, ...]  # instances terminated or not found
    volumes_missing: tuple[Target, ...]  # instances whose volumes were never attached
    to_read: tuple[str, ...]  # attachments whose owner tags must be read (DescribeTags)
    not_new: tuple[Target, ...] = ()  # instances created long before the event: not this call's


def launch(event: CreationEvent, views: Mapping[str, InstanceView], key: str) -> Launch:
    """The targets of a RunInstances event: each instance still there, its volumes (from
    DescribeInstances) and its ENIs (from DescribeInstances and the event), with the owner tags
    known without another call.

    The instances' tags come with DescribeInstances. The attachments' tags are known from the
    event in the common case: nothing had an owner at launch and the instances still have none,
    so this event was not handled before, and the launch data says which attachments were tagged
    at creation (2 API calls per event in all). Otherwise (a launch template, launch data of a
    shape we do not recognise, an owner already on an instance) they are to be read."""
    launched = {i.id: i for i in event.instances}
    targets: list[Target] = []
    current: dict[str, str] = {}
    gone: list[str] = []
    missing: list[Target] = []
    not_new: list[Target] = []
    for instance_id in event.resource_ids:
        view = views.get(instance_id)
        if view is None or view.gone:
            gone.append(instance_id)
            continue
        name = view.tags.get("Name", "")
        instance = Target(instance_id, "instance", name=name)
        if not created_by_the_call(view.created_at, event.event_time):
            not_new.append(instance)  # nor its volumes and interfaces: none of it is tagged
            continue
        targets.append(instance)
        if key in view.tags:
            current[instance_id] = view.tags[key]
        if view.volumes_pending:
            missing.append(instance)
        enis = dict.fromkeys(view.network_interface_ids)
        if instance_id in launched:
            enis.update(dict.fromkeys(launched[instance_id].network_interface_ids))
        targets += [Target(v, "volume", instance_id, name) for v in view.volume_ids]
        targets += [Target(n, "network-interface", instance_id, name) for n in enis]
    attachments = [t for t in targets if t.type in ATTACHMENT_TYPES]
    to_read: tuple[str, ...] = ()
    if attachments and event.creation_tags_known and not current:
        for target in attachments:
            launch_tags = event.creation_tags.get(target.type, {})
            if key in launch_tags:
                current[target.id] = launch_tags[key]
    elif attachments:
        to_read = tuple(t.id for t in attachments)
    return Launch(tuple(targets), current, tuple(gone), tuple(missing), to_read, tuple(not_new))


# -- the intent ------------------------------------------------------------------------------


def intent(
    event: CreationEvent,
    owner: Resolution,
    decided: Decisions,
    caller: Mapping[str, str] | None,
    volumes_missing: Sequence[Target] = (),
    waited: float = 0.0,
    not_new: Sequence[Target] = (),
) -> dict[str, Any] | None:
    """What the run is about to do and has to tell, as plain JSON (recorded before acting):
    the owner writes, the resources left unresolved, the instances whose volumes never came, the
    resources refused because they were created long before the event.
    None when there is nothing to write and nothing a person must hear about (every resource
    kept its owner: a repeat delivery, or owners set at launch)."""
    tag = [{**d.target.as_dict(), "value": d.value, "source": d.source} for d in decided.of("tag")]
    unresolved = [d.target.as_dict() for d in decided.of("unresolved")]
    if not (tag or unresolved or volumes_missing or not_new):
        return None
    return {
        "event": {"id": event.event_id, "name": event.event_name, "caller": caller},
        "owner": owner.as_dict(),
        "tag": tag,
        "unresolved": unresolved,
        "volumes_missing": [t.as_dict() for t in volumes_missing],
        "waited_seconds": waited,
        "not_new": [t.as_dict() for t in not_new],
        "event_time": event.event_time.isoformat() if event.event_time else None,
    }
