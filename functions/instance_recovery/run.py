"""instance_recovery: its two steps on the runner.

``plan`` gathers (service) and decides (decide) and changes nothing; ``act`` carries the plan
out (service) - idempotently, and not at all in dry run.

The intent ``plan`` returns is recorded before ``act`` runs and is all that ``act`` and
``report`` get, so it holds everything they need as plain JSON: the alarms to put and delete
with their instances' names and owners, the instances EC2 cannot recover and why, or the
recovery AWS Health reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from typing import Any

from autopilot import console
from autopilot.events import InstanceStateChange
from autopilot.runner import Context, Counts, Plan, Run
from instance_recovery import decide, service
from instance_recovery.config import Config
from instance_recovery.event import HealthEvent, Trigger

HEALTH_MEMORY = "health:"  # memory: health:<event ARN> -> when it was mailed (epoch seconds)
INELIGIBLE_MEMORY = "ineligible:"  # memory: ineligible:<instance id> -> the reason mailed
HEALTH_KEEP_SECONDS = 30 * 86400  # a Health event is updated for days at most
PLAN_METRICS = ("Watched", "Ineligible", "AlarmsCreated", "AlarmsUpdated", "AlarmsDeleted", "Recovered")


def _counts(checked: int = 0, skipped: int = 0, **extra: int) -> Counts:
    return Counts(
        checked=checked,
        skipped=skipped,
        extra={**dict.fromkeys(PLAN_METRICS, 0), "RecoveryFailed": 0, **extra},
    )


def plan(run: Run[Config, Trigger]) -> Plan:
    """A Health event: the recovery to mail. A state change: the alarm of the instance that
    changed - as EC2 says it is now, not as the event says. The schedule: every alarm of this
    stack against every instance, deleting those of instances that are gone."""
    if isinstance(run.trigger, HealthEvent):
        return _recovery(run, run.trigger)
    change = run.trigger if isinstance(run.trigger, InstanceStateChange) else None
    policy, stack = run.config.policy, run.common.stack_name
    found = service.instances([change.instance_id]) if change else service.all_instances()
    candidates = [i for i in found if i.state not in decide.GONE_STATES and decide.wanted(i, policy)]
    supported = service.recovery_support(i.instance_type for i in candidates)
    # a state change needs its one alarm (read by name), the schedule all of this stack's
    existing = service.alarms(stack, [decide.alarm_name(stack, change.instance_id)] if change else None)
    actions = [
        decide.recover_action(console.partition(run.common.region), run.common.region),
        run.common.topic_arn,
    ]
    scope = frozenset({change.instance_id}) if change else None
    made = decide.plan_alarms(found, supported, existing, policy, actions, stack, scope)
    memory = _memory(run, made, scope)
    new = decide.newly_ineligible(made.ineligible, run.memory)
    counts = _counts(made.checked, made.unrecoverable, Watched=made.watched, Ineligible=made.unrecoverable)
    decisions = [
        *({"instance_id": s.instance_id, "alarm": s.name, "action": "create"} for s in made.create),
        *({"instance_id": s.instance_id, "alarm": s.name, "action": "update"} for s in made.update),
        *({"instance_id": i, "alarm": a, "action": "delete", "why": w} for a, i, w in made.delete),
        *({"instance_id": i, "action": "none", "why": w} for i, w in new.items()),
    ]
    if not made.changes and not new:
        return Plan(None, counts, decisions, memory=memory)
    owner_key = run.common.owner_tag_key
    by_id = {i.id: i for i in found}
    mentioned = (
        {s.instance_id for s in [*made.create, *made.update]} | {i for _, i, _ in made.delete} | set(new)
    )
    intent: dict[str, Any] = {
        "trigger": "state change" if change else "schedule",
        "dry_run": run.dry_run,  # a run planned in dry run is never carried out for real
        "checked": made.checked,
        "watched": made.watched,
        "create": [s.as_dict() for s in made.create],
        "update": [s.as_dict() for s in made.update],
        "delete": [{"alarm": a, "instance_id": i, "why": w} for a, i, w in made.delete],
        "ineligible": [{"instance_id": i, "why": w} for i, w in sorted(new.items())],
        "instances": {i: _facts(by_id.get(i), owner_key) for i in sorted(mentioned)},
    }
    return Plan(intent, counts, decisions, memory=memory)


def _memory(run: Run[Config, Trigger], made: decide.Plan, scope: frozenset[str] | None) -> dict[str, Any]:
    """The ineligible instances mailed (so that the next runs mail only what is new) and the
    Health events mailed: rewritten whole on the schedule, updated for one instance otherwise."""
    now = int(run.now.timestamp())
    kept = {
        k: v
        for k, v in run.memory.items()
        if k.startswith(HEALTH_MEMORY) and isinstance(v, int) and now - v < HEALTH_KEEP_SECONDS
    }
    if scope is not None:
        kept |= {
            k: v
            for k, v in run.memory.items()
            if k.startswith(INELIGIBLE_MEMORY) and k.removeprefix(INELIGIBLE_MEMORY) not in scope
        }
    return kept | {f"{INELIGIBLE_MEMORY}{i}": why for i, why in made.ineligible.items()}


def _facts(instance: decide.Instance | None, owner_key: str) -> dict[str, str]:
    if instance is None:
        return {"name": "", "owner": decide.UNKNOWN_OWNER, "type": "", "state": "gone"}
    return {
        "name": instance.name,
        "owner": instance.owner(owner_key),
        "type": instance.instance_type,
        "state": instance.state,
        "simplified_recovery": instance.simplified_recovery,
    }


def _recovery(run: Run[Config, Trigger], event: HealthEvent) -> Plan:
    """The mail of one recovery AWS Health reported, once per Health event (its ARN: Health
    sends an event again when it updates it)."""
    key = f"{HEALTH_MEMORY}{event.event_arn or event.id}"
    recovery = decide.recovery(event.code, event.instance_ids, event.description)
    if recovery is None or key in run.memory:
        decisions = [{"health_event": event.event_arn, "action": "none", "why": "mailed already"}]
        return Plan(None, _counts(len(event.instance_ids)), decisions)
    found = {i.id: i for i in service.instances(list(recovery.instance_ids))}
    owner_key = run.common.owner_tag_key
    intent = {
        "health": {
            "code": recovery.code,
            "kind": recovery.kind,
            "succeeded": recovery.succeeded,
            "event_arn": event.event_arn,
            "description": recovery.description,
            "at": event.time.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        },
        "instances": {i: _facts(found.get(i), owner_key) for i in recovery.instance_ids},
    }
    memory = {**run.memory, key: int(run.now.timestamp())}
    decisions = [
        {"instance_id": i, "action": "mail", "recovery": recovery.code} for i in recovery.instance_ids
    ]
    return Plan(intent, _counts(len(recovery.instance_ids)), decisions, memory=memory)


def act(ctx: Context[Config], intent: Mapping[str, Any]) -> dict[str, Any]:
    """Delete the planned alarms, then put the planned ones (create or overwrite) while the
    time lasts - the rest are the next run's (it plans them again); per-alarm refusals are
    reported, not raised. Safe to run again on the same intent
    (``ctx.resumed``): a put overwrites with the same definition, a deleted alarm stays deleted."""
    result: dict[str, Any] = {"put": [], "deleted": [], "failures": [], "not_reached": 0}
    if "health" in intent or ctx.dry_run or intent.get("dry_run"):
        return result
    refused = service.delete_alarms([(d["alarm"], d["instance_id"]) for d in intent["delete"]])
    failures: list[service.Failure] = list(refused)
    gone = {f.alarm for f in refused}
    result["deleted"] = [d["alarm"] for d in intent["delete"] if d["alarm"] not in gone]
    todo = [*intent["create"], *intent["update"]]
    for n, spec in enumerate(todo):
        if ctx.deadline.expired():  # PutMetricAlarm's rate quota is low: the rest is the next run's
            result["not_reached"] = len(todo) - n
            break
        alarm = decide.AlarmSpec(
            spec["name"],
            spec["instance_id"],
            spec["period"],
            spec["evaluation_periods"],
            tuple(spec["actions"]),
        )
        description = (
            f"ops-autopilot {ctx.common.stack_name} instance_recovery: EC2 recovers {alarm.instance_id} "
            f"after {alarm.evaluation_periods} failed system status checks in a row. "
            f"Tag the instance AutoRecover=false to remove this alarm."
        )
        failure = service.put_alarm(alarm, description)
        if failure:
            failures.append(failure)
        else:
            result["put"].append(alarm.name)
    result["failures"] = [f.as_dict() for f in failures]
    return result
