"""One CloudTrail creation event, end to end: gather current state, decide, tag, report."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from aws_lambda_powertools import Logger

from autopilot import console
from autopilot.notify import Digest, Item, plural
from autopilot.runtime import Deadline
from owner_tagger import ec2
from owner_tagger.config import OwnerTaggerConfig
from owner_tagger.identity import Resolution, resolve_owner
from owner_tagger.plan import Decision, Plan, Target, decide
from owner_tagger.trail import CreationEvent

logger = Logger(child=True)

# Waits before re-reading instances whose EBS volumes are not attached yet: 14 s at most.
ATTACH_WAITS: Final = (2.0, 4.0, 8.0)
ATTACHMENT_TYPES: Final = ("volume", "network-interface")


@dataclass
class Outcome:
    """What happened to one event; ``summary()`` is the handler's return value."""

    event: CreationEvent
    dry_run: bool
    owner: Resolution | None = None
    plan: Plan = field(default_factory=lambda: Plan(()))
    failures: list[ec2.TagFailure] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)  # instances terminated or not found
    volumes_missing: list[Target] = field(default_factory=list)  # instances without volumes
    skipped_reason: str | None = None

    @property
    def tagged(self) -> list[Decision]:
        failed = {f.resource_id for f in self.failures}
        return [] if self.dry_run else [d for d in self.plan.of("tag") if d.target.id not in failed]

    def summary(self) -> dict[str, Any]:
        return {
            "status": "skipped" if self.skipped_reason else "done",
            "reason": self.skipped_reason,
            "event": self.event.event_name,
            "event_id": self.event.event_id,
            "dry_run": self.dry_run,
            "owner": self.owner.value if self.owner else None,
            "owner_kind": self.owner.kind if self.owner else None,
            "tagged": {d.target.id: d.value for d in self.tagged},
            "would_tag": {d.target.id: d.value for d in self.plan.of("tag")} if self.dry_run else {},
            "kept": {d.target.id: d.value for d in self.plan.of("keep")},
            "unresolved": [d.target.id for d in self.plan.of("unresolved")],
            "failed": {f.resource_id: f.code for f in self.failures},
            "gone": list(self.gone),
            "volumes_not_attached": [t.id for t in self.volumes_missing],
        }


