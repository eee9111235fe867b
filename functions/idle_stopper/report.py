"""What one run tells people: the digest mail, the tags written on stopped instances, the
numbers (metrics) and the decision log lines.

Pure functions of the decision, the recorded intent and the act's result; the runner
(autopilot.runner) records and sends the mail and emits the metrics.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from autopilot import console, freeze, routing
from autopilot.notify import Digest, Item, Severity, plural
from autopilot.outbox import Mail
from autopilot.runner import Context, Counts
from autopilot.tags import clean_value
from idle_stopper.config import Config
from idle_stopper.decide import EXCLUDED, DbAssessment, DbOutcome, Decision, Outcome, db_exclusion

AUTOMATION = "idle_stopper"
LABELS = {
    Outcome.BUSY.value: "busy",
    Outcome.TOO_LITTLE_DATA.value: "too little metric data",
    Outcome.TOO_YOUNG.value: "started too recently to judge",
    Outcome.NOT_RUNNING.value: "not running",
    Outcome.AUTO_SCALING.value: "in an Auto Scaling group",
    Outcome.KUBERNETES.value: "EKS/Karpenter/Kubernetes node",
    Outcome.MANAGED.value: "managed by another service",
    Outcome.SPOT.value: "Spot/not on-demand",
    Outcome.INSTANCE_STORE.value: "instance-store root",
    Outcome.OPTED_OUT.value: "opted out (AutoStop)",
    Outcome.STOP_PROTECTED.value: "stop-protected",
    Outcome.OVER_CAP.value: "over the stop limit",
    "StopFailed": "stop failed",
    "Changed": "changed since the decision",
    "ChangeFreeze": "waiting for the change freeze",
    Outcome.SNOOZED.value: "snoozed",
    Outcome.WARNED.value: "warned, stop planned",
}
DB_LABELS = {
    DbOutcome.BUSY.value: "in use",
    DbOutcome.TOO_LITTLE_DATA.value: "too little metric data",
    DbOutcome.TOO_YOUNG.value: "created too recently to judge",
    DbOutcome.WAITING.value: "restarted by AWS, waiting for a full hour",
    DbOutcome.NOT_AVAILABLE.value: "not available",
    DbOutcome.CLUSTER_MEMBER.value: "Aurora cluster member",
    DbOutcome.REPLICA.value: "read replica",
    DbOutcome.HAS_REPLICAS.value: "with read replicas",
    DbOutcome.NOT_STOPPABLE.value: "not stoppable",
    DbOutcome.OPTED_OUT.value: "opted out (AutoStop)",
    DbOutcome.OVER_CAP.value: "over the stop limit",
}
# Skipped<Reason> metrics, one per reason an instance is left running.
SKIP_REASONS = (*sorted(EXCLUDED), Outcome.OVER_CAP)


# ---- the numbers --------------------------------------------------------------------------


DATABASE_ADVICE = [
    "Keep a database running: tag it AutoStop=false. Start one again from its console link, or: "
    "aws rds start-db-instance --db-instance-identifier <id> "
    "(an Aurora cluster: aws rds start-db-cluster --db-cluster-identifier <id>).",
    "AWS starts a stopped database again after 7 days; this automation stops it again once a full "
    "hour shows nobody connected since.",
]


def plan_counts(
    decision: Decision,
    failed: int,
    metrics_asked: int = 0,
    remembered: int = 0,
    databases: Sequence[DbAssessment] | None = None,
) -> Counts:
    """The gather-side metrics: Checked, Skipped and one Skipped<Reason> per reason met, Idle,
    MalformedStopAfter, the plan's own failures (stop protection not readable), the CloudWatch
    metrics asked for (MetricsRequested: what GetMetricData bills) and the instances not asked
    about because they were remembered busy (RememberedBusy); with IdleStopperDatabases on
    (``databases`` not None) DatabasesChecked / DatabasesIdle / DatabasesStopped, and their two
    metrics per judged database in MetricsRequested. The act-side names at zero, so that every
    one is emitted each run (report.counts adds to them)."""
    outcomes = Counter(a.outcome.value for a in decision.all)
    skipped = {f"Skipped{o.value}": outcomes[o.value] for o in SKIP_REASONS}
    idle = sum(1 for a in decision.all if a.verdict is not None and a.verdict.idle)
    return Counts(
        checked=len(decision.all),
        skipped=sum(skipped.values()),
        failed=failed,
        extra={
            "Idle": idle,
            **{k: v for k, v in skipped.items() if v},
            "MalformedStopAfter": len(decision.malformed),
            "MetricsRequested": metrics_asked
            + 2 * sum(1 for d in databases or () if db_exclusion(d.database) is None),
            "RememberedBusy": remembered,
            **(
                {
                    "DatabasesChecked": len(databases),
                    "DatabasesIdle": sum(1 for d in databases if d.stops or d.outcome is DbOutcome.OVER_CAP),
                    "DatabasesStopped": 0,
                }
                if databases is not None
                else {}
            ),
            "WouldStop": 0,
            "StoppedIdle": 0,
            "StoppedLifetime": 0,
        },
    )


def counts(intent: Mapping[str, Any], result: Mapping[str, Any]) -> Counts:
    """The act-side metrics: Changed (stopped), Failed (stops, tags, re-checks that failed),
    StoppedIdle / StoppedLifetime, WouldStop in dry run; and, when an interrupted run was
    finished, the instances left alone because they changed since (SkippedChanged)."""
    dry_run = bool(result.get("dry_run"))
    stopped = _stopped(intent, result)
    idle = sum(1 for e in stopped if e["outcome"] == Outcome.STOP_IDLE.value)
    dropped = len(result.get("dropped", []))
    refused = len(result.get("protected", []))  # EC2 refused them: stop protection
    reserve = _reserve_stopped(intent, result)  # over the cap at plan time, stopped in their place
    extra: dict[str, float] = {
        "WouldStop": len(stopped) if dry_run else 0,
        "StoppedIdle": 0 if dry_run else idle,
        "StoppedLifetime": 0 if dry_run else len(stopped) - idle,
    }
    db_stopped = len((result.get("databases") or {}).get("stopped", []))
    db_failed = len((result.get("databases") or {}).get("failures", []))
    if db_stopped:
        extra["DatabasesStopped"] = 0 if dry_run else db_stopped
        extra["WouldStop"] += db_stopped if dry_run else 0
    if dropped:
        extra["SkippedChanged"] = dropped
    if refused:
        extra[f"Skipped{Outcome.STOP_PROTECTED.value}"] = refused
    if reserve:
        extra[f"Skipped{Outcome.OVER_CAP.value}"] = -reserve
    waiting = len(result.get("waiting", [])) + len((result.get("databases") or {}).get("waiting", []))
    if waiting:
        extra["SkippedChangeFreeze"] = waiting
    return Counts(
        changed=0 if dry_run else len(stopped) + db_stopped,
        skipped=dropped + refused - reserve + waiting,
        failed=len(result.get("failures", [])) + db_failed + freeze.unreadable(result),
        extra=extra,
    )


def decisions(decision: Decision, dry_run: bool) -> list[dict[str, Any]]:
    """One log line per decision that matters: a stop, a stop held back (protection, the cap),
    a malformed StopAfter."""
    return [
        {
            "instance_id": a.instance.instance_id,
            "outcome": a.outcome.value,
            "reason": a.reason,
            "stop": a.stops,
            "dry_run": dry_run,
            "stop_after_error": a.stop_after_error,
        }
        for a in decision.all
        if a.stops or a.outcome in (Outcome.STOP_PROTECTED, Outcome.OVER_CAP) or a.stop_after_error
    ]


def database_decisions(databases: Sequence[DbAssessment], dry_run: bool) -> list[dict[str, Any]]:
    """One log line per database stopped or held back by the cap."""
    return [
        {
            "database": d.database.arn,
            "outcome": d.outcome.value,
            "reason": d.reason,
            "stop": d.stops,
            "dry_run": dry_run,
        }
        for d in databases
        if d.stops or d.outcome is DbOutcome.OVER_CAP
    ]


# ---- the tags -------------------------------------------------------------------------------


def database_tags(entry: Mapping[str, Any], stack_name: str, at: str) -> dict[str, str]:
    """StoppedBy / StoppedReason (``idle``, or ``idle-after-restart`` when AWS had started it
    again after 7 days) / StoppedAt on a stopped database."""
    again = entry["outcome"] == DbOutcome.STOP_AGAIN.value
    return {
        "StoppedBy": clean_value(f"ops-autopilot/{stack_name}"),
        "StoppedReason": "idle-after-restart" if again else "idle",
        "StoppedAt": at,
    }


def stopped_tags(entry: Mapping[str, Any], stack_name: str, at: str) -> dict[str, str]:
    """StoppedBy / StoppedReason / StoppedAt for one stopped instance, from its entry in the
    intent (so a resumed run writes the very same tags): values the whole run shares - the
    stack, the reason's category (``idle`` or ``lifetime``) and the run's time (``at``) - so that
    one CreateTags covers up to 1,000 stopped instances of a category. The numbers that decided
    (quiet hours, peak CPU and network, StopAfter and the time running) are in the mail and in
    the decision's log line, not in the tag."""
    reason = "idle" if entry["outcome"] == Outcome.STOP_IDLE.value else "lifetime"
    return {
        "StoppedBy": clean_value(f"ops-autopilot/{stack_name}"),
        "StoppedReason": reason,
        "StoppedAt": at,
    }


