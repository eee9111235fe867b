"""owner_backfill's mail and numbers, pure: from the recorded intent and what ``act`` returned.

One mail per pass, sent by the run that ends it (severity ``info``: nothing broke, but people
should know what got an owner, and which resources need one set by hand). The runs before it
write owners silently; a write that failed counts as ``Failed`` (the Failed alarm mails) and is
tried again by the next pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autopilot import console
from autopilot.notify import Digest, Item, plural
from autopilot.outbox import Mail
from autopilot.runner import Context, Counts
from owner_backfill.config import Config
from owner_backfill.decide import REASONS

Resource = Mapping[str, Any]


def mail(ctx: Context[Config], intent: Mapping[str, Any], result: Mapping[str, Any]) -> Mail | None:
    """The pass's summary, or None while the pass goes on (or when it found nothing to tell)."""
    summary: Mapping[str, Any] = intent.get("pass", {})
    if not summary.get("complete"):
        return None
    tagged_now: Mapping[str, str] = result.get("tagged", {})
    kept: Mapping[str, str] = {**result.get("kept", {}), **result.get("found", {})}
    failures: list[Mapping[str, str]] = list(result.get("failed", []))
    tagged = int(summary.get("tagged_before", 0)) + len(tagged_now)
    unresolved: Mapping[str, int] = summary.get("unresolved", {})
    missing = sum(int(n) for n in unresolved.values())
    if not (tagged or missing or failures):
        return None
    common = ctx.common
    key = common.owner_tag_key
    digest = Digest("owner_backfill", common.stack_name, common.region, dry_run=ctx.dry_run)
    examples = [e for e in summary.get("tagged_examples", []) if e["id"] not in kept]
    if tagged or examples:
        digest.section(
            f"{'Would get' if ctx.dry_run else 'Got'} an owner ({tagged})",
            [_tagged(common.region, key, e) for e in examples],
            [f"... and {tagged - len(examples)} more (the function's log names each)."]
            if tagged > len(examples)
            else None,
        )
    if missing:
        digest.section(
            f"No owner found ({missing})",
            [_unresolved(common.region, e) for e in summary.get("unresolved_examples", [])],
            [
                f"{plural(int(n), 'resource')}: {REASONS.get(reason, reason)}"
                for reason, n in sorted(unresolved.items())
            ],
        )
    if failures:
        digest.section(
            f"Writing the owner failed ({len(failures)})",
            [Item(f["id"], [f"Error: {f['code']}: {f['message']}"]) for f in failures],
        )
    if kept:
        digest.section(
            f"Owner set by someone meanwhile, kept ({len(kept)})",
            [Item(i, [f"{key}: {v}"]) for i, v in sorted(kept.items())],
        )
    digest.advice += [
        f"Set the owner of the rest yourself: "
        f"aws ec2 create-tags --resources <id> --tags Key={key},Value=<owner>",
        f"Nothing that has the {key} tag already is ever changed; "
        "a resource that got none is not looked for again.",
    ]
    runs, lookups = int(summary.get("runs", 1)), int(summary.get("lookups", 0))
    got = "would get" if ctx.dry_run else "got"
    text = (
        f"Owners for existing resources, from CloudTrail's record of who created them: {tagged} "
        f"{got} one, {missing} could not ({plural(lookups, 'LookupEvents call')} in {plural(runs, 'run')})."
    )
    subject = f"Owner backfill: {plural(tagged, 'resource')} {got} an owner, {missing} without"
    return digest.mail(subject, text, "info", now=ctx.now)


def counts(intent: Mapping[str, Any], result: Mapping[str, Any]) -> Counts:
    """The act-side numbers: owners written (``Changed``, ``ResourcesTagged``), writes that
    failed (``Failed``), owners set meanwhile and kept (``Skipped``)."""
    tagged = len(result.get("tagged", {}))
    kept = len(result.get("kept", {})) + len(result.get("found", {}))
    return Counts(
        changed=tagged,
        skipped=kept,
        failed=len(result.get("failed", [])),
        extra={"ResourcesTagged": tagged},
    )


def _title(resource: Resource) -> str:
    label = f"{resource['type']} {resource['id']}"
    return label + (f" (Name: {resource['name']})" if resource.get("name") else "")


def _link(region: str, resource: Resource) -> str | None:
    return console.ec2_resource(region, str(resource["type"]), str(resource["id"]))


def _tagged(region: str, key: str, resource: Resource) -> Item:
    event = resource.get("event") or {}
    if resource.get("source") in ("instance", "image"):
        why = f"made with {resource['source']} {resource.get('parent')}, whose owner it is"
    elif resource.get("source") == "group":
        why = f"launched by Auto Scaling for a group owned by {resource['value']}"
    else:
        who = (event.get("caller") or {}).get("name") or "the caller"
        why = f"{event.get('name')} by {who} at {event.get('time')} (CloudTrail event {event.get('id')})"
    return Item(_title(resource), [f"{key}: {resource['value']}", f"From: {why}"], _link(region, resource))


def _unresolved(region: str, resource: Resource) -> Item:
    return Item(
        _title(resource),
        [f"Why: {REASONS.get(resource['reason'], resource['reason'])}"],
        _link(region, resource),
    )