def execute(
    config: OwnerTaggerConfig,
    event: CreationEvent,
    deadline: Deadline,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    outcome = Outcome(event=event, dry_run=config.common.dry_run)
    if event.error_code is not None:
        outcome.skipped_reason = f"the call failed ({event.error_code}); nothing was created"
        logger.info("skipped failed call", extra={"event_name": event.event_name, "error": event.error_code})
        return outcome
    outcome.owner = resolve_owner(event.identity)
    key = config.owner_tag_key
    if event.resource_type == "instance":
        targets, current = _gather_instances(event, key, deadline, sleep, outcome)
    else:
        targets = [Target(i, event.resource_type) for i in event.resource_ids]
        current = ec2.owner_tags(event.resource_ids, key)
    outcome.plan = decide(targets, current, outcome.owner)
    for d in outcome.plan.decisions:
        logger.info(
            "decision",
            extra={
                "resource": d.target.id,
                "type": d.target.type,
                "action": d.action,
                "value": d.value,
                "source": d.source,
                "dry_run": outcome.dry_run,
            },
        )
    if not outcome.dry_run:
        for value, ids in outcome.plan.writes().items():
            outcome.failures += ec2.create_tags(ids, key, value)
    for failure in outcome.failures:
        logger.warning("tagging failed", extra={"resource": failure.resource_id, "code": failure.code})
    return outcome


def _gather_instances(
    event: CreationEvent,
    key: str,
    deadline: Deadline,
    sleep: Callable[[float], None],
    outcome: Outcome,
) -> tuple[list[Target], dict[str, str]]:
    views = ec2.describe_instances(event.resource_ids)
    for wait in ATTACH_WAITS:
        waiting = [i for i in event.resource_ids if i not in views or views[i].volumes_pending]
        if not waiting or deadline.remaining() < wait:
            break
        logger.info("waiting for instances or their volumes", extra={"instances": waiting, "seconds": wait})
        sleep(wait)
        views.update(ec2.describe_instances(waiting))
    launched = {i.id: i for i in event.instances}
    targets: list[Target] = []
    current: dict[str, str] = {}
    for instance_id in event.resource_ids:
        view = views.get(instance_id)
        if view is None or view.gone:
            outcome.gone.append(instance_id)
            logger.info("instance gone before tagging", extra={"instance": instance_id})
            continue
        name = view.tags.get("Name", "")
        instance = Target(instance_id, "instance", name=name)
        targets.append(instance)
        if key in view.tags:
            current[instance_id] = view.tags[key]
        if view.volumes_pending:
            outcome.volumes_missing.append(instance)
        enis = dict.fromkeys(view.network_interface_ids)
        if instance_id in launched:
            enis.update(dict.fromkeys(launched[instance_id].network_interface_ids))
        targets += [Target(v, "volume", instance_id, name) for v in view.volume_ids]
        targets += [Target(n, "network-interface", instance_id, name) for n in enis]
    attachments = [t.id for t in targets if t.type in ATTACHMENT_TYPES]
    if not attachments:
        return targets, current
    if event.creation_tags_known and not current:
        # The common case: nothing had an owner at launch and the instances still have none,
        # so this event was not handled before; the launch data says which attachments were
        # tagged at creation. Saves a DescribeTags call (2 API calls per event in all).
        for target in targets:
            launch_tags = event.creation_tags.get(target.type, {})
            if target.type in ATTACHMENT_TYPES and key in launch_tags:
                current[target.id] = launch_tags[key]
    else:
        current.update(ec2.owner_tags(attachments, key))
    return targets, current


def digest(config: OwnerTaggerConfig, outcome: Outcome) -> tuple[Digest, str, str] | None:
    """The mail for this event, only when a person has to do something: owner unknown,
    tagging failed, or volumes that were never attached. (Subject text, summary) with it."""
    unresolved = outcome.plan.of("unresolved")
    problems = len(unresolved) + len(outcome.failures) + len(outcome.volumes_missing)
    if not problems:
        return None
    common = config.common
    event = outcome.event
    mail = Digest("owner_tagger", common.stack_name, common.region, dry_run=common.dry_run)
    who = _who(event.identity)
    decided = {d.target.id: d for d in outcome.plan.decisions}
    if unresolved:
        reason = outcome.owner.reason if outcome.owner else "unknown"
        mail.section(
            "Owner unknown (left untagged)",
            [
                Item(
                    _title(d.target),
                    [
                        f"Created by {event.event_name} (event {event.event_id}); caller: {who}",
                        f"Why: the caller's identity names no owner ({reason}).",
                    ],
                    _link(common.region, d.target),
                )
                for d in unresolved
            ],
        )
    if outcome.failures:
        mail.section(
            "Tagging failed",
            [
                Item(
                    _title(decided[f.resource_id].target),
                    [f"Owner to write: {decided[f.resource_id].value}", f"Error: {f.code}: {f.message}"],
                    _link(common.region, decided[f.resource_id].target),
                )
                for f in outcome.failures
            ],
        )
    if outcome.volumes_missing:
        mail.section(
            "Volumes not attached in time (instance tagged, its volumes not)",
            [
                Item(
                    _title(t),
                    [f"No EBS volume was attached {sum(ATTACH_WAITS):.0f} s after the event arrived."],
                    _link(common.region, t),
                )
                for t in outcome.volumes_missing
            ],
        )
    key = config.owner_tag_key
    mail.advice += [
        f"Set the tag yourself: aws ec2 create-tags --resources <id> --tags Key={key},Value=<owner>",
        f"owner_tagger never overwrites an existing {key} tag, so your value stays.",
    ]
    subject_parts = []
    if unresolved:
        subject_parts.append(f"owner unknown for {plural(len(unresolved), 'resource')}")
    if outcome.failures:
        subject_parts.append(f"tagging failed for {plural(len(outcome.failures), 'resource')}")
    if outcome.volumes_missing:
        subject_parts.append(f"volumes not tagged on {plural(len(outcome.volumes_missing), 'instance')}")
    subject = "Owner tag: " + ", ".join(subject_parts)
    summary = (
        f"{event.event_name} by {who} created resources that did not get an owner tag "
        f"({key}). They need a person to set it."
    )
    return mail, subject, summary


def _who(identity: object) -> str:
    if isinstance(identity, Mapping):
        name = identity.get("arn") or identity.get("principalId")
        kind = identity.get("type") or "identity of unknown type"
        return f"{kind} {name}" if isinstance(name, str) else str(kind)
    return "no identity in the event"


def _title(target: Target) -> str:
    label = f"{target.type.replace('-', ' ')} {target.id}"
    if target.parent:
        label += f" of instance {target.parent}"
    return label + (f" (Name: {target.name})" if target.name else "")


def _link(region: str, target: Target) -> str | None:
    if target.type == "instance":
        return console.ec2_instance(region, target.id)
    if target.type == "volume":
        return console.ec2_volume(region, target.id)
    if target.type == "snapshot":
        return console.ec2_snapshot(region, target.id)
    if target.type == "network-interface" and target.parent:
        return console.ec2_instance(region, target.parent)
    return None
