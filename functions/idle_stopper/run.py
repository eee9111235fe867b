"""The sequence of one idle_stopper run, for the runner (autopilot.runner).

``plan`` gathers (service) and decides (decide) and changes nothing; its intent, recorded by
the runner before acting, holds the stop set with everything the tags and the mail need.
``act`` stops, then tags only what really stopped (the tags never claim a stop that did not
happen). A stopped instance is no longer running, so no later plan picks it again; an
interrupted act is finished from the recorded intent by a later invocation (``ctx.resumed``),
which first looks at each instance again (:func:`idle_stopper.decide.recheck`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from aws_lambda_powertools import Logger

from autopilot import freeze, routing
from autopilot.runner import Context, Plan, Run
from idle_stopper import decide, report, service
from idle_stopper.config import Config
from idle_stopper.event import Trigger

logger = Logger(child=True)
# Memory key: the instances (and databases) the last mail said wait for the change freeze.
FREEZE_MEMORY = "freeze-waiting"


def plan(run: Run[Config, Trigger]) -> Plan:
    """Gather the running fleet and its metrics, decide what to stop. Changes nothing."""
    policy = run.config.policy
    now = run.now  # the clock's, never the event's

    fleet = list(service.running_instances())
    # Snoozes first (AutoStop=snooze-until:...): a snoozed instance needs no metrics.
    snoozes = {
        i.instance_id: decide.snooze_state(
            i, _text(run.memory.get(decide.SNOOZE + i.instance_id)), policy, now
        )
        for i in fleet
    }
    assessed = [decide.snoozed(decide.assess(i, policy, now), snoozes[i.instance_id]) for i in fleet]
    # An instance remembered busy (its busy hours still in the window) needs no metrics.
    recalled = decide.recalled(assessed, run.memory, policy, now)
    need = [
        a.instance.instance_id
        for a in assessed
        if a.outcome is decide.Outcome.NEEDS_METRICS and a.instance.instance_id not in recalled
    ]
    series, asked = _metrics(need, policy, run)
    concluded = decide.conclude_all(assessed, series, recalled, policy, now)
    warnings = decide.warn_first(concluded, run.memory, policy, now, run.dry_run)
    concluded = warnings.concluded

    # Stop protection. A real run lets EC2 judge it: StopInstances refuses a protected instance
    # (service.stop_instances), and the act fills its place from the reserve - a call per
    # protected instance instead of one per candidate. A dry run makes no StopInstances, so it
    # reads the attribute, lazily in priority order until the cap is filled: its mail is exact.
    failures: list[service.Failure] = []
    protection: dict[str, bool] = {}
    ordered = decide.candidates(concluded)  # sorted once; each question is then a linear scan
    if run.dry_run:
        while (instance_id := decide.next_to_check(ordered, policy.max_stops, protection)) is not None:
            protection[instance_id] = service.is_stop_protected(instance_id, failures)
    else:
        protection = {a.instance.instance_id: False for a in ordered}
    decision = decide.finish(concluded, policy, protection)

    memory: dict[str, Any] = decide.remember(policy, series, recalled, now)
    memory.update(warnings.memory)
    memory.update({decide.SNOOZE + i: state.memory for i, state in snoozes.items() if state is not None})
    savings, saved_now = _savings(run, {i.instance_id: i for i in fleet}, decision, memory)
    databases: list[decide.DbAssessment] | None = None
    if run.config.databases:
        databases, db_memory = _databases(run)
        memory.update(db_memory)
    db_intent = (
        decide.database_intent(databases, run.common.owner_tag_key, policy) if databases is not None else None
    )
    intent = decide.intent(
        decision,
        policy,
        now,
        run.common.owner_tag_key,
        [f.as_dict() for f in failures],
        run.dry_run,
        db_intent,
        warnings,
        [(i, state) for i in fleet if (state := snoozes[i.instance_id]) is not None and state.news],
        savings,
    )
    if intent is not None:
        intent.update(_recipients(run, intent, {i.instance_id: i for i in fleet}))
    # Marking a warned instance is a change too: a freeze holds it back with the stops.
    marks = intent and (intent.get("warn") or intent.get("unmark"))
    calendar = freeze.read(run.common.change_calendar) if intent and (_stops(intent) or marks) else None
    if intent and calendar is not None:
        intent["freeze"] = calendar.as_json()
        waiting = sorted(_stops(intent)) if calendar.closed else []
        # Said once: the mail lists what waits when the list changed, not every hour of a freeze.
        told = set(str(run.memory.get(FREEZE_MEMORY, "")).split())
        intent["freeze_news"] = sorted(set(waiting) - told)
        memory[FREEZE_MEMORY] = " ".join(waiting)
    elif run.memory.get(FREEZE_MEMORY):
        memory[FREEZE_MEMORY] = ""
    counts = report.plan_counts(decision, len(failures), asked, len(recalled), databases)
    return Plan(
        intent=intent,
        counts=replace(counts, extra={**counts.extra, "SavedDollars": round(saved_now, 2)}),
        decisions=[
            *report.decisions(decision, run.dry_run),
            *report.database_decisions(databases or (), run.dry_run),
        ],
        memory=memory,
    )


def _savings(
    run: Run[Config, Trigger],
    running: Mapping[str, decide.Instance],
    decision: decide.Decision,
    memory: dict[str, Any],
) -> tuple[dict[str, Any] | None, float]:
    """Money saved (decide section 8): close the remembered stops whose instances run again,
    price them (1 pricing:GetProducts per instance type a month, cached in memory), add them to
    this month's ledger, remember this run's stops; on the first run of a month, the last
    month's ledger for the mail. Writes into ``memory``; returns (the ledger to mail or None,
    the dollars closed this run)."""
    now = run.now
    closed, still, unconfirmed = decide.close_stops(run.memory, running, now)
    month, last = decide.month_of(now), decide.previous_month(now)
    prices: dict[str, float | None] = {}
    sources: dict[str, str] = {}
    for instance_type in sorted({c.instance_type for c in closed}):
        cached = run.memory.get(decide.PRICE + instance_type)
        if isinstance(cached, list) and len(cached) == 3 and cached[2] == month:
            prices[instance_type], sources[instance_type] = cached[0], str(cached[1])
        else:
            prices[instance_type], sources[instance_type] = service.on_demand_price(
                instance_type, run.common.region
            )
        memory[decide.PRICE + instance_type] = [prices[instance_type], sources[instance_type], month]
    for key, value in run.memory.items():  # prices asked for earlier this month stay cached
        if (
            key.startswith(decide.PRICE)
            and key not in memory
            and isinstance(value, list)
            and value[-1:] == [month]
        ):
            memory[key] = value
    ledger = decide.read_ledger(run.memory.get(decide.SAVED + month))
    saved = decide.add_to_ledger(ledger, closed, prices)
    for c in closed:  # per owner on the dashboard (a Logs Insights widget: no metric per owner)
        price = prices.get(c.instance_type)
        logger.info(
            "money saved",
            extra={
                "instance_id": c.instance_id,
                "owner": c.owner or "(no owner tag)",
                "team": c.team,
                "instance_type": c.instance_type,
                "hours": round(c.hours, 2),
                "dollars": round(c.hours * price, 4) if price is not None else 0.0,
                "priced": price is not None,
            },
        )
    if ledger:
        memory[decide.SAVED + month] = decide.write_ledger(ledger)
    memory.update(still)
    if not run.dry_run:
        common = run.common
        stopping = decide.stop_records(
            [a.instance for a in decision.stop], now, common.owner_tag_key, common.team_tag_key
        )
        # An instance whose earlier stop did not happen keeps that record (no write every hour for
        # one EC2 refuses): its saving counts from the first attempt.
        memory.update({key: unconfirmed.get(key, value) for key, value in stopping.items()})
    told = run.memory.get(decide.SAVINGS_TOLD)
    due = bool(run.memory.get(decide.SAVED + last)) and told != last
    if due or told is not None:
        memory[decide.SAVINGS_TOLD] = last if due else told
    if not due:
        return None, saved
    rows = decide.read_ledger(run.memory.get(decide.SAVED + last))
    used = {str(v[1]) for k, v in run.memory.items() if k.startswith(decide.PRICE) and isinstance(v, list)}
    return {
        "month": last,
        "rows": decide.write_ledger(rows),
        "sources": sorted(used | set(sources.values())),
    }, saved


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _recipients(
    run: Run[Config, Trigger], intent: dict[str, Any], fleet: Mapping[str, decide.Instance]
) -> dict[str, Any]:
    """Who hears about each instance the intent mentions (autopilot.routing: the owner tag when
    it is an address, else the routing map by owner or team tag): ``recipients`` {id: address},
    and the routing map's problems if it could not be used. Nothing when routing is off or in
    dry run (1 ssm:GetParameter otherwise)."""
    common = run.common
    routes = routing.load(common)
    if routes is None:
        return {}
    found = routes.recipients(
        (i, inst.tags.get(common.owner_tag_key), inst.tags.get(common.team_tag_key))
        for i in intent.get("instances", {})
        if (inst := fleet.get(i)) is not None
    )
    if intent.get("savings"):  # last month's ledger: each owner's own line
        intent["savings"]["recipients"] = routes.recipients(
            (f"{owner}|{team}", owner, team) for owner, team, *_ in intent["savings"]["rows"]
        )
    return {"recipients": found, "routing_problems": list(routes.problems)}


def _stops(intent: Mapping[str, Any]) -> list[str]:
    """Every instance and database the intent would stop (the reserve is not: over the cap)."""
    db_stops = (intent.get("databases") or {}).get("stop", [])
    return [str(e["id"]) for e in intent.get("stop", [])] + [str(e["arn"]) for e in db_stops]


def _databases(run: Run[Config, Trigger]) -> tuple[list[decide.DbAssessment], dict[str, Any]]:
    """The databases' assessments and their part of the memory (IdleStopperDatabases=true)."""
    found = service.databases()
    judged = [db for db in found if decide.db_exclusion(db) is None]
    metrics = service.fetch_db_metrics(judged, run.config.policy, run.now, run.deadline) if judged else {}
    return decide.decide_databases(found, metrics, run.config.policy, run.now, run.memory)