# ---- the mail -------------------------------------------------------------------------------


def mail(ctx: Context[Config], intent: Mapping[str, Any], result: Mapping[str, Any]) -> Mail | None:
    """The run's digest, or None when nothing happened: instances stopped (or would be, in dry
    run), or a stop/tag/check failed (severity warning), or a stop held back because the
    instance changed since the decision; a malformed StopAfter on its own once a day."""
    dry_run = bool(result.get("dry_run"))
    stopped = _stopped(intent, result)
    failures = [*intent.get("failures", []), *result.get("failures", [])]
    dropped = list(result.get("dropped", []))
    db_intent: Mapping[str, Any] = intent.get("databases") or {}
    db_result: Mapping[str, Any] = result.get("databases") or {}
    db_news = bool(db_result.get("stopped") or db_result.get("failures") or db_result.get("dropped"))
    # What waits for a change freeze is said when the list is news: once, not every hour of a
    # freeze (a resumed intent, planned before the freeze, leaves it to the run's fresh plan).
    held = freeze.waiting(result) is not None and bool(intent.get("freeze_news"))
    news = any(intent.get(k) for k in ("warn", "unmark", "snooze_notes", "savings"))
    if not (stopped or failures or dropped or intent.get("malformed_due") or db_news or held or news):
        return None
    region = ctx.common.region
    owner_key = str(intent.get("owner_tag_key") or ctx.common.owner_tag_key)
    facts: Mapping[str, Mapping[str, str]] = intent.get("instances", {})
    policy = intent["policy"]
    digest = Digest(automation=AUTOMATION, stack_name=ctx.common.stack_name, region=region, dry_run=dry_run)

    def item(instance_id: str, *details: str) -> Item:
        known = facts.get(instance_id)
        if known is None:
            return Item(instance_id, list(details), console.ec2_instance(region, instance_id))
        title = instance_id + (f" ({known['name']})" if known.get("name") else "")
        title += f", owner {known.get('owner') or f'unknown (no {owner_key} tag)'}"
        since = f"{known.get('type') or 'type unknown'}, running since {known['launched']} UTC"
        return Item(title, [*details, since], console.ec2_instance(region, instance_id))

    idle = [e for e in stopped if e["outcome"] == Outcome.STOP_IDLE.value]
    lifetime = [e for e in stopped if e["outcome"] == Outcome.STOP_LIFETIME.value]
    verb = "Would stop" if dry_run else "Stopped"
    if idle:
        digest.section(
            f"{verb}: idle ({policy['rule']})", [item(e["id"], f"Why: {e['reason']}") for e in idle]
        )
    if lifetime:
        digest.section(
            f"{verb}: StopAfter lifetime reached (idle or not)",
            [item(e["id"], f"Why: {e['reason']}") for e in lifetime],
        )
    _warning_sections(digest, intent, item, dry_run)
    if held:
        _freeze_section(digest, intent, result, item, dry_run)
    if failures:
        digest.section(
            "Could not be handled (still running unless said otherwise)",
            [
                item(f["instance_id"], f"Could not {f['action']}: {f['code']}: {f['message']}")
                for f in failures
            ],
        )
    if dropped:
        digest.section(
            "Not stopped after all: changed since this run decided (it was interrupted and finished later)",
            [item(d["id"], f"Left alone: {d['reason']}") for d in dropped],
        )

    db_notes = _database_sections(digest, region, db_intent, db_result, verb, int(policy["max_stops"]))
    if intent.get("malformed"):
        digest.section(
            "StopAfter tag not understood (not guessed; the instance is judged on idleness only)",
            [item(m["id"], str(m["error"])) for m in intent["malformed"]],
        )
    owners = routed(ctx, intent, result, item)
    notes = _notes(intent, result, policy)
    notes += db_notes + owners.note()
    if notes and not digest.empty:
        digest.section("Also worth knowing", text=notes)
    digest.advice = [
        "Keep an instance running: tag it AutoStop=false (or AutoStop=no, never or off).",
        "Give an instance a lifetime: tag it StopAfter=90m, 8h or 2d (counted from its last start).",
        "Start a stopped instance again from the console link, or: "
        "aws ec2 start-instances --instance-ids <id>. "
        f"After a start it is not judged idle for {policy['lookback_periods']} hours.",
        "The StoppedBy, StoppedReason (idle or lifetime) and StoppedAt tags on each stopped instance say "
        "who, why and when; the numbers that decided are in this mail.",
        *(DATABASE_ADVICE if db_intent else []),
    ]
    severity: Severity = "warning" if failures or db_result.get("failures") else "info"
    summary = summary_line(intent, result)
    if ctx.resumed:
        summary += " (This run was interrupted; a later invocation finished it.)"
    operators = digest.mail(subject_text(intent, result), summary, severity, now=ctx.now)
    return None if operators is None else replace(operators, routed=owners.mails)


