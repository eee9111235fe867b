"""instance_recovery: the mail and the numbers.

From the recorded intent and the act's result: pure text and numbers (the runner sends the
mail and emits the metrics).

When a mail is sent:
- a recovery AWS Health reported (success or failure): always, once per Health event;
- the schedule: when it created, updated or deleted alarms (an event was missed, or it is the
  first run), or found opted-in instances EC2 cannot recover that were not mailed before;
- a state change: only for an opted-in instance EC2 cannot recover (new) or a failure - an
  alarm put or deleted for one instance is routine, counted and logged, not mailed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autopilot import console
from autopilot.notify import Digest, Item, plural
from autopilot.outbox import Mail
from autopilot.runner import Context, Counts
from instance_recovery.config import Config
from instance_recovery.decide import OPT_IN_KEY


def _item(ctx: Context[Config], intent: Mapping[str, Any], instance_id: str, *details: str) -> Item:
    facts: Mapping[str, Any] = intent.get("instances", {}).get(instance_id, {})
    title = instance_id + (f" ({facts['name']})" if facts.get("name") else "")
    owner = f"{ctx.common.owner_tag_key}: {facts.get('owner', 'unknown')}"
    kind = f"{facts['type']}, {facts.get('state', '')}" if facts.get("type") else str(facts.get("state", ""))
    return Item(
        title,
        [owner, *details, *([kind] if kind else [])],
        console.ec2_instance(ctx.common.region, instance_id),
    )


def mail(ctx: Context[Config], intent: Mapping[str, Any], result: Mapping[str, Any]) -> Mail | None:
    """The run's mail (see the module's docstring for when there is one)."""
    if "health" in intent:
        return _recovery_mail(ctx, intent)
    dry_run = ctx.dry_run or bool(intent.get("dry_run"))
    failures: list[Mapping[str, str]] = list(result.get("failures", []))
    routine = intent.get("trigger") != "schedule"
    if routine and not intent.get("ineligible") and not failures and not result.get("not_reached"):
        return None
    digest = Digest(ctx.automation, ctx.common.stack_name, ctx.common.region, dry_run=dry_run)
    put, deleted = set(result.get("put", [])), set(result.get("deleted", []))
    created = [s for s in intent["create"] if dry_run or s["name"] in put]  # what was done, not planned
    updated = [s for s in intent["update"] if dry_run or s["name"] in put]
    removed = [d for d in intent["delete"] if dry_run or d["alarm"] in deleted]
    verb = {"create": "would be created", "update": "would be updated", "delete": "would be deleted"}
    if not dry_run:
        verb = {"create": "created", "update": "updated", "delete": "deleted"}
    if not routine:
        digest.section(
            f"Recovery alarms {verb['create']} ({len(created)})",
            [_item(ctx, intent, s["instance_id"], f"Alarm: {s['name']}") for s in created],
        )
        digest.section(
            f"Recovery alarms {verb['update']} to the stack's settings ({len(updated)})",
            [_item(ctx, intent, s["instance_id"], f"Alarm: {s['name']}") for s in updated],
        )
        digest.section(
            f"Recovery alarms {verb['delete']} ({len(removed)})",
            [
                _item(ctx, intent, d["instance_id"], f"Why: {d['why']}", f"Alarm: {d['alarm']}")
                for d in removed
            ],
        )
    if result.get("not_reached"):
        digest.section(
            "Not reached in this run",
            text=[
                f"{plural(int(result['not_reached']), 'more alarm')} to put: CloudWatch's rate limit for "
                "PutMetricAlarm is low, so the next run (or the instance's next state change) puts them."
            ],
        )
    ineligible = list(intent.get("ineligible", []))
    digest.section(
        f"Opted in, but EC2 cannot recover them: no alarm ({len(ineligible)})",
        [_item(ctx, intent, e["instance_id"], f"Why: {e['why']}") for e in ineligible],
    )
    digest.section(
        f"Could not be changed ({len(failures)})",
        [
            _item(ctx, intent, f["instance_id"], f"Could not {f['action']} {f['alarm']}: {f['code']}")
            for f in failures
        ],
    )
    if digest.empty:
        return None
    digest.advice = [
        f"Tag an instance {OPT_IN_KEY}=true to give it a recovery alarm, {OPT_IN_KEY}=false to remove it.",
        "When its system status check fails, the alarm has EC2 move the instance to healthy hardware "
        "(same id, IP addresses, volumes) and mails this topic.",
        "An instance EC2 cannot recover needs another remedy: an Auto Scaling group of one, or a backup.",
    ]
    parts = [
        *([f"{len(created)} created"] if created else []),
        *([f"{len(updated)} updated"] if updated else []),
        *([f"{len(removed)} deleted"] if removed else []),
    ]
    subject = f"recovery alarms {', '.join(parts)}" if parts and not routine else ""
    if ineligible:
        subject += (
            "; " if subject else ""
        ) + f"{plural(len(ineligible), 'opted-in instance')} EC2 cannot recover"
    if failures:
        subject += ("; " if subject else "") + f"{plural(len(failures), 'alarm')} could not be changed"
    if result.get("not_reached"):
        subject += ("; " if subject else "") + f"{int(result['not_reached'])} left for the next run"
    summary = (
        f"{plural(int(intent['watched']), 'instance')} of {intent['checked']} looked at "
        f"{'is' if int(intent['watched']) == 1 else 'are'} watched by a recovery alarm."
    )
    return digest.mail(subject, summary, "warning" if failures else "info", now=ctx.now)


def _recovery_mail(ctx: Context[Config], intent: Mapping[str, Any]) -> Mail | None:
    health: Mapping[str, Any] = intent["health"]
    ids = list(intent.get("instances", {}))
    digest = Digest(ctx.automation, ctx.common.stack_name, ctx.common.region, dry_run=False)
    succeeded = bool(health["succeeded"])
    title = (
        f"Recovered by EC2 ({health['kind']})"
        if succeeded
        else f"EC2 could not recover them ({health['kind']})"
    )
    details = [f"AWS Health: {health['code']} at {health['at']}"]
    digest.section(f"{title} ({len(ids)})", [_item(ctx, intent, i, *details) for i in ids])
    if health.get("description"):
        digest.section("What AWS Health says", text=[str(health["description"])])
    if succeeded:
        digest.advice = [
            "The instance rebooted on healthy hardware with the same id, IP addresses and EBS volumes: "
            "what was in memory is lost. Check that its services came back.",
        ]
        subject = f"{plural(len(ids), 'instance')} recovered by EC2 from a host failure"
    else:
        digest.advice = [
            "The instance may still run on the failed hardware: stop and start it (it moves to new "
            "hardware; a public IP that is not an Elastic IP changes), or restore it from a backup.",
        ]
        subject = f"EC2 could not recover {plural(len(ids), 'instance')} from a host failure: act now"
    names = ", ".join(ids[:3]) + (" ..." if len(ids) > 3 else "")
    summary = f"AWS Health reports {health['code']} for {names}."
    return digest.mail(subject, summary, "info" if succeeded else "warning", now=ctx.now)


def counts(intent: Mapping[str, Any], result: Mapping[str, Any]) -> Counts:
    """The act-side numbers (the plan counted what it checked and skipped)."""
    put = set(result.get("put", []))
    extra: dict[str, float] = {
        "AlarmsCreated": sum(1 for s in intent.get("create", []) if s["name"] in put),
        "AlarmsUpdated": sum(1 for s in intent.get("update", []) if s["name"] in put),
        "AlarmsDeleted": len(result.get("deleted", [])),
    }
    if "health" in intent:
        key = "Recovered" if intent["health"]["succeeded"] else "RecoveryFailed"
        extra[key] = len(intent.get("instances", {}))
    changed = len(put) + len(result.get("deleted", []))
    return Counts(changed=changed, failed=len(result.get("failures", [])), extra=extra)