def _metrics(
    instance_ids: list[str], policy: decide.Policy, run: Run[Config, Trigger]
) -> tuple[dict[str, list[decide.Period]], int]:
    """The periods of the instances to judge, and how many metrics were asked for (CloudWatch
    bills each): the CPU of all, then the network only of those whose CPU alone does not decide
    (decide.judge_cpu) - a busy instance costs one metric, not three."""
    if not instance_ids:
        return {}, 0
    cpu = service.fetch_metrics(instance_ids, policy, run.now, run.deadline, service.CPU)
    quiet = [i for i in instance_ids if decide.judge_cpu(cpu.get(i, ()), policy, run.now) is None]
    network = service.fetch_metrics(quiet, policy, run.now, run.deadline, service.NETWORK) if quiet else {}
    series = {i: decide.merge(cpu.get(i, ()), network.get(i, ())) for i in instance_ids}
    return series, len(instance_ids) * len(service.CPU) + len(quiet) * len(service.NETWORK)


def act(ctx: Context[Config], intent: Mapping[str, Any]) -> dict[str, Any]:
    """Stop the intent's stop set and tag what stopped. Idempotent: called again on the same
    intent (``ctx.resumed``), an instance already stopped is tagged, not stopped again, and one
    that something changed since (opted out, gone, started elsewhere) is left alone. In dry
    run - now, or when the intent was recorded - no mutating call at all."""
    dry_run = ctx.dry_run or bool(intent.get("dry_run"))
    entries = {str(e["id"]): e for e in intent.get("stop", [])}
    result: dict[str, Any] = {"dry_run": dry_run, "stopped": [], "dropped": [], "failures": []}
    databases = [str(e["arn"]) for e in (intent.get("databases") or {}).get("stop", [])]
    # A change freeze holds every stop back, in dry run too (the same decision). The plan asked
    # the calendar; an interrupted run finished later asks again (the freeze may have begun).
    calendar = freeze.Freeze.from_json(intent["freeze"]) if intent.get("freeze") else None
    if ctx.resumed and calendar is not None:
        calendar = freeze.read(ctx.common.change_calendar) or calendar
    if calendar is not None:
        result["freeze"] = calendar.as_json()
        if calendar.closed:
            result["waiting"] = list(entries)
            if databases:
                result["databases"] = {"stopped": [], "waiting": databases}
            logger.info("change freeze: no stop", extra={**calendar.as_json(), "waiting": len(entries)})
            return result
    if dry_run:
        return _as_if(result, list(entries), intent)
    result["marked"], result["unmarked"], mark_failures = _marks(intent)
    if not entries:
        result["failures"] = _logged(mark_failures)
        if intent.get("databases"):
            result["databases"] = _act_databases(ctx, intent)
        return result

    failures: list[service.Failure] = list(mark_failures)
    ours: list[str] = []
    to_stop = list(entries)
    if ctx.resumed:
        to_stop, ours = _recheck(list(entries), result["dropped"], failures, ctx)
    stopped, protected, stop_failures = service.stop_instances(to_stop, already_stopping_are_ours=ctx.resumed)
    failures += stop_failures
    reserve = {str(e["id"]): e for e in intent.get("reserve", [])}
    if ctx.resumed:  # the interrupted attempt may have stopped some of the reserve: those are ours
        current = service.instances(list(reserve)) if reserve else {}
        ours += [i for i in reserve if decide.recheck(current.get(i), ctx.now)[0] is decide.Recheck.OURS]
    else:
        # Each instance EC2 refused for its stop protection leaves a place: the next ones of the
        # reserve (the candidates after the cap, in priority order) take them, until none is left.
        waiting, places = list(reserve), len(protected)
        while places and waiting:
            batch, waiting = waiting[:places], waiting[places:]
            more, more_protected, more_failures = service.stop_instances(batch)
            stopped, protected, failures = (
                stopped + more,
                protected + more_protected,
                failures + more_failures,
            )
            places = len(more_protected)
    entries.update(reserve)
    result["protected"] = protected
    done = set(stopped) | set(ours)
    result["stopped"] = [instance_id for instance_id in entries if instance_id in done]
    tags = {
        instance_id: report.stopped_tags(entries[instance_id], ctx.common.stack_name, str(intent["at"]))
        for instance_id in result["stopped"]
    }
    failures += service.tag_instances(tags)
    if ctx.config.policy.warning:  # a stopped instance's planned-stop tag has served its purpose
        failures += service.untag_instances(result["stopped"], decide.PLANNED_TAG)

    result["failures"] = _logged(failures)
    if intent.get("databases"):
        result["databases"] = _act_databases(ctx, intent)
    return result