SNOOZE_ADVICE = (
    "Keep it running for a while: tag it AutoStop=snooze-until:<date> (a date, like 2026-12-24, "
    "or a time with its zone, like 2026-12-24T18:00Z), at most {days} days ahead. "
    "Keep it running for good: AutoStop=false."
)


def _warning_sections(
    digest: Digest, intent: Mapping[str, Any], item: Callable[..., Item], dry_run: bool
) -> None:
    """Warn, then act (decide section 7): who is warned and when they stop, who is no longer
    to be stopped, and the snoozes that ended or could not be honoured (each told once)."""
    warned, unmarked, snoozes = (
        intent.get("warn", []),
        intent.get("unmark", []),
        intent.get("snooze_notes", []),
    )
    if warned:
        digest.section(
            ("Would warn" if dry_run else "Warned")
            + ": to be stopped at the planned time if still a candidate then (owners told)",
            [item(e["id"], f"Planned stop: {_when(e['planned'])}", f"Why: {e['reason']}") for e in warned],
        )
    if unmarked:
        digest.section(
            "No longer to be stopped (the planned stop is off)",
            [item(e["id"], f"Now: {e['why']}") for e in unmarked],
        )
    if snoozes:
        digest.section("Snooze tags", [item(e["id"], str(e["why"])) for e in snoozes])
    savings = intent.get("savings")
    if savings:
        rows = [saved_line(*row) for row in savings["rows"]]
        total = sum(float(row[3]) for row in savings["rows"])
        digest.section(
            f"Money saved in {savings['month']}: ${total:,.2f} "
            "(hours stopped until started again x on-demand price)",
            text=[*rows, f"Prices: {', '.join(savings['sources']) or 'none needed'}."],
            limit=len(rows) + 1,
        )


