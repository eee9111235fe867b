"""The one way every automation runs. A handler is three lines (see any ``functions/*/app.py``):

    AUTOMATION = Automation(name=..., parse=event.parse, config=Config.from_env,
                            plan=run.plan, act=run.act, report=report.mail, counts=report.counts)

    @logger.inject_lambda_context
    @metrics.log_metrics
    def lambda_handler(event, context):
        return runner.handle(AUTOMATION, event, context, logger, metrics)

:func:`handle` owns everything the automations share, in this order:

1. **accept** - another account's event, a malformed one, or one whose time is far from the
   clock's (older than a real delivery can be, or ahead of it: replayed or forged): one log
   line, the metrics (zeros and ``MalformedEvents`` or ``StaleEvents``), a normal return;
   nothing changed.
2. **config** - the stack-wide settings (:class:`autopilot.config.CommonConfig`) and the
   automation's own frozen config; a bad value raises, naming the variable. A scheduled event
   at a time the function's own ``cron(...)`` schedule (``SCHEDULE``) did not name is refused
   like a stale one: someone invoked the function, its rule did not.
3. **claim** - Powertools Idempotency on the stack's table, keyed by the event id and leased to
   this invocation's deadline: a duplicate delivery while the first is running does nothing, one
   after it returns the first's result; a run that raised releases the claim for its retry.
4. **finish earlier work** - every outbox entry of this automation whose lease has run out (a
   run that died between two steps, or whose mail SNS refused) is taken over: its work carried
   out again from its intent (``act`` is idempotent), its mail sent.
5. **plan** (gather + decide, no changes) -> **record** the intent -> **act** -> **record** the
   result and the mail (``report``, pure) -> **send** -> mark sent. A mail is marked sent only
   after SNS accepted it; one that was not stays in the outbox and the invocation raises, so the
   retry (or the next run) sends it.
   An automation with rounds (``Automation.rest``) may plan more than one invocation can do:
   the intents of the next rounds (``Plan.later``) are queued in the outbox before anything
   acts, what a round did not reach is queued again with its result, and the stack's state
   machine invokes the function with continuation events, each taking the next queued intent
   (:mod:`autopilot.outbox`, rounds) - the rounds gather and decide nothing again.
   A plan may remember facts for the next runs' plans (``Plan.memory`` -> ``Run.memory``),
   read by step 4's Query and written only when changed: what spares the next run a question.
6. **metrics** - only what an alarm or the dashboard reads (a custom metric is billed for
   every hour in which it is sent; tests/template/test_metrics_read.py holds the template to
   it): Checked, Changed, Skipped, Failed and the automation's ``Automation.metrics``, each
   when not zero (a count that is zero in most runs costs nothing then, and the alarms on
   counts read no data as zero), except the names in ``Automation.always_sent`` (a zero that
   means something). ``Checked`` is sent by every run that got to its end, zero included, and
   only there with a zero: its SampleCount is the runs completed, what the template's silence
   alarm counts (PRODUCT.md rule 8). The automation's other numbers are in the run's result
   and its log line only. One ``decision`` log line per decision, one ``run finished`` line.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError

from autopilot import aws
from autopilot.config import CommonConfig, ConfigError, env_str
from autopilot.events import (
    MAX_EVENT_AGE,
    MAX_EVENT_AHEAD,
    BadEvent,
    Continuation,
    ScheduledRun,
    StaleEvent,
    accept,
    is_continuation,
    parse_continuation,
    reject,
)
from autopilot.notify import make_subject, publish, send_email
from autopilot.outbox import TOPIC, Entry, Mail, Outbox, OutboxError
from autopilot.runtime import Deadline
from autopilot.schedule import Schedule

C = TypeVar("C")
T = TypeVar("T")

# What the runner itself calls, on the stack's table (claims and outbox) and SNS (the mail).
# Every app.py's PERMISSIONS includes these; the template grants them on the automation's own
# partitions only.
PERMISSIONS = frozenset(
    {
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:Query",
        "sns:Publish",
    }
)
MAX_ATTEMPTS = 3  # invocations that may try to finish an earlier run's work before it is given up
GIVEN_UP_INTENT_CHARS = 20_000
CLAIM_KEEPS_SECONDS = 2 * 86400  # a duplicate delivery up to two days later is still recognised
STANDARD_METRICS = ("Checked", "Changed", "Skipped", "Failed")
# Sent by every run that got to its end, zero included (and with a zero by no other): its
# SampleCount is the runs completed, the silence alarm's statistic. No metric of its own.
COMPLETED_METRIC = "Checked"

# The clock every automation reads "now" from (never the event's time). Tests may replace it.
clock: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731


@dataclass(frozen=True)
class Counts:
    """What one run looked at and did. The four, and the extras the automation names in
    ``Automation.metrics``, are emitted as metrics when not zero (or named in
    ``Automation.always_sent``); the run's result and its ``run finished`` log line carry all
    of them, zeros included."""

    checked: int = 0
    changed: int = 0
    skipped: int = 0
    failed: int = 0
    extra: Mapping[str, float] = field(default_factory=dict)

    def __add__(self, other: Counts) -> Counts:
        extra = dict(self.extra)
        for name, value in other.extra.items():
            extra[name] = extra.get(name, 0) + value
        return Counts(
            self.checked + other.checked,
            self.changed + other.changed,
            self.skipped + other.skipped,
            self.failed + other.failed,
            extra,
        )

    def as_metrics(self) -> dict[str, float]:
        standard = (self.checked, self.changed, self.skipped, self.failed)
        return {**dict(zip(STANDARD_METRICS, standard, strict=True)), **self.extra}


@dataclass(frozen=True)
class Context(Generic[C]):
    """What ``act`` and ``report`` get: the settings, the clock's time, the time budget."""

    automation: str
    config: C
    common: CommonConfig
    now: datetime
    deadline: Deadline
    resumed: bool = False  # True when finishing the work of an earlier run from its intent

    @property
    def dry_run(self) -> bool:
        return self.common.dry_run