def _act_databases(ctx: Context[Config], intent: Mapping[str, Any]) -> dict[str, Any]:
    """Stop the intent's databases, one call each (the API takes one), then tag each that
    stopped. Resuming, a database already stopping or stopped is ours (tagged, not stopped
    again); one gone or in another state is left alone."""
    stopped: list[str] = []
    dropped: list[dict[str, str]] = []
    failures: list[service.Failure] = []
    for entry in intent["databases"].get("stop", []):
        kind, identifier, arn = str(entry["kind"]), str(entry["id"]), str(entry["arn"])
        if ctx.resumed:
            status = service.database_status(kind, identifier)
            if status in ("stopping", "stopped"):
                stopped.append(arn)
                continue
            if status != "available":
                dropped.append(
                    {
                        "id": identifier,
                        "reason": "no longer exists" if status is None else f"status is now {status}",
                    }
                )
                continue
        failure = service.stop_database(kind, identifier)
        if failure is not None:
            failures.append(failure)
            continue
        stopped.append(arn)
    entries = {str(e["arn"]): e for e in intent["databases"].get("stop", [])}
    for arn in stopped:
        tags = report.database_tags(entries[arn], ctx.common.stack_name, str(intent["at"]))
        failure = service.tag_database(arn, str(entries[arn]["id"]), tags)
        if failure is not None:
            failures.append(failure)
    for failure in failures:
        logger.error(
            "database not handled",
            extra={"database": failure.instance_id, "action": failure.action, "code": failure.code},
        )
    return {"stopped": stopped, "dropped": dropped, "failures": [f.as_dict() for f in failures]}