def saved_line(owner: str, team: str, hours: float, dollars: float, unpriced: float) -> str:
    """``- alice@example.com (team payments): 48.0 h stopped, $3.99``."""
    who = (owner or "no owner tag") + (f" (team {team})" if team else "")
    line = f"- {who}: {float(hours):,.1f} h stopped, ${float(dollars):,.2f}"
    return line + (f" ({float(unpriced):,.1f} h of instance types without a known price)" if unpriced else "")


def _when(stamp: str) -> str:
    return stamp.replace("T", " ").removesuffix("Z")[:16] + " UTC"


ROUTED_KINDS = {
    "stopped": routing.Kind("Stopped (idle or past its StopAfter)", "{count} stopped"),
    "warned": routing.Kind(
        "To be stopped at the planned time unless busy again or snoozed", "{count} to be stopped"
    ),
    "unmarked": routing.Kind("No longer to be stopped", "{count} no longer to be stopped"),
    "snooze": routing.Kind("Your snooze tags", "{count} with a snooze to check"),
}


def routed(
    ctx: Context[Config], intent: Mapping[str, Any], result: Mapping[str, Any], item: Callable[..., Item]
) -> routing.Owners:
    """One digest per recipient (intent ``recipients``, autopilot.routing) about their own
    instances only: stopped, warned (with the planned time and how to snooze), no longer to be
    stopped, snoozes that ended or were not honoured. Empty in dry run or without routing."""
    recipients: Mapping[str, str] = intent.get("recipients", {})
    savings = intent.get("savings") or {}
    by_owner: Mapping[str, str] = savings.get("recipients", {})
    if not (recipients or by_owner) or result.get("dry_run"):
        return routing.Owners()

    def found(instance_id: str, kind: str, *details: str) -> routing.Finding:
        return routing.Finding(recipients.get(instance_id), kind, item(instance_id, *details))

    findings = [found(str(e["id"]), "stopped", f"Why: {e['reason']}") for e in _stopped(intent, result)]
    findings += [
        found(str(e["id"]), "warned", f"Planned stop: {_when(e['planned'])}", f"Why: {e['reason']}")
        for e in intent.get("warn", [])
    ]
    findings += [found(str(e["id"]), "unmarked", f"Now: {e['why']}") for e in intent.get("unmark", [])]
    findings += [found(str(e["id"]), "snooze", str(e["why"])) for e in intent.get("snooze_notes", [])]
    findings += [
        routing.Finding(by_owner.get(f"{row[0]}|{row[1]}"), "saved", line=saved_line(*row))
        for row in savings.get("rows", [])
    ]
    kinds = {
        **ROUTED_KINDS,
        "saved": routing.Kind(
            f"Money your stopped instances saved in {savings.get('month', '')}", "money saved last month"
        ),
    }
    return routing.owner_digests(
        findings,
        kinds,
        digest=Digest(AUTOMATION, ctx.common.stack_name, ctx.common.region),
        noun="instance",
        advice=[
            SNOOZE_ADVICE.format(days=ctx.config.policy.max_snooze.days),
            "Start a stopped instance again from the console link, or: "
            "aws ec2 start-instances --instance-ids <id>.",
            f"You get this mail for the instances whose {ctx.common.owner_tag_key} or "
            f"{ctx.common.team_tag_key} tag names you; your operators get every finding too.",
        ],
        now=ctx.now,
    )