@dataclass(frozen=True)
class Run(Context[C], Generic[C, T]):
    """What ``plan`` gets: the context plus the parsed trigger and the run's id."""

    trigger: T | None = None
    run_id: str = ""
    # What earlier runs remembered (``Plan.memory``): facts that spare a question, never a
    # decision. Empty the first time, or when it was lost - the plan then simply asks.
    memory: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """The outcome of gather + decide.

    ``intent`` is everything ``act`` needs to carry the work out and ``report`` needs to tell
    about it, as plain JSON data; it is recorded before acting. None means there is nothing to
    do and nothing to say (nothing is recorded, no mail). ``counts`` are the gather-side numbers
    (checked, skipped); ``decisions`` become one log line each."""

    intent: Mapping[str, Any] | None = None
    counts: Counts = field(default_factory=Counts)
    decisions: Sequence[Mapping[str, Any]] = ()
    # The rest of the work, when it is more than one intent holds or one invocation can do:
    # the intents of the next rounds, in order (an automation with rounds only, see
    # ``Automation.rest``). Queued in the outbox before anything acts; each round takes the
    # next, so the rounds neither gather nor decide again.
    later: Sequence[Mapping[str, Any]] = ()
    # What the next runs' plans get as ``Run.memory`` (a flat mapping of JSON values), in place
    # of this run's; None keeps it as it is. Written before anything acts, in dry run too (it
    # is what was seen, not what was done); only what changed is written.
    memory: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Automation(Generic[C, T]):
    """One automation, as its app.py declares it: the rooms the runner sequences."""

    name: str
    parse: Callable[[Any], T]  # event.py: raw event -> typed trigger, or BadEvent
    config: Callable[[], C]  # config.py: Config.from_env
    plan: Callable[[Run[C, T]], Plan]  # run.py: gather (service) + decide (decide), no changes
    act: Callable[[Context[C], Mapping[str, Any]], dict[str, Any]]  # run.py: idempotent; no-op in dry run
    report: Callable[[Context[C], Mapping[str, Any], Mapping[str, Any]], Mail | None]  # report.py: pure
    counts: Callable[[Mapping[str, Any], Mapping[str, Any]], Counts]  # report.py: act-side numbers
    # The oldest event (by its ``time``, against the clock) the automation acts on.
    max_event_age: timedelta = MAX_EVENT_AGE
    # The extras of ``counts`` sent as metrics, each read by an alarm of the template (a metric
    # is billed for every hour it is sent): when not zero. The rest are in the run's log line.
    metrics: frozenset[str] = frozenset()
    # Of those, the ones sent even when zero: a value whose zero means something, or that an
    # alarm needs as data (TreatMissingData ignore).
    always_sent: frozenset[str] = frozenset()
    # The work an intent left undone (its time ran out), as the intent of a next round, or None
    # (report.py, pure). Given, the automation runs in rounds: a run whose plan has ``later``
    # intents, or whose act left a rest, starts the stack's state machine
    # (CONTINUATION_STATE_MACHINE), which invokes the function with continuation events; each
    # round acts on the next queued intent, until none is left.
    rest: Callable[[Mapping[str, Any], Mapping[str, Any]], Mapping[str, Any] | None] | None = None
    # Triggers whose runs are housekeeping, not the automation's runs: a periodic look at work
    # in progress (patch_sweeper's hourly tick). Their completed runs send no zero Checked, so
    # they do not feed the silence alarm (which counts the runs completed) - an automation that
    # stopped running would otherwise look alive for ever.
    housekeeping: tuple[type, ...] = ()

    def __post_init__(self) -> None:
        named = set(self.metrics) | set(self.always_sent)
        if named & set(STANDARD_METRICS):
            raise ValueError(f"{self.name}: the runner sends {', '.join(STANDARD_METRICS)} itself")
        if not self.always_sent <= self.metrics:
            raise ValueError(f"{self.name}: always_sent must name metrics it sends (Automation.metrics)")