def _as_if(result: dict[str, Any], instance_ids: list[str], intent: Mapping[str, Any]) -> dict[str, Any]:
    """A dry run's result: what would have been stopped (no call made)."""
    result["stopped"] = instance_ids
    if intent.get("databases"):
        result["databases"] = {"stopped": [str(e["arn"]) for e in intent["databases"].get("stop", [])]}
    return result


def _logged(failures: list[service.Failure]) -> list[dict[str, str]]:
    for failure in failures:
        logger.error(
            "instance not handled",
            extra={
                "instance_id": failure.instance_id,
                "action": failure.action,
                "code": failure.code,
                "error": failure.message,
            },
        )
    return [f.as_dict() for f in failures]


def _marks(intent: Mapping[str, Any]) -> tuple[list[str], list[str], list[service.Failure]]:
    """The warned instances tagged with their planned stop time, the ones no longer candidates
    unmarked (CreateTags per planned time, DeleteTags: 1 each for up to 1,000 instances)."""
    planned = {str(e["id"]): {decide.PLANNED_TAG: str(e["planned"])} for e in intent.get("warn", [])}
    unmark = [str(e["id"]) for e in intent.get("unmark", [])]
    failures = service.tag_instances(planned) if planned else []
    failures += service.untag_instances(unmark, decide.PLANNED_TAG) if unmark else []
    failed = {f.instance_id for f in failures}
    return [i for i in planned if i not in failed], [i for i in unmark if i not in failed], failures