def _notes(intent: Mapping[str, Any], result: Mapping[str, Any], policy: Mapping[str, Any]) -> list[str]:
    """The mail's "also worth knowing": stop-protected instances, and those over the cap."""
    notes: list[str] = []
    protected: Sequence[str] = [*intent.get("protected", []), *result.get("protected", [])]
    over_cap = int(intent.get("over_cap", 0)) - _reserve_stopped(intent, result)
    if protected:
        notes.append(
            f"Stop protection on, left running although the rule matched ({len(protected)}): "
            f"{', '.join(protected[:20])}. Tag them AutoStop=false to stop checking them."
        )
    if over_cap > 0:
        notes.append(
            f"{plural(over_cap, 'more instance')} met the rule but this run's limit of "
            f"{policy['max_stops']} stops was reached; the next run looks at them again."
        )
    return notes


def _freeze_section(
    digest: Digest,
    intent: Mapping[str, Any],
    result: Mapping[str, Any],
    item: Callable[..., Item],
    dry_run: bool,
) -> None:
    """What waits for the change freeze: the instances, with why each would be stopped now."""
    by_id = {str(e["id"]): e for e in intent.get("stop", [])}
    db_waiting = (result.get("databases") or {}).get("waiting", [])
    freeze.section(
        digest,
        result,
        "would not be stopped" if dry_run else "not stopped",
        [
            item(i, *([f"Would be stopped now: {by_id[i]['reason']}"] if i in by_id else []))
            for i in result.get("waiting", [])
        ]
        + [Item(str(arn).rsplit(":", 1)[-1], ["database"]) for arn in db_waiting],
    )


