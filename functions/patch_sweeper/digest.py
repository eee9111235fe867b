"""The mails: one digest per sweep (results), or one per dry run (what would be patched)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from autopilot import console
from autopilot.notify import Digest, Item, Severity, plural
from patch_sweeper.results import SweepOutcome
from patch_sweeper.targeting import Instance, TargetPlan

AUTOMATION = "patch_sweeper"
OWNER_TAG = "Owner"


def _label(instance_id: str, instances: Mapping[str, Instance]) -> str:
    instance = instances.get(instance_id)
    if instance is None:
        return instance_id
    parts = [instance_id]
    if instance.name:
        parts.append(f"({instance.name})")
    owner = instance.tags.get(OWNER_TAG)
    if owner:
        parts.append(f"owner {owner}")
    return " ".join(parts)


def _advice(opt_out_tag: str, log_group: str, region: str) -> list[str]:
    return [
        f"Leave an instance out of the sweeps: tag it {opt_out_tag}=false.",
        f"Full command output: CloudWatch Logs group {log_group}: {console.log_group(region, log_group)}",
    ]


def not_patchable_items(entries: Sequence[Mapping[str, str]], region: str) -> list[Item]:
    items = []
    for e in entries:
        title = (
            e["id"]
            + (f" ({e['name']})" if e.get("name") else "")
            + (f" owner {e['owner']}" if e.get("owner") else "")
        )
        items.append(
            Item(title, [f"why: {e['reason']}", f"fix: {e['fix']}"], console.ec2_instance(region, e["id"]))
        )
    return items


def not_patchable_entries(plan: TargetPlan) -> list[dict[str, str]]:
    return [
        {
            "id": n.instance.id,
            "name": n.instance.name,
            "owner": n.instance.tags.get(OWNER_TAG, ""),
            "reason": n.reason,
            "fix": n.fix,
        }
        for n in plan.not_patchable
    ]


def dry_run_digest(
    plan: TargetPlan,
    *,
    stack: str,
    region: str,
    operation: str,
    reboot_option: str,
    opt_out_tag: str,
    log_group: str,
) -> tuple[Digest, str, str, Severity]:
    digest = Digest(AUTOMATION, stack, region, dry_run=True)
    batches = plan.batches()
    digest.section(
        f"Would patch ({len(plan.targets)})",
        [
            Item(_label(i.id, {i.id: i}), [f"platform {i.platform}"], console.ec2_instance(region, i.id))
            for i in plan.targets
        ],
        text=[
            f"AWS-RunPatchBaseline Operation={operation} RebootOption={reboot_option}, "
            f"{plural(len(batches), 'command')} of at most 50 instances."
        ]
        if plan.targets
        else [],
    )
    digest.section(
        f"Cannot be patched ({len(plan.not_patchable)})",
        not_patchable_items(not_patchable_entries(plan), region),
    )
    if plan.opted_out:
        digest.section(
            f"Left out ({opt_out_tag}=false) ({len(plan.opted_out)})",
            [Item(_label(i.id, {i.id: i})) for i in plan.opted_out],
        )
    digest.advice = _advice(opt_out_tag, log_group, region)
    subject = (
        f"patch sweep would {operation.lower()} {plural(len(plan.targets), 'instance')}, "
        f"{len(plan.not_patchable)} not patchable"
    )
    summary = (
        f"Dry run of the weekly patch sweep: {plural(len(plan.targets), 'instance')} would get "
        f"AWS-RunPatchBaseline ({operation}), {len(plan.not_patchable)} running "
        f"{'instance cannot' if len(plan.not_patchable) == 1 else 'instances cannot'} be patched."
    )
    severity: Severity = "warning" if plan.not_patchable else "info"
    return digest, subject, summary, severity


def results_digest(
    outcome: SweepOutcome,
    *,
    stack: str,
    region: str,
    operation: str,
    reboot_option: str,
    not_patchable: Sequence[Mapping[str, str]],
    not_patchable_count: int,
    opted_out_count: int,
    instances: Mapping[str, Instance],
    opt_out_tag: str,
    log_group: str,
    collection_errors: Sequence[str] = (),
) -> tuple[Digest, str, str, Severity]:
    digest = Digest(AUTOMATION, stack, region)
    verb = "patched" if operation == "Install" else "scanned"
    failed_items = []
    for f in outcome.failed:
        details = [f"why: {f.reason}"]
        if f.output_tail:
            details.append("output (last lines):")
            details += [f"  | {line}" for line in f.output_tail.splitlines()]
        link = (
            console.ssm_command(region, f.command_id)
            if f.command_id
            else console.ec2_instance(region, f.instance_id)
        )
        failed_items.append(Item(_label(f.instance_id, instances), details, link))
    digest.section(f"Failed ({len(outcome.failed)})", failed_items)
    digest.section(
        f"Pending reboot ({len(outcome.pending_reboot)})",
        [
            Item(
                _label(s.instance_id, instances),
                [
                    f"{plural(s.installed_pending_reboot, 'patch', 'patches')} installed, "
                    f"waiting for a reboot (RebootOption={reboot_option})"
                ],
                console.ec2_instance(region, s.instance_id),
            )
            for s in outcome.pending_reboot
        ],
    )
    ok_items = []
    for instance_id in outcome.patched_cleanly:
        state = outcome.states.get(instance_id)
        details = (
            [f"installed {state.installed}, missing {state.missing}, failed {state.failed}"] if state else []
        )
        ok_items.append(Item(_label(instance_id, instances), details))
    ok_heading = "Patched, no reboot pending" if operation == "Install" else "Scanned"
    digest.section(f"{ok_heading} ({len(outcome.patched_cleanly)})", ok_items)
    np_section = digest.section(
        f"Cannot be patched ({not_patchable_count})", not_patchable_items(not_patchable, region)
    )
    if not_patchable_count > len(not_patchable):
        np_section.text.append(
            f"(listing the first {len(not_patchable)}; every one is in the function's log)"
        )
    c = outcome.compliance
    if c.reporting:
        digest.section(
            "Patch compliance (as last reported by the instances)",
            text=[
                f"{plural(c.reporting, 'instance')} reporting: {c.installed} installed, "
                f"{c.installed_pending_reboot} installed pending reboot, {c.missing} missing, "
                f"{c.failed} failed; {c.critical_non_compliant} critical and "
                f"{c.security_non_compliant} security patches non-compliant.",
            ],
        )
    if collection_errors:
        digest.section("Could not read everything", text=list(collection_errors))
    advice = []
    if outcome.pending_reboot and reboot_option == "NoReboot":
        advice.append(
            "Reboot the instances pending reboot in your next maintenance window, or set "
            "PatchSweeperRebootOption=RebootIfNeeded to let the sweep reboot them."
        )
    if not_patchable_count:
        advice.append(
            "Not patchable: give the instance a role with AmazonSSMManagedInstanceCore and a "
            "running SSM Agent; the next sweep picks it up."
        )
    digest.advice = advice + _advice(opt_out_tag, log_group, region)
    if opted_out_count:
        digest.advice.append(
            f"{plural(opted_out_count, 'instance')} left out on request ({opt_out_tag}=false)."
        )
    targeted = len(outcome.succeeded) + len(outcome.failed)
    subject = (
        f"patch sweep: {len(outcome.succeeded)} {verb}, {len(outcome.failed)} failed, "
        f"{len(outcome.pending_reboot)} pending reboot, {not_patchable_count} not patchable"
    )
    summary = (
        f"Weekly patch sweep (AWS-RunPatchBaseline, Operation={operation}, RebootOption={reboot_option}) "
        f"finished on {plural(targeted, 'instance')}: {len(outcome.succeeded)} {verb}, "
        f"{len(outcome.failed)} failed, {len(outcome.pending_reboot)} waiting for a reboot; "
        f"{not_patchable_count} running {'instance' if not_patchable_count == 1 else 'instances'} "
        "could not be reached."
    )
    severity: Severity = "warning" if outcome.failed or not_patchable_count else "info"
    return digest, subject, summary, severity
