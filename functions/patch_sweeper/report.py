"""The mails and the numbers, pure: one digest per ring of a sweep (results, and what comes
next: the next ring's instances before it starts, or why the sweep halted), one per dry run
(what would be patched), one when a change freeze holds a sweep or a ring back; nothing while
a ring's commands are still running.

The mail is rendered from the intent and the act's result alone (plain JSON, as the outbox
keeps them), so the one the retry sends is the one the first run rendered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from autopilot import console, freeze, routing
from autopilot.notify import Digest, Item, Severity, plural
from autopilot.outbox import Mail
from autopilot.runner import Context, Counts
from patch_sweeper.config import Config
from patch_sweeper.run import intent_commands, intent_targets

AUTOMATION = "patch_sweeper"
_NOT_LISTED = Item("(not listed)")  # stands for an item past the first 50, so the count stays exact


def mail(ctx: Context[Config], intent: Mapping[str, Any], result: Mapping[str, Any]) -> Mail | None:
    if intent["kind"] == "announce":
        return _announce_mail(ctx, intent) if result.get("status") == "announced" else None
    if intent["kind"] == "sweep" and result.get("status") == "dry-run":
        return _dry_run_mail(ctx, intent, result)
    if intent["kind"] == "sweep" and result.get("status") == "frozen":
        return _frozen_mail(ctx, intent, result)
    if result.get("status") == "ring-frozen":
        return _ring_frozen_mail(ctx, result) if result.get("mail") else None
    digest = result.get("digest")
    return _results_mail(ctx, digest, result) if digest else None


def counts(intent: Mapping[str, Any], result: Mapping[str, Any]) -> Counts:
    """Changed: patch runs that succeeded; Failed: that failed or were not sent, and results
    that could not be read; PendingReboot. Only a digest has them (zeros otherwise)."""
    if result.get("status") == "frozen":
        waiting = intent_targets(intent)
        return Counts(
            skipped=waiting, failed=freeze.unreadable(result), extra={"SkippedChangeFreeze": waiting}
        )
    if result.get("status") == "ring-frozen":
        waiting = int(result["instances"])
        return Counts(
            skipped=waiting, failed=freeze.unreadable(result), extra={"SkippedChangeFreeze": waiting}
        )
    digest = result.get("digest")
    if not digest:
        return Counts(failed=freeze.unreadable(result))
    return Counts(
        changed=int(digest["succeeded"]),
        failed=int(digest["failed_count"]) + len(digest["errors"]),
        extra={
            "PendingReboot": int(digest["pending_reboot_count"]),
            # the ring's timeout closed commands that never reported (alarmed)
            **({"NoResult": no_result} if (no_result := int(digest.get("no_result_count", 0))) else {}),
        },
    )


def _label(entry: Mapping[str, Any]) -> str:
    parts = [str(entry["id"])]
    if entry.get("name"):
        parts.append(f"({entry['name']})")
    if entry.get("owner"):
        parts.append(f"owner {entry['owner']}")
    return " ".join(parts)


def _listed(items: list[Item], total: int) -> list[Item]:
    """The items shown, padded to the real total (the layer says "... and N more")."""
    return items + [_NOT_LISTED] * max(0, total - len(items))


def _advice(opt_out_tag: str, log_group: str, region: str) -> list[str]:
    return [
        f"Leave an instance out of the sweeps: tag it {opt_out_tag}=false.",
        f"Full command output: CloudWatch Logs group {log_group}: {console.log_group(region, log_group)}",
    ]


def not_patchable_items(entries: Sequence[Mapping[str, Any]], region: str) -> list[Item]:
    return [
        Item(
            _label(e), [f"why: {e['reason']}", f"fix: {e['fix']}"], console.ec2_instance(region, str(e["id"]))
        )
        for e in entries
    ]


def _would_patch(intent: Mapping[str, Any], region: str) -> list[Item]:
    return _listed(
        [
            Item(_label(i), [f"platform {i['platform']}"], console.ec2_instance(region, str(i["id"])))
            for i in intent["would_patch"]
        ],
        intent_targets(intent),
    )


def _frozen_mail(ctx: Context[Config], intent: Mapping[str, Any], result: Mapping[str, Any]) -> Mail | None:
    """The sweep did not start: a change freeze (or a calendar that could not be read)."""
    common, config = ctx.common, ctx.config
    region = common.region
    digest = Digest(AUTOMATION, common.stack_name, region)
    targets = intent_targets(intent)
    freeze.section(
        digest,
        result,
        "not patched",
        _would_patch(intent, region),
        "This sweep sent no command; the next scheduled sweep (PatchSweeperSchedule) patches them "
        "if the calendar is open then.",
    )
    not_patchable = int(intent["not_patchable_count"])
    digest.section(
        f"Cannot be patched ({not_patchable})",
        _listed(not_patchable_items(intent["not_patchable"], region), not_patchable),
    )
    digest.advice = _advice(config.opt_out_tag, config.output_log_group, region)
    subject = f"patch sweep waits: change freeze, {plural(targets, 'instance')} not patched"
    summary = (
        f"The weekly patch sweep did not start: {plural(targets, 'instance')} would have been patched, "
        "but the change calendar does not allow changes now."
    )
    return digest.mail(subject, summary, "warning", now=ctx.now)


def _ring_frozen_mail(ctx: Context[Config], result: Mapping[str, Any]) -> Mail | None:
    """The next ring is due but a change freeze holds it back (once per freeze)."""
    common = ctx.common
    digest = Digest(AUTOMATION, common.stack_name, common.region)
    ring, instances = int(result["ring"]), int(result["instances"])
    freeze.section(
        digest,
        result,
        "not patched yet",
        [],
        f"Ring {ring} ({plural(instances, 'instance')}) starts at the first hourly check after the "
        "calendar opens again; nothing else is mailed until then.",
        count=instances,
    )
    subject = f"patch sweep ring {ring} waits: change freeze, {plural(instances, 'instance')} not patched yet"
    summary = (
        f"Ring {ring} of the patch sweep is due (the ring before it passed and soaked), but the change "
        "calendar does not allow changes now."
    )
    return digest.mail(subject, summary, "warning", now=ctx.now)


def _when(iso: str) -> str:
    """An ISO time as the mails show it: 2026-11-23 03:00 UTC."""
    return iso[:16].replace("T", " ") + " UTC"


def ring_lines(ring: Mapping[str, Any], verb: str) -> list[str]:
    """Where the sweep stands after this ring, and what comes next, in words."""
    lines = [
        f"{r['succeeded']} of {r['targeted']} {verb} in ring {r['number']} (earlier)."
        for r in ring.get("earlier", [])
    ]
    if ring.get("timed_out"):
        lines.append(
            f"{plural(int(ring['timed_out']), 'command')} gave no last status within the timeout "
            "(PatchSweeperTimeoutHours): the ring was closed and their instances are listed as no result."
        )
    if ring.get("left_out"):
        lines.append(
            f"{plural(int(ring['left_out']), 'instance')} of the ring left out when it started: no longer "
            "running, or opted out since the sweep was planned."
        )
    if ring.get("superseded"):
        lines.append(
            f"This sweep replaced an unfinished one: {ring['superseded']}; its later rings were not started "
            "(this sweep began again at ring 0)."
        )
    needed = int(ring["percent_needed"])
    if ring["verdict"] == "soaking":
        nxt = ring["next"]
        lines.append(
            f"Ring {ring['number']} met PatchSweeperRingSuccessPercent={needed}. Ring {nxt['number']} "
            f"({plural(int(nxt['instances']), 'instance')}) starts after {_when(ring['soak_until'])} "
            f"(PatchSweeperRingSoakHours={ring['soak_hours']}), at the first hourly check after it."
        )
    elif ring["verdict"] == "halted":
        held = sum(int(r["instances"]) for r in ring["held_back"])
        numbers = ", ".join(str(r["number"]) for r in ring["held_back"])
        lines.append(
            f"The sweep HALTED: ring {ring['number']} fell below PatchSweeperRingSuccessPercent={needed}, so "
            f"ring{'s' if len(ring['held_back']) > 1 else ''} {numbers} ({plural(held, 'instance')}) "
            "will not be patched by this sweep. Fix the failures below; the next scheduled sweep "
            "starts again at ring 0."
        )
    else:
        lines.append(f"Ring {ring['number']} was the last: the sweep is done.")
    return lines


def ring_plan(intent: Mapping[str, Any]) -> list[str]:
    """The rings of a sweep about to start, in order (nothing when there is one)."""
    rings = intent["rings"]
    if len(rings) < 2:
        return []
    order = ", then ".join(f"ring {r['number']} ({plural(int(r['instances']), 'instance')})" for r in rings)
    return [f"In {len(rings)} rings (PatchRing), one after the other: {order}."]


def _dry_run_mail(ctx: Context[Config], intent: Mapping[str, Any], result: Mapping[str, Any]) -> Mail | None:
    common, config = ctx.common, ctx.config
    region, operation = common.region, str(intent["operation"])
    digest = Digest(AUTOMATION, common.stack_name, region, dry_run=True)
    batches = intent_commands(intent)
    targets = intent_targets(intent)
    if freeze.waiting(result) is not None:  # the sweep would not start: said first
        freeze.section(digest, result, "would not be patched", _would_patch(intent, region))
    not_patchable = int(intent["not_patchable_count"])
    left_out = int(intent["opted_out_count"])
    digest.section(
        f"Would patch ({targets})",
        _would_patch(intent, region),
        text=[
            f"AWS-RunPatchBaseline Operation={operation} RebootOption={intent['reboot_option']}, "
            f"{plural(batches, 'command')} of at most 50 instances.",
            *ring_plan(intent),
        ]
        if targets
        else [],
    )
    digest.section(
        f"Cannot be patched ({not_patchable})",
        _listed(not_patchable_items(intent["not_patchable"], region), not_patchable),
    )
    if left_out:
        digest.section(
            f"Left out ({config.opt_out_tag}=false) ({left_out})",
            _listed([Item(_label(i)) for i in intent["left_out"]], left_out),
        )
    digest.advice = _advice(config.opt_out_tag, config.output_log_group, region)
    subject = (
        f"patch sweep would {operation.lower()} {plural(targets, 'instance')}, {not_patchable} not patchable"
    )
    summary = (
        f"Dry run of the weekly patch sweep: {plural(targets, 'instance')} would get "
        f"AWS-RunPatchBaseline ({operation}), {not_patchable} running "
        f"{'instance cannot' if not_patchable == 1 else 'instances cannot'} be patched."
    )
    severity: Severity = "warning" if not_patchable else "info"
    return digest.mail(subject, summary, severity, now=ctx.now)


def _results_mail(ctx: Context[Config], d: Mapping[str, Any], result: Mapping[str, Any]) -> Mail | None:
    common, config = ctx.common, ctx.config
    region, operation, reboot_option = common.region, str(d["operation"]), str(d["reboot_option"])
    digest = Digest(AUTOMATION, common.stack_name, region)
    _held_section(digest, result)
    verb = "patched" if operation == "Install" else "scanned"
    ring: Mapping[str, Any] = d.get("ring") or {}
    several = bool(ring) and int(ring["of"]) > 1
    if several:
        digest.section(
            f"Ring {ring['number']} ({ring['position']} of {ring['of']})", text=ring_lines(ring, verb)
        )
    failed, pending, patched = int(d["failed_count"]), int(d["pending_reboot_count"]), int(d["patched_count"])
    digest.section(f"Failed ({failed})", _listed([_failed_item(f, region) for f in d["failed"]], failed))
    digest.section(
        f"Pending reboot ({pending})",
        _listed([_pending_item(s, region, reboot_option) for s in d["pending_reboot"]], pending),
    )
    ok_items = []
    for p in d["patched"]:
        details = (
            [f"installed {p['installed']}, missing {p['missing']}, failed {p['failed']}"]
            if "installed" in p
            else []
        )
        ok_items.append(Item(_label(p), details))
    ok_heading = "Patched, no reboot pending" if operation == "Install" else "Scanned"
    digest.section(f"{ok_heading} ({patched})", _listed(ok_items, patched))
    not_patchable, stored = int(d["not_patchable_count"]), d["not_patchable"]
    np_section = digest.section(f"Cannot be patched ({not_patchable})", not_patchable_items(stored, region))
    if not_patchable > len(stored):
        np_section.text.append(f"(listing the first {len(stored)}; every one is in the function's log)")
    _compliance_section(digest, d)
    advice = []
    if pending and reboot_option == "NoReboot":
        advice.append(
            "Reboot the instances pending reboot in your next maintenance window, or set "
            "PatchSweeperRebootOption=RebootIfNeeded to let the sweep reboot them."
        )
    if not_patchable:
        advice.append(
            "Not patchable: give the instance a role with AmazonSSMManagedInstanceCore and a "
            "running SSM Agent; the next sweep picks it up."
        )
    digest.advice = advice + _advice(config.opt_out_tag, config.output_log_group, region)
    opted_out = int(d["opted_out_count"])
    if opted_out:
        digest.advice.append(
            f"{plural(opted_out, 'instance')} left out on request ({config.opt_out_tag}=false)."
        )
    if several:
        _next_ring_section(digest, ring, operation, reboot_option, config.opt_out_tag, region)
    bad_ring_tag_section(digest, d.get("bad_ring_tags", []), int(d.get("bad_ring_tag_count", 0)), region)
    succeeded, targeted = int(d["succeeded"]), int(d["targeted"])
    subject = _subject(d, ring if several else {}, verb)
    summary = (
        ("The weekly patch sweep's ring " + f"{ring['number']} " if several else "Weekly patch sweep ")
        + f"(AWS-RunPatchBaseline, Operation={operation}, RebootOption={reboot_option}) "
        f"finished on {plural(targeted, 'instance')}: {succeeded} {verb}, "
        f"{failed} failed, {pending} waiting for a reboot; "
        f"{not_patchable} running {'instance' if not_patchable == 1 else 'instances'} "
        "could not be reached."
    )
    severity: Severity = "warning" if failed or not_patchable else "info"
    if several and ring["verdict"] == "halted":
        summary = f"The patch sweep halted after ring {ring['number']}. " + summary
    soaking = ring.get("next") if several else None
    owners = owner_mails(
        ctx, d, reboot_option, (int(soaking["number"]), str(ring["soak_until"])) if soaking else None
    )
    unmailed = [*d.get("owners_unmailed", []), *owners.unmailed]
    if unmailed:
        digest.section("Owner digests", text=routing.Owners(unmailed=tuple(unmailed)).note())
    operators = digest.mail(subject, summary, severity, now=ctx.now)
    return None if operators is None else replace(operators, routed=owners.mails)


def _announce_mail(ctx: Context[Config], intent: Mapping[str, Any]) -> Mail | None:
    """Warn, then act: the next sweep's first ring, PATCH_WARNING_HOURS before it starts - to
    the operators (every instance) and to each owner (theirs)."""
    common, config = ctx.common, ctx.config
    region, at, reboot_option = common.region, str(intent["at"]), str(intent["reboot_option"])
    digest = Digest(AUTOMATION, common.stack_name, region)
    count, number = int(intent["instances"]), int(intent["ring"])
    may = "may reboot them (RebootIfNeeded)" if reboot_option == "RebootIfNeeded" else "does not reboot them"
    which = f"ring {number} (the first of {intent['rings']})" if int(intent["rings"]) > 1 else "the sweep"
    digest.section(
        f"To be patched at {_when(at)}: {which}, {plural(count, 'instance')}",
        _listed(
            [Item(_label(e), [], console.ec2_instance(region, str(e["id"]))) for e in intent["listed"]], count
        ),
    )
    owners = owner_mails(ctx, intent, reboot_option, (number, at))
    unmailed = [*intent.get("owners_unmailed", []), *owners.unmailed]
    if unmailed:
        digest.section("Owner digests", text=routing.Owners(unmailed=tuple(unmailed)).note())
    digest.advice = [
        f"Not now for one of them: tag it {config.opt_out_tag}=false before {_when(at)}; the sweep reads "
        "the fleet again when it starts, and an instance opted out, stopped or gone by then is left out.",
        *_advice(config.opt_out_tag, config.output_log_group, region),
    ]
    told = f", {plural(len(owners.mails), 'owner')} told" if owners.mails else ""
    subject = f"next patch sweep {_when(at)}: {plural(count, 'instance')}{told}"
    summary = (
        f"The next patch sweep (AWS-RunPatchBaseline, Operation={intent['operation']}, "
        f"RebootOption={reboot_option}) starts at {_when(at)}; {which} patches {plural(count, 'instance')} "
        f"and {may}. Nothing has been changed yet."
    )
    operators = digest.mail(subject, summary, "info", now=ctx.now)
    return None if operators is None else replace(operators, routed=owners.mails)


def _failed_item(f: Mapping[str, Any], region: str) -> Item:
    details = [f"why: {f['reason']}"]
    if f["tail"]:
        details.append("output (last lines):")
        details += [f"  | {line}" for line in str(f["tail"]).splitlines()]
    link = (
        console.ssm_command(region, f["command_id"])
        if f["command_id"]
        else console.ec2_instance(region, str(f["id"]))
    )
    return Item(_label(f), details, link)


def _pending_item(s: Mapping[str, Any], region: str, reboot_option: str) -> Item:
    return Item(
        _label(s),
        [
            f"{plural(int(s['patches']), 'patch', 'patches')} installed, "
            f"waiting for a reboot (RebootOption={reboot_option})"
        ],
        console.ec2_instance(region, str(s["id"])),
    )


OWNER_KINDS = {
    "failed": routing.Kind(
        "Patching FAILED (the output's last lines below; tried again next sweep)", "{count} failed"
    ),
    "pending_reboot": routing.Kind("Waiting for a reboot to finish patching", "{count} waiting for a reboot"),
}


def owner_mails(
    ctx: Context[Config], d: Mapping[str, Any], reboot_option: str, upcoming: tuple[int, str] | None = None
) -> routing.Owners:
    """One digest per recipient (``d``'s ``owners``, autopilot.routing) about their own
    instances only: patching failed, waiting for a reboot, and - before it starts, while they
    can still leave an instance out - in the next ring (``upcoming``: its number and start, when
    a ring's digest soaks or a sweep is announced). Empty without routing (a dry run has none)."""
    owners: Mapping[str, Any] = d.get("owners") or {}
    if not owners:
        return routing.Owners()
    region, opt_out = ctx.common.region, ctx.config.opt_out_tag
    items: dict[str, Callable[[Mapping[str, Any]], Item]] = {
        "failed": lambda e: _failed_item(e, region),
        "pending_reboot": lambda e: _pending_item(e, region, reboot_option),
        "next": lambda e: Item(_label(e), [], console.ec2_instance(region, str(e["id"]))),
    }
    findings = [
        routing.Finding(address, kind, item)
        for address, mine in owners.items()
        for kind, build in items.items()
        for item in _listed([build(e) for e in mine.get(kind, [])], int(mine.get(f"{kind}_count", 0)))
    ]
    kinds = dict(OWNER_KINDS)
    advice = [f"Leave an instance out of the sweeps: tag it {opt_out}=false."]
    if upcoming:
        rebooted = "; rebooted if a patch needs it" if reboot_option == "RebootIfNeeded" else ", not rebooted"
        number, start = upcoming[0], _when(upcoming[1])
        kinds["next"] = routing.Kind(
            f"To be patched in ring {number}, from {start}{rebooted}", "{count} to be patched"
        )
        advice.insert(
            0,
            f"Not now for one of them: tag it {opt_out}=false before {start}; an instance stopped, "
            "terminated or opted out by then is left out. Remove the tag for the next sweep.",
        )
    if reboot_option == "NoReboot" and any(m.get("pending_reboot_count") for m in owners.values()):
        advice.insert(
            0, "Reboot the instances waiting for a reboot when it suits you: the patches take effect then."
        )
    advice.append(
        f"You get this mail for the instances whose {ctx.common.owner_tag_key} or "
        f"{ctx.common.team_tag_key} tag names you; your operators get every finding too."
    )
    return routing.owner_digests(
        findings,
        kinds,
        digest=Digest(AUTOMATION, ctx.common.stack_name, region),
        noun="instance",
        advice=advice,
        now=ctx.now,
    )


def _compliance_section(digest: Digest, d: Mapping[str, Any]) -> None:
    c = d["compliance"]
    if c["reporting"]:
        digest.section(
            "Patch compliance (as last reported by the instances)",
            text=[
                f"{plural(int(c['reporting']), 'instance')} reporting: {c['installed']} installed, "
                f"{c['installed_pending_reboot']} installed pending reboot, {c['missing']} missing, "
                f"{c['failed']} failed; {c['critical_non_compliant']} critical and "
                f"{c['security_non_compliant']} security patches non-compliant.",
            ],
        )
    if d["errors"]:
        digest.section("Could not read everything", text=[str(e) for e in d["errors"]])


def _held_section(digest: Digest, result: Mapping[str, Any]) -> None:
    held = freeze.waiting(result)
    if held is not None:  # began while the ring was being sent: its last batches were not
        digest.section(
            "Change freeze",
            text=[
                held.said(),
                "The batches not sent yet were held back: "
                "their instances are listed as failed (command not sent: ChangeFreeze).",
            ],
        )


def bad_ring_tag_section(
    digest: Digest, entries: Sequence[Mapping[str, Any]], total: int, region: str
) -> None:
    if not total:
        return
    digest.section(
        f"PatchRing is not a ring number ({total})",
        _listed(
            [
                Item(
                    _label(e),
                    [f"PatchRing={e['value']!r}: patched in the last ring"],
                    console.ec2_instance(region, str(e["id"])),
                )
                for e in entries
            ],
            total,
        ),
        text=["PatchRing takes a whole number 0-99 (0 is patched first); fix the tag to choose the ring."],
    )


def _subject(d: Mapping[str, Any], ring: Mapping[str, Any], verb: str) -> str:
    succeeded, failed, pending = int(d["succeeded"]), int(d["failed_count"]), int(d["pending_reboot_count"])
    no_result = int(d.get("no_result_count", 0))
    counted = f"{succeeded} {verb}, {failed} failed" + (f", {no_result} no result" if no_result else "")
    if not ring:
        return (
            f"patch sweep: {counted}, {pending} pending reboot, {int(d['not_patchable_count'])} not patchable"
        )
    nxt = (ring.get("next") or {}).get("number")
    state = {"soaking": f"passed, ring {nxt} next", "halted": "HALTED", "done": "done"}[str(ring["verdict"])]
    waiting = f", {pending} pending reboot" if pending else ""
    return f"patch sweep ring {ring['number']} ({ring['position']}/{ring['of']}) {state}: {counted}{waiting}"


def _next_ring_section(
    digest: Digest, ring: Mapping[str, Any], operation: str, reboot_option: str, opt_out_tag: str, region: str
) -> None:
    """The advance notice: who is patched next, and when (the stack topic for now)."""
    nxt = ring.get("next")
    if ring["verdict"] != "soaking" or not nxt:
        return
    digest.section(
        f"Next: ring {nxt['number']} after {_when(ring['soak_until'])} ({nxt['instances']})",
        _listed(
            [Item(_label(e), [], console.ec2_instance(region, str(e["id"]))) for e in nxt["listed"]],
            int(nxt["instances"]),
        ),
        text=[
            f"Owners: these instances get AWS-RunPatchBaseline ({operation}, {reboot_option}) then. "
            f"To leave one out, tag it {opt_out_tag}=false before."
        ],
    )