def _database_sections(
    digest: Digest,
    region: str,
    db_intent: Mapping[str, Any],
    db_result: Mapping[str, Any],
    verb: str,
    max_stops: int,
) -> list[str]:
    """The mail's database sections (IdleStopperDatabases=true); returns its notes."""
    db_stopped = [e for e in db_intent.get("stop", []) if e["arn"] in set(db_result.get("stopped", []))]
    db_failures = list(db_result.get("failures", []))
    db_dropped = list(db_result.get("dropped", []))

    def database(e: Mapping[str, Any], *details: str) -> Item:
        title = f"{'Aurora cluster' if e['kind'] == 'cluster' else 'DB instance'} {e['id']}"
        title += (f" ({e['name']})" if e.get("name") else "") + f", owner {e.get('owner') or 'unknown'}"
        kind = f"{e.get('engine') or 'engine unknown'}" + (f", {e['class']}" if e.get("class") else "")
        link = console.rds_database(region, str(e["id"]), e["kind"] == "cluster")
        return Item(title, [*details, kind], link)

    db_idle = [e for e in db_stopped if e["outcome"] == DbOutcome.STOP_IDLE.value]
    db_again = [e for e in db_stopped if e["outcome"] == DbOutcome.STOP_AGAIN.value]
    if db_idle:
        digest.section(
            f"{verb}: idle databases ({db_intent.get('rule', '')})",
            [database(e, f"Why: {e['reason']}") for e in db_idle],
        )
    if db_again:
        digest.section(
            f"{verb} again: databases AWS started after 7 days stopped, still unused",
            [database(e, f"Why: {e['reason']}") for e in db_again],
        )
    by_id = {str(e["id"]): e for e in db_intent.get("stop", [])}
    if db_failures:
        digest.section(
            "Databases that could not be handled",
            [
                database(by_id[f["instance_id"]], f"Could not {f['action']}: {f['code']}: {f['message']}")
                if f["instance_id"] in by_id
                else Item(str(f["instance_id"]), [f"Could not {f['action']}: {f['code']}: {f['message']}"])
                for f in db_failures
            ],
        )
    if db_dropped:
        digest.section(
            "Databases not stopped after all: changed since this run decided",
            [Item(str(d["id"]), [f"Left alone: {d['reason']}"]) for d in db_dropped],
        )
    if int(db_intent.get("over_cap", 0)):
        return [
            f"{plural(int(db_intent['over_cap']), 'more database')} met the rule but this run's limit of "
            f"{max_stops} stops was reached; the next run looks at them again."
        ]
    return []