# One claim store per thread: Powertools configures a store on its first use in a way two
# threads can interleave (one marks it configured, the other uses it before its event-key
# expression is set). Lambda runs one invocation per process at a time; tests run two at once.
_stores: dict[tuple[str, str, int], DynamoDBPersistenceLayer] = {}


def _claim_store(table: str, automation: str) -> DynamoDBPersistenceLayer:
    client = aws.client("dynamodb")
    key = (table, automation, threading.get_ident())
    store = _stores.get(key)
    if store is None or store.client is not client:
        store = DynamoDBPersistenceLayer(
            table_name=table,
            key_attr="pk",
            sort_key_attr="sk",
            static_pk_value=f"claim#{automation}",
            expiry_attr="expiration",
            boto3_client=client,
        )
        _stores[key] = store
    return store


def handle(
    automation: Automation[C, T], event: Any, context: Any, logger: Any, metrics: Any
) -> dict[str, Any]:
    """Run one invocation of ``automation`` (see the module doc for the steps)."""
    parse: Callable[[Any], Any] = automation.parse
    if automation.rest is not None and is_continuation(event):
        parse = lambda raw: parse_continuation(raw, automation.name)  # noqa: E731
    try:
        trigger = accept(event, context, parse, clock(), automation.max_event_age)
        if not isinstance(event.get("id"), str) or not event["id"].strip():
            raise BadEvent("event has no id (every EventBridge event has one; it keys the run's claim)")
    except BadEvent as err:
        _emit(metrics, Counts())
        return reject(err, event, logger, metrics)
    try:
        common = CommonConfig.from_env()
        config = automation.config()
        table = env_str("OUTBOX_TABLE")
    except ConfigError:
        _emit(metrics, Counts(failed=1))  # a broken deployment fails loudly, and still reports
        raise
    try:
        _require_scheduled_time(trigger, common.schedule, automation.max_event_age)
    except BadEvent as err:
        _emit(metrics, Counts())
        return reject(err, event, logger, metrics)
    deadline = Deadline.from_context(context)
    outbox = Outbox(table, automation.name)
    ran: list[bool] = []

    idempotency = IdempotencyConfig(
        event_key_jmespath="id", raise_on_no_idempotency_key=True, expires_after_seconds=CLAIM_KEEPS_SECONDS
    )
    idempotency.register_lambda_context(context)

    @idempotent_function(  # type: ignore[untyped-decorator]  # Powertools' decorator is untyped
        data_keyword_argument="event",
        persistence_store=_claim_store(table, automation.name),
        config=idempotency,
    )
    def claimed(event: dict[str, Any]) -> dict[str, Any]:
        ran.append(True)
        return _work(automation, trigger, config, common, outbox, deadline, context, logger, metrics)

    try:
        result: dict[str, Any] = claimed(event=event)
    except IdempotencyAlreadyInProgressError:
        logger.info(
            "duplicate delivery: this event is being handled by another invocation",
            extra={"id": event.get("id")},
        )
        _emit(metrics, Counts())
        return {"status": "in-progress-elsewhere"}
    except Exception:
        _emit(metrics, Counts(failed=1))  # a run that raised still reports, as one failure
        raise
    if not ran:
        # The work of this event is done (the claim says so), but its mail may still be held:
        # a retry of a run whose mail SNS refused sends it, and plans nothing again.
        logger.info("duplicate delivery: this event was handled already", extra={"id": event.get("id")})
        total, held = _finish_earlier(automation, config, common, outbox, deadline, logger, metrics)
        _emit(metrics, total, automation)
        _raise_if_held(held)
        return {**result, "status": "duplicate"}  # not a run of its own: no Checked at zero
    # Raised only now, after the claim was marked done: the retry sends the mail and does not
    # do the work (or send the same news) again.
    _raise_if_held(int(result.get("mails_held", 0)))
    return result