def _recheck(
    instance_ids: list[str],
    dropped: list[dict[str, str]],
    failures: list[service.Failure],
    ctx: Context[Config],
) -> tuple[list[str], list[str]]:
    """Resuming: the instances of the recorded stop set as they are now. Returns those to stop
    (still running, still allowed, not stop-protected now) and those already stopping or
    stopped (ours: the interrupted run stopped them); ``dropped`` gets the rest, with why."""
    current = service.instances(instance_ids)
    to_stop: list[str] = []
    ours: list[str] = []
    for instance_id in instance_ids:
        verdict, why = decide.recheck(current.get(instance_id), ctx.now)
        if verdict is decide.Recheck.OURS:
            ours.append(instance_id)
        elif verdict is decide.Recheck.DROP:
            dropped.append({"id": instance_id, "reason": why})
        elif service.is_stop_protected(instance_id, failures):
            unread = any(f.instance_id == instance_id for f in failures)
            why = "stop protection could not be read" if unread else "stop protection is on now"
            dropped.append({"id": instance_id, "reason": why})
        else:
            to_stop.append(instance_id)
    logger.info(
        "finishing an interrupted run's stops",
        extra={"to_stop": to_stop, "already_stopped": ours, "dropped": dropped},
    )
    return to_stop, ours