def subject_text(intent: Mapping[str, Any], result: Mapping[str, Any]) -> str:
    stopped = _stopped(intent, result)
    idle = sum(1 for e in stopped if e["outcome"] == Outcome.STOP_IDLE.value)
    lifetime = len(stopped) - idle
    parts = []
    if idle:
        parts.append(f"{idle} idle")
    if lifetime:
        parts.append(f"{lifetime} past StopAfter")
    verb = "would be stopped" if result.get("dry_run") else "stopped"
    db_done = set((result.get("databases") or {}).get("stopped", []))
    db_stopped = [e for e in (intent.get("databases") or {}).get("stop", []) if e["arn"] in db_done]
    again = sum(1 for e in db_stopped if e["outcome"] == DbOutcome.STOP_AGAIN.value)
    databases = plural(len(db_stopped), "database") + (
        f" ({again} again after AWS's 7-day restart)" if again else ""
    )
    if stopped and db_stopped:  # one verb for both: the subject stays within SNS's 100 characters
        text = f"{plural(len(stopped), 'instance')} ({', '.join(parts)}) and {databases} {verb}"
    elif stopped:
        text = f"{plural(len(stopped), 'instance')} {verb} ({', '.join(parts)})"
    else:
        text = f"{databases} {verb}" if db_stopped else ""
    failures = [*intent.get("failures", []), *result.get("failures", [])]
    failed = len({f["instance_id"] for f in failures})
    if failed:
        text += ("; " if text else "") + f"{plural(failed, 'instance')} could not be handled"
    dropped = len(result.get("dropped", []))
    if dropped and not text:
        text = f"{plural(dropped, 'instance')} not stopped: changed since the decision"
    db_failed = len((result.get("databases") or {}).get("failures", []))
    if db_failed:
        text += ("; " if text else "") + f"{plural(db_failed, 'database')} could not be handled"
    db_dropped = len((result.get("databases") or {}).get("dropped", []))
    if db_dropped and not text:
        text = f"{plural(db_dropped, 'database')} not stopped: changed since the decision"
    waiting = len(result.get("waiting", [])) + len((result.get("databases") or {}).get("waiting", []))
    if waiting:
        text += ("; " if text else "") + f"{waiting} not stopped: change freeze"
    warned = len(intent.get("warn", []))
    if warned:
        text += ("; " if text else "") + f"{plural(warned, 'instance')} warned: stop planned"
    unmarked = len(intent.get("unmark", []))
    if unmarked and not text:
        text = f"{plural(unmarked, 'instance')} no longer to be stopped"
    snoozes = len(intent.get("snooze_notes", []))
    if snoozes and not text:
        text = f"{plural(snoozes, 'snooze tag')} ended or not honoured"
    savings = intent.get("savings")
    if savings and not text:
        total = sum(float(row[3]) for row in savings["rows"])
        text = f"Money saved in {savings['month']}: ${total:,.2f} by stopped instances"
    if not text:
        text = f"{plural(len(intent.get('malformed', [])), 'instance')} with a malformed StopAfter tag"
    return text


def summary_line(intent: Mapping[str, Any], result: Mapping[str, Any]) -> str:
    """``Looked at 9 running instances: stopped 3; left running: 2 busy, 1 stop-protected.``"""
    stopped = _stopped(intent, result)
    kept: Counter[str] = Counter({str(k): int(v) for k, v in intent.get("kept", {}).items()})
    dropped = len(result.get("dropped", []))
    if dropped:
        kept["Changed"] += dropped
    refused = len(result.get("protected", []))
    reserve = _reserve_stopped(intent, result)
    kept[Outcome.STOP_PROTECTED.value] += refused
    kept[Outcome.OVER_CAP.value] -= reserve
    waiting = len(result.get("waiting", []))
    kept["ChangeFreeze"] += waiting
    if not result.get("dry_run") and not waiting:
        tried = len(intent.get("stop", [])) + reserve
        kept["StopFailed"] += max(0, tried - len(stopped) - dropped - refused)
    left = ", ".join(
        f"{n} {LABELS.get(name, name)}"
        for name, n in sorted(kept.items(), key=lambda kv: (-kv[1], kv[0]))
        if n
    )
    verb = "would stop" if result.get("dry_run") else "stopped"
    total = int(intent.get("checked", 0))
    line = f"Looked at {plural(total, 'running instance')}: {verb} {len(stopped)}" + (
        f"; left running: {left}." if left else "."
    )
    databases: Mapping[str, Any] = intent.get("databases") or {}
    if databases:
        done = len((result.get("databases") or {}).get("stopped", []))
        db_left = ", ".join(
            f"{n} {DB_LABELS.get(str(name), str(name))}"
            for name, n in sorted(databases.get("kept", {}).items(), key=lambda kv: (-int(kv[1]), str(kv[0])))
            if n
        )
        line += f" Looked at {plural(int(databases.get('checked', 0)), 'database')}: {verb} {done}" + (
            f"; left alone: {db_left}." if db_left else "."
        )
    return line


def _stopped(intent: Mapping[str, Any], result: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The intent's stop entries (and reserve entries) of the instances the act stopped (would
    stop, in dry run)."""
    done = set(result.get("stopped", []))
    return [e for e in [*intent.get("stop", []), *intent.get("reserve", [])] if e["id"] in done]


def _reserve_stopped(intent: Mapping[str, Any], result: Mapping[str, Any]) -> int:
    """How many of the reserve (over the cap at plan time) were stopped in a refused one's place."""
    done = set(result.get("stopped", []))
    return sum(1 for e in intent.get("reserve", []) if e["id"] in done)