def _work(
    automation: Automation[C, T],
    trigger: T,
    config: C,
    common: CommonConfig,
    outbox: Outbox,
    deadline: Deadline,
    context: Any,
    logger: Any,
    metrics: Any,
) -> dict[str, Any]:
    total, held = _finish_earlier(automation, config, common, outbox, deadline, logger, metrics)
    run: Run[C, T] = Run(
        automation.name,
        config,
        common,
        clock(),
        deadline,
        trigger=trigger,
        run_id=_run_id(context),
        memory=dict(outbox.memory),
    )
    rounds = automation.rest is not None
    entry: Entry | None = None
    queued = False  # work is queued for the next rounds
    if rounds and isinstance(trigger, Continuation):
        entry, queued = outbox.take_queued(run.run_id, _lease(deadline))
        if entry is None:
            logger.info("nothing is queued: the rounds of this run are done")
    else:
        plan = automation.plan(run)
        for decision in plan.decisions:
            logger.info("decision", extra=dict(decision))
        total += plan.counts
        if plan.memory is not None:
            outbox.remember(plan.memory)
        slots = outbox.slots(run.run_id, 1 + len(plan.later)) if rounds else [""]
        if rounds and not common.dry_run:  # replaces what an earlier run left queued
            outbox.queue(slots[1:], list(plan.later))
            queued = bool(plan.later)
        if plan.intent is not None:
            entry = outbox.record(run.run_id, plan.intent, _lease(deadline), slots[0])
    more = False
    if entry is not None:
        with _released_on_error(outbox, entry):
            result = automation.act(run, entry.intent)
            rest = _rest(automation, common, entry.intent, result)
            outbox.acted(entry, result, automation.report(run, entry.intent, result), rest)
        counted = automation.counts(entry.intent, result)
        total += counted
        if not _send(outbox, entry, common, automation.name, logger):
            held += 1
        # A round that changed nothing is not followed at once: the next would fare no better.
        more = (queued or rest is not None) and (rest is None or counted.changed > 0)
    if more and not isinstance(trigger, Continuation) and not _start_rounds(automation.name, trigger, logger):
        total += Counts(failed=1)  # the rest waits for the next scheduled run: said, counted

    _emit(metrics, total, automation, completed=not isinstance(trigger, automation.housekeeping))
    summary = {
        "status": "done",
        # Which stack and automation ran: the on-success destination's event carries this result
        # to the default bus, and the stack's roll-up rule selects its own runs by it.
        "stack": common.stack_name,
        "automation": automation.name,
        "dry_run": common.dry_run,
        **total.as_metrics(),
        "mails_held": held,
    }
    if rounds:
        summary["more"] = more
    logger.info("run finished", extra=summary)
    return summary


def _rest(
    automation: Automation[C, T], common: CommonConfig, intent: Mapping[str, Any], result: Mapping[str, Any]
) -> Mapping[str, Any] | None:
    """The work ``intent`` left, to queue again (never in dry run, which has no rounds)."""
    if automation.rest is None or common.dry_run:
        return None
    return automation.rest(intent, result)


