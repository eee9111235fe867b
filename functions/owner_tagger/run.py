"""owner_tagger's sequence, for the runner (autopilot.runner): ``plan`` gathers (service) and
decides (decide) and changes nothing; ``act`` carries out a recorded intent (service).

AWS calls of one event (plan, then act):
- RunInstances, nothing tagged with an owner at launch (the common case): 1 DescribeInstances
  (per 1,000 instances) + 1 CreateTags (per owner value and 1,000 resources);
- RunInstances via a launch template (Auto Scaling), or with an owner already on an instance
  (a repeat delivery, an owner set at launch): + 1 DescribeTags of the volumes and ENIs;
- an EBS-backed instance whose volume is not attached yet: DescribeInstances again after 2, 4
  and 8 s at most (never past the invocation's deadline);
- CreateVolume, CreateSnapshot(s), CopySnapshot, CreateImage, CopyImage, RegisterImage:
  1 DescribeVolumes / DescribeSnapshots / DescribeImages (creation time and tags) + 1 CreateTags;
  an image adds 1 DescribeSnapshots of its backing snapshots (tagged in the same CreateTags),
  and DescribeImages again after 2, 4 and 8 s at most while a pending image lists none;
- a resource created long before the event's call time (decide.CREATED_WITHIN) is refused,
  whatever the event says: a forged or replayed event cannot give an old resource an owner;
- act resumed (a run died between two CreateTags; the runner calls ``act`` again on its
  recorded intent): 1 DescribeTags of the intended resources first, so that an owner set
  meanwhile stays, then CreateTags for the rest only;
- dry run: the same reads and decisions, no CreateTags.
The runner adds its own DynamoDB calls (claim, outbox) and the mail's Publish.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger

from autopilot.runner import Context, Counts, Plan, Run
from owner_tagger import decide, service
from owner_tagger.config import Config
from owner_tagger.event import CreationEvent

logger = Logger(child=True)

Sleep = Callable[[float], None]


def plan(run: Run[Config, CreationEvent], sleep: Sleep = time.sleep) -> Plan:
    """Gather the created resources and their owner tags, decide each one. Changes nothing."""
    event = run.trigger
    if event is None:
        raise TypeError("owner_tagger's plan needs the parsed creation event")
    key = run.common.owner_tag_key
    if event.region and event.region != run.common.region:
        # EventBridge delivers this region's events only; another region's ids name nothing here
        # (a misrouted or forged event): no call, no wait, one reasoned log line and a count.
        reason = f"an event of region {event.region[:30]}; this function tags in {run.common.region}"
        line = {"event": event.event_id, "action": "ignored", "reason": reason}
        return Plan(intent=None, counts=_counts(0, 0, other_region=1), decisions=[line])
    owner = decide.resolve_owner(event.identity)
    gone: tuple[str, ...] = ()
    group_of: dict[str, str] = {}  # instance -> its Auto Scaling group
    missing: tuple[decide.Target, ...] = ()
    not_new: tuple[decide.Target, ...] = ()
    waited = 0.0
    if event.resource_type == "instance":
        views, waited = _instances(event, run, sleep)
        launch = decide.launch(event, views, key)
        current = dict(launch.current)
        if launch.to_read:
            current.update(service.owner_tags(launch.to_read, key))
        targets, gone, missing = list(launch.targets), launch.gone, launch.volumes_missing
        not_new = launch.not_new
        group_of = {
            t.id: views[t.id].tags[decide.ASG_TAG]
            for t in targets
            if t.type == "instance" and decide.ASG_TAG in views[t.id].tags
        }
    else:
        found = service.created(event.resource_type, event.resource_ids, key)
        gone = tuple(i for i in event.resource_ids if i not in found)
        new = [i for i in event.resource_ids if i in found]
        not_new = tuple(
            decide.Target(i, event.resource_type)
            for i in new
            if not decide.created_by_the_call(found[i].created_at, event.event_time)
        )
        refused = {t.id for t in not_new}
        targets = [decide.Target(i, event.resource_type) for i in new if i not in refused]
        current = {t.id: owner_value for t in targets if (owner_value := found[t.id].owner) is not None}
        if event.resource_type == "image" and targets:
            backing, more_not_new, waited = _backing_snapshots(
                event, [t.id for t in targets], found, key, run, sleep
            )
            targets += backing.targets
            current.update(backing.current)
            not_new += more_not_new
    group_owner = (
        service.group_owners(set(group_of.values()), key) if group_of and owner.kind == "service" else {}
    )
    decided = decide.decide_by_group(targets, current, owner, group_of, group_owner)
    lines: list[dict[str, Any]] = [
        {
            "resource": i,
            "type": event.resource_type,
            "action": "gone",
            "reason": "not found in this account and region (terminated or deleted, or never created here)",
        }
        for i in gone
    ]
    lines += [
        {
            "resource": t.id,
            "type": t.type,
            "action": "refused",
            "reason": f"created more than {decide.CREATED_WITHIN} away from the call: not made by it",
        }
        for t in not_new
    ]
    lines += [
        {
            "resource": d.target.id,
            "type": d.target.type,
            "action": d.action,
            "value": d.value,
            "source": d.source,
            "owner_kind": owner.kind,
            "dry_run": run.dry_run,
        }
        for d in decided.decisions
    ]
    counts = _counts(
        len(decided.decisions), len(decided.of("keep")) + len(gone) + len(not_new), len(not_new), len(gone)
    )
    intent = decide.intent(event, owner, decided, decide.caller(event.identity), missing, waited, not_new)
    return Plan(intent=intent, counts=counts, decisions=lines)


def _counts(
    checked: int, skipped: int, not_new: int = 0, not_found: int = 0, other_region: int = 0
) -> Counts:
    """The plan's numbers, every name always emitted (report.counts adds the act's)."""
    extra = {
        "ResourcesTagged": 0,
        "OwnersUnresolved": 0,
        "ResourcesNotNew": not_new,
        "ResourcesNotFound": not_found,
        "OtherRegionEvents": other_region,
    }
    return Counts(checked=checked, skipped=skipped, extra=extra)


@dataclass(frozen=True)
class _Backing:
    targets: list[decide.Target]
    current: dict[str, str]


def _backing_snapshots(
    event: CreationEvent,
    images: list[str],
    found: dict[str, service.Created],
    key: str,
    run: Run[Config, CreationEvent],
    sleep: Sleep,
) -> tuple[_Backing, tuple[decide.Target, ...], float]:
    """The EBS snapshots behind the new images (their storage is the image's cost): read from
    DescribeImages, waited for (bounded, within the deadline) while a pending image lists none
    yet, then their creation time and owner tag (one DescribeSnapshots). A snapshot created long
    before the call - an image registered from an old snapshot - is not this call's: refused."""
    waited = 0.0
    for wait in decide.ATTACH_WAITS:
        pending = [i for i in images if not found[i].snapshots and found[i].state == "pending"]
        if not pending or run.deadline.remaining() < wait:
            break
        logger.info("waiting for the images' snapshots", extra={"images": pending, "seconds": wait})
        sleep(wait)
        waited += wait
        found.update(service.created("image", pending, key))
    backing = {snapshot: image for image in images for snapshot in found[image].snapshots}
    snapshots = service.created("snapshot", list(backing), key) if backing else {}
    targets: list[decide.Target] = []
    current: dict[str, str] = {}
    not_new: list[decide.Target] = []
    for snapshot_id, image_id in backing.items():
        snap = snapshots.get(snapshot_id)
        if snap is None:
            continue  # deleted meanwhile (or not this account's): nothing to tag
        target = decide.Target(snapshot_id, "snapshot", image_id)
        if not decide.created_by_the_call(snap.created_at, event.event_time):
            not_new.append(target)
            continue
        targets.append(target)
        if snap.owner is not None:
            current[snapshot_id] = snap.owner
    return _Backing(targets, current), tuple(not_new), waited


def _instances(
    event: CreationEvent, run: Run[Config, CreationEvent], sleep: Sleep
) -> tuple[dict[str, decide.InstanceView], float]:
    """The event's instances, read again (bounded, within the deadline) while some are not
    found yet or have no volume attached yet; and the seconds waited."""
    views = service.describe_instances(event.resource_ids)
    waited = 0.0
    for wait in decide.ATTACH_WAITS:
        pending = decide.waiting(event.resource_ids, views)
        if not pending or run.deadline.remaining() < wait:
            break
        logger.info("waiting for instances or their volumes", extra={"instances": pending, "seconds": wait})
        sleep(wait)
        waited += wait
        views.update(service.describe_instances(pending))
    return views, waited


def act(ctx: Context[Config], intent: Mapping[str, Any]) -> dict[str, Any]:
    """Write the intended owner tags; idempotent. Returns what was tagged, what failed (per
    resource, by error code), what IAM refused to overwrite (``kept``: an owner key set on the
    resource after the plan read it - by hand on a volume, say) and, when resumed, the owner
    tags found already in place.

    Resumed (``ctx.resumed``: an earlier run recorded this intent and died while acting), the
    owner tags of the intended resources are read first and those that have one are left alone:
    written by the earlier run, or set by someone meanwhile - never overwritten. In dry run
    nothing is called at all."""
    writes: list[Mapping[str, Any]] = list(intent.get("tag", []))
    if ctx.dry_run or not writes:
        return {"tagged": {}, "failed": [], "found": {}, "kept": {}}
    key = ctx.common.owner_tag_key
    found: dict[str, str] = {}
    if ctx.resumed:
        found = service.owner_tags([str(w["id"]) for w in writes], key)
        writes = [w for w in writes if w["id"] not in found]
    failures: list[service.TagFailure] = []
    kept: dict[str, str] = {}
    for value, ids in decide.by_value((str(w["id"]), str(w["value"])) for w in writes).items():
        written = service.create_tags(ids, key, value)
        failures += written.failures
        kept.update(written.kept)
    for failure in failures:
        logger.warning("tagging failed", extra={"resource": failure.resource_id, "code": failure.code})
    for resource_id, owner in kept.items():
        logger.info("owner set meanwhile: kept", extra={"resource": resource_id, "value": owner})
    failed = {f.resource_id for f in failures}
    return {
        "tagged": {str(w["id"]): str(w["value"]) for w in writes if w["id"] not in failed | kept.keys()},
        "failed": [f.as_dict() for f in failures],
        "found": found,
        "kept": kept,
    }
