"""owner_tagger's mail and numbers, pure: from the recorded intent and what ``act`` returned.

Tagging is routine and silent. A mail (severity ``warning``, one per event) only when a person
has to do something: the owner is unknown (resources left untagged), tagging failed for some
resources, an instance's volumes were never attached within the bounded wait, or the event
named resources created long before its call (forged or replayed: nothing written).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autopilot import console
from autopilot.notify import Digest, Item, plural
from autopilot.outbox import Mail
from autopilot.runner import Context, Counts
from owner_tagger.config import Config
from owner_tagger.decide import CREATED_WITHIN

Resource = Mapping[str, Any]  # a target in the intent: id, type, parent, name (+ value, source)


def mail(ctx: Context[Config], intent: Mapping[str, Any], result: Mapping[str, Any]) -> Mail | None:
    """The mail for this event, or None when nobody has to do anything."""
    unresolved: list[Resource] = list(intent.get("unresolved", []))
    failures: list[Mapping[str, str]] = list(result.get("failed", []))
    missing: list[Resource] = list(intent.get("volumes_missing", []))
    not_new: list[Resource] = list(intent.get("not_new", []))
    if not (unresolved or failures or missing or not_new):
        return None
    common = ctx.common
    event = intent["event"]
    who = _who(event.get("caller"))
    key = common.owner_tag_key
    digest = Digest("owner_tagger", common.stack_name, common.region, dry_run=ctx.dry_run)
    if unresolved:
        reason = intent.get("owner", {}).get("reason") or "unknown"
        digest.section(
            "Owner unknown (left untagged)",
            [
                Item(
                    _title(r),
                    [
                        f"Created by {event['name']} (event {event['id']}); caller: {who}",
                        f"Why: the caller's identity names no owner ({reason}).",
                    ],
                    _link(common.region, r),
                )
                for r in unresolved
            ],
        )
    if failures:
        intended = {str(t["id"]): t for t in intent.get("tag", [])}
        digest.section("Tagging failed", [_failure(common.region, f, intended) for f in failures])
    if missing:
        waited = float(intent.get("waited_seconds", 0.0))
        digest.section(
            "Volumes not attached in time (instance tagged, its volumes not)",
            [
                Item(
                    _title(r),
                    [f"No EBS volume was attached {waited:.0f} s after the event arrived."],
                    _link(common.region, r),
                )
                for r in missing
            ],
        )
    if not_new:
        digest.section(
            "Not tagged: created long before the event (a forged or replayed event?)",
            [
                Item(
                    _title(r),
                    [
                        f"The {event['name']} event (id {event['id']}, call time "
                        f"{intent.get('event_time') or 'unknown'}) names it, but it was created "
                        f"more than {int(CREATED_WITHIN.total_seconds() // 60)} minutes away from that "
                        "call, so the call did not create it.",
                        "Nothing was written. Check who may invoke this function or put events on its rule.",
                    ],
                    _link(common.region, r),
                )
                for r in not_new
            ],
        )
    digest.advice += [
        f"Set the tag yourself: aws ec2 create-tags --resources <id> --tags Key={key},Value=<owner>",
        f"owner_tagger never overwrites an existing {key} tag, so your value stays.",
    ]
    parts = []
    if unresolved:
        parts.append(f"owner unknown for {plural(len(unresolved), 'resource')}")
    if failures:
        parts.append(f"tagging failed for {plural(len(failures), 'resource')}")
    if missing:
        parts.append(f"volumes not tagged on {plural(len(missing), 'instance')}")
    if not_new:
        parts.append(f"{plural(len(not_new), 'old resource')} named by the event, not tagged")
    summary = (
        f"{event['name']} by {who} created resources that did not get an owner tag "
        f"({key}). They need a person to set it."
    )
    return digest.mail("Owner tag: " + ", ".join(parts), summary, "warning", now=ctx.now)


def counts(intent: Mapping[str, Any], result: Mapping[str, Any]) -> Counts:
    """The act-side numbers: owner tags written (``Changed``, ``ResourcesTagged``), tag writes
    that failed plus instances whose volumes never came (``Failed``), ``OwnersUnresolved``.
    Resumed, an owner found with the intended value was written by the earlier attempt of this
    intent (counted here, once: that attempt died before counting); one found with another value
    was set by someone meanwhile and kept (``Skipped``), as was one IAM refused to overwrite
    (``kept``)."""
    intended = {str(t["id"]): t.get("value") for t in intent.get("tag", [])}
    found: Mapping[str, str] = result.get("found", {})
    earlier = sum(1 for resource_id, value in found.items() if intended.get(resource_id) == value)
    changed = len(result.get("tagged", {})) + earlier
    return Counts(
        changed=changed,
        skipped=len(found) - earlier + len(result.get("kept", {})),
        failed=len(result.get("failed", [])) + len(intent.get("volumes_missing", [])),
        extra={"ResourcesTagged": changed, "OwnersUnresolved": len(intent.get("unresolved", []))},
    )


def _failure(region: str, failure: Mapping[str, str], intended: Mapping[str, Resource]) -> Item:
    resource = intended.get(failure["id"]) or {"id": failure["id"], "type": "resource"}
    details = [f"Owner to write: {resource.get('value')}", f"Error: {failure['code']}: {failure['message']}"]
    return Item(_title(resource), details, _link(region, resource))


def _who(caller: Mapping[str, str] | None) -> str:
    if caller is None:
        return "no identity in the event"
    kind = caller.get("type") or "identity of unknown type"
    name = caller.get("name")
    return f"{kind} {name}" if name else kind


def _title(resource: Resource) -> str:
    label = f"{str(resource['type']).replace('-', ' ')} {resource['id']}"
    if resource.get("parent"):
        label += f" of instance {resource['parent']}"
    return label + (f" (Name: {resource['name']})" if resource.get("name") else "")


def _link(region: str, resource: Resource) -> str | None:
    kind, resource_id, parent = resource["type"], str(resource["id"]), resource.get("parent")
    if kind == "network-interface" and parent:
        return console.ec2_instance(region, str(parent))
    return console.ec2_resource(region, str(kind), resource_id)