def _start_rounds(automation: str, trigger: Any, logger: Any) -> bool:
    """Start the state machine that runs the next rounds of this run now (one execution per
    scheduled event: its name is the event id, so a retried delivery starts none twice). False
    when it could not be started (no machine configured, or Step Functions refused)."""
    arn = os.environ.get("CONTINUATION_STATE_MACHINE", "")
    if not arn:
        logger.warning("work left for the next run: no state machine to continue it now")
        return False
    name = re.sub(r"[^A-Za-z0-9_-]", "-", f"{automation}-{getattr(trigger, 'id', 'run')}")[:80]
    payload = {
        "automation": automation,
        "account": getattr(trigger, "account", ""),
        "region": getattr(trigger, "region", ""),
        "round": 1,
    }
    try:
        aws.client("stepfunctions").start_execution(stateMachineArn=arn, name=name, input=json.dumps(payload))
    except Exception as err:  # noqa: BLE001 - any failure: the next scheduled run does the rest
        if aws.error_code(err) == "ExecutionAlreadyExists":  # a retried delivery: it runs already
            return True
        logger.error(
            "could not start the next rounds; the rest waits for the next scheduled run",
            extra={"code": aws.error_code(err), "state_machine": arn},
        )
        return False
    logger.info("more work than one run: the next rounds start now", extra={"execution": name})
    return True


def _require_scheduled_time(trigger: Any, schedule: Schedule | None, max_age: timedelta) -> None:
    """StaleEvent if ``trigger`` is a scheduled run but the function's own cron(...) schedule
    named no time between a delivery's oldest age ago and now (by the clock): a scheduled event
    handed to the function by someone, not by its rule. A rate(...) schedule names no times, so
    it cannot be checked (an automation that must not run at any time requires a cron)."""
    if not isinstance(trigger, ScheduledRun) or schedule is None or not schedule.anchored:
        return
    if schedule.fired_within(clock(), max_age, MAX_EVENT_AHEAD) is None:
        raise StaleEvent(
            f"scheduled event at {clock().isoformat(timespec='seconds')} by the clock, but the schedule "
            f"{schedule.expression} named no time in the {int(max_age.total_seconds() // 60)} minutes "
            "before: not a delivery of this function's rule"
        )


def _lease(deadline: Deadline) -> float:
    """Until when this invocation holds what it takes: it cannot outlive its deadline."""
    return time.time() + deadline.remaining_at_start


def _finish_earlier(
    automation: Automation[C, T],
    config: C,
    common: CommonConfig,
    outbox: Outbox,
    deadline: Deadline,
    logger: Any,
    metrics: Any,
) -> tuple[Counts, int]:
    """Finish the outbox entries earlier runs left (their lease ran out): act again on an intent
    that was still ``acting``, then send the mail. Returns the counts and how many mails SNS
    refused again.

    While an earlier run's work cannot be finished, no new work starts (it could act on the
    same resources twice): this raises. After MAX_ATTEMPTS the entry is given up with a mail,
    so that one permanently failing entry cannot stop the automation for good."""
    lease = _lease(deadline)
    total = Counts()
    held = 0
    blocked = 0
    for entry in outbox.unfinished():
        if not outbox.take(entry, lease):
            continue
        if entry.status == "acting":
            logger.warning(
                "finishing the work of a run that did not complete",
                extra={"entry": entry.sk, "attempt": entry.attempts},
            )
            resumed = Context(automation.name, config, common, clock(), deadline, resumed=True)
            try:
                result = automation.act(resumed, entry.intent)
                rest = _rest(automation, common, entry.intent, result) if entry.slot else None
                outbox.acted(entry, result, automation.report(resumed, entry.intent, result), rest)
            except Exception as err:  # logged, counted, retried, then given up with a mail
                total += Counts(failed=1)
                if entry.attempts >= MAX_ATTEMPTS:
                    logger.exception("giving up an earlier run's work", extra={"entry": entry.sk})
                    # Recorded before the mail is sent: if SNS refuses it, the next run only
                    # sends it (the entry is "acted"); it never tries the given-up work again.
                    given_up = {"given_up": f"{type(err).__name__}: {err}"}
                    outbox.acted(entry, given_up, _given_up(automation.name, common, entry, err))
                else:
                    logger.exception("could not finish an earlier run's work", extra={"entry": entry.sk})
                    outbox.release(entry)
                    blocked += 1
                    continue
            else:
                total += automation.counts(entry.intent, result)
        if not _send(outbox, entry, common, automation.name, logger):
            held += 1
    if blocked:
        raise OutboxError(
            f"{blocked} earlier run(s) could not be finished; no new work starts until they are "
            f"(or are given up after {MAX_ATTEMPTS} attempts, with a mail)"
        )
    return total, held


def _raise_if_held(held: int) -> None:
    if held:
        raise OutboxError(
            f"{held} mail(s) not accepted by SNS or SES; they stay in the outbox and are sent by the "
            "retry or the next run"
        )


@contextmanager
def _released_on_error(outbox: Outbox, entry: Entry) -> Iterator[None]:
    """If acting fails, give the entry's lease back so the retry can finish it at once. (A run
    that is killed cannot do this; its lease runs out at its deadline, when it is surely dead.)"""
    try:
        yield
    except BaseException:
        outbox.release(entry)
        raise


def _given_up(automation: str, common: CommonConfig, entry: Entry, err: BaseException) -> Mail:
    """The operators' mail about work that could not be finished: what it was, and the error."""
    intent = json.dumps(entry.intent, indent=1, default=str)
    if len(intent) > GIVEN_UP_INTENT_CHARS:
        intent = intent[:GIVEN_UP_INTENT_CHARS] + "\n... (cut; the whole intent is in the function's log)"
    body = "\n".join(
        [
            f"A run of {automation} recorded what it was about to do, then could not finish it: "
            f"{entry.attempts} invocations tried and failed. It is given up now; check the "
            "resources below and finish or undo the work by hand.",
            "",
            f"Error of the last attempt: {aws.error_code(err)}: {str(err)[:500]}",
            f"Outbox entry: {entry.sk}",
            "",
            "What the run was about to do (its recorded intent):",
            intent,
        ]
    )
    subject = make_subject(common.stack_name, f"{automation}: could not finish a run, given up")
    return Mail(subject, body, "critical")


def _send(outbox: Outbox, entry: Entry, common: CommonConfig, automation: str, logger: Any) -> bool:
    """Send the entry's mails - each owner's digest through SES (when the stack has a sender),
    then the operators' through SNS - and only then mark the entry done. A mail is marked sent
    (``Entry.sent_to``) only once its service accepted it; when one was refused, the entry is
    kept with what went out (lease released) and the next attempt sends only the rest. False
    then."""
    mail = entry.mail
    if mail is None:
        outbox.done(entry)
        return True
    already, newly, refused = set(entry.sent_to), [], 0
    if mail.routed and not common.mail_from:
        logger.warning("owner digests not sent: the stack has no sender (MailSenderAddress)")
    for routed in mail.routed if common.mail_from else ():
        if routed.to in already:
            continue
        try:
            message_id = send_email(common.mail_from, routed.to, routed.subject, routed.body, automation)
        except Exception as err:  # noqa: BLE001 - any failure keeps the mail for the next attempt
            refused += 1
            logger.error(
                "owner digest not sent; kept in the outbox for the retry or the next run",
                extra={"to": routed.to, "code": aws.error_code(err), "entry": entry.sk},
            )
            continue
        newly.append(routed.to)
        logger.info("owner digest sent", extra={"to": routed.to, "message_id": message_id})
    if TOPIC not in already:
        try:
            message_id = publish(common.topic_arn, mail.subject, mail.body, automation, mail.severity)  # type: ignore[arg-type]
        except Exception as err:  # noqa: BLE001 - any failure keeps the mail for the next attempt
            refused += 1
            logger.error(
                "mail not sent; kept in the outbox for the retry or the next run",
                extra={"subject": mail.subject, "code": aws.error_code(err), "entry": entry.sk},
            )
        else:
            newly.append(TOPIC)
            logger.info("mail sent", extra={"subject": mail.subject, "message_id": message_id})
    if refused:
        if newly:
            outbox.sent(entry, newly)
        outbox.release(entry)
        return False
    outbox.done(entry)
    return True


def _run_id(context: Any) -> str:
    request = getattr(context, "aws_request_id", None)
    return str(request) if isinstance(request, str) and request else "local"


def _emit(
    metrics: Any, counts: Counts, automation: Automation[Any, Any] | None = None, *, completed: bool = False
) -> None:
    """The run's metrics: the four and ``automation.metrics``, each when not zero or named in
    ``automation.always_sent``; ``completed`` (the run got to its end) sends Checked, zero too."""
    sent = automation.metrics if automation is not None else frozenset()
    always = automation.always_sent if automation is not None else frozenset()
    for name, value in counts.as_metrics().items():
        if name not in STANDARD_METRICS and name not in sent:
            continue  # read by no alarm: in the run's result and log line only
        if value == 0 and name not in always and not (completed and name == COMPLETED_METRIC):
            continue  # billed per hour sent; the alarms on counts read no data as not breaching
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
