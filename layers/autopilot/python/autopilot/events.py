"""Parsing of the events that trigger the automations.

Handlers never dig through raw dicts: they parse the event into a small typed object here,
and a malformed or unexpected event raises :class:`BadEvent` with a reason that the handler
logs once before returning without changing anything (a returned event is not retried).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

T = TypeVar("T")


class BadEvent(ValueError):
    """The event is not one this function can act on; nothing was changed."""


class StaleEvent(BadEvent):
    """The event's time is far from the clock's: too old to be a delivery EventBridge and
    Lambda would still make (or replayed), or ahead of the clock (forged). Nothing changed."""


class EmptyEvent(BadEvent):
    """A well-formed event that names nothing to act on - an EC2 Fleet whose every launch
    failed, say: logged and counted as EmptyEvents, not as malformed (nothing was missed)."""


# The oldest event a real delivery can be: EventBridge retries a target for up to an hour
# (the rules' RetryPolicy) and Lambda keeps an asynchronous event for up to an hour
# (EventInvokeConfig MaximumEventAgeInSeconds), plus a margin for the run itself.
MAX_EVENT_AGE = timedelta(hours=2, minutes=15)
# How far ahead of this function's clock an event's time may be (clock skew between services).
MAX_EVENT_AHEAD = timedelta(minutes=5)


def require(mapping: Any, key: str, kind: type | tuple[type, ...], where: str = "event") -> Any:
    """``mapping[key]``, checked to exist and be of ``kind``, or BadEvent saying what is wrong."""
    if not isinstance(mapping, Mapping):
        raise BadEvent(f"{where} is {type(mapping).__name__}, expected an object")
    if key not in mapping:
        raise BadEvent(f"{where} has no {key!r}")
    value = mapping[key]
    if not isinstance(value, kind):
        raise BadEvent(f"{where}.{key} is {type(value).__name__}, expected {_kind_name(kind)}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    if isinstance(kind, tuple):
        return " or ".join(k.__name__ for k in kind)
    return kind.__name__


def parse_time(value: str, where: str = "event.time") -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        raise BadEvent(f"{where}={value!r} is not an ISO 8601 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class ScheduledRun:
    """An EventBridge scheduled event: the run's id and its scheduled time."""

    id: str
    time: datetime
    account: str
    region: str


SCHEDULE_SOURCES = frozenset({"aws.events", "aws.scheduler"})


def parse_scheduled(event: Any) -> ScheduledRun:
    source = require(event, "source", str)
    detail_type = require(event, "detail-type", str)
    if source not in SCHEDULE_SOURCES or detail_type != "Scheduled Event":
        raise BadEvent(f"expected a scheduled event, got source={source!r} detail-type={detail_type!r}")
    return ScheduledRun(
        id=require(event, "id", str),
        time=parse_time(require(event, "time", str)),
        account=require(event, "account", str),
        region=require(event, "region", str),
    )


# EC2's own notification when an instance changes state (not a CloudTrail record: EC2 sends it
# for every state change, whoever or whatever caused it - a launch, a stop, a termination by
# Auto Scaling or a host failure).
EC2_STATE_CHANGE = "EC2 Instance State-change Notification"
EC2_STATES = frozenset({"pending", "running", "stopping", "stopped", "shutting-down", "terminated"})
INSTANCE_ID = re.compile(r"i-[0-9a-f]{8,17}")  # an EC2 instance id


@dataclass(frozen=True)
class InstanceStateChange:
    """One instance's state change, as EC2 announced it. The state is what the event claims:
    whoever may invoke the function could forge it, so a plan reads the instance's state again
    from EC2 before it acts on it."""

    id: str
    time: datetime
    account: str
    region: str
    instance_id: str
    state: str


def parse_state_change(event: Any, states: Collection[str]) -> InstanceStateChange:
    """An "EC2 Instance State-change Notification" for one of ``states``, or BadEvent."""
    source = require(event, "source", str)
    detail_type = require(event, "detail-type", str)
    if source != "aws.ec2" or detail_type != EC2_STATE_CHANGE:
        raise BadEvent(
            f"expected an EC2 state-change notification, got {source[:100]!r} / {detail_type[:100]!r}"
        )
    detail = require(event, "detail", Mapping)
    instance_id = require(detail, "instance-id", str, "event.detail")
    state = require(detail, "state", str, "event.detail")
    if not INSTANCE_ID.fullmatch(instance_id):
        raise BadEvent(f"event.detail.instance-id={instance_id[:40]!r} is not an instance id")
    if state not in states:
        raise BadEvent(f"state {state[:40]!r} is not one this function handles ({', '.join(sorted(states))})")
    return InstanceStateChange(
        id=require(event, "id", str),
        time=parse_time(require(event, "time", str)),
        account=require(event, "account", str),
        region=require(event, "region", str),
        instance_id=instance_id,
        state=state,
    )


# A round of a large run, sent by the stack's state machine (template: <Name>Rounds): an
# EventBridge-shaped event of its own source, so that its id keys the round's own claim and its
# time (the state's entry time) is checked like any event's.
CONTINUATION_SOURCE = "ops-autopilot.continue"
CONTINUATION_TYPE = "Continue the run"
MAX_ROUNDS = 48


@dataclass(frozen=True)
class Continuation:
    """The next round of a run that left work it can do now (more than one invocation can do,
    or one outbox item can hold). It neither gathers nor decides: it takes the next intent the
    run queued in the outbox (autopilot.outbox, rounds). Forged, it can only make queued work
    happen sooner (or find nothing queued), never something else."""

    id: str
    time: datetime
    account: str
    region: str
    round: int


def is_continuation(event: Any) -> bool:
    return isinstance(event, Mapping) and event.get("source") == CONTINUATION_SOURCE


def parse_continuation(event: Any, automation: str) -> Continuation:
    detail_type = require(event, "detail-type", str)
    if event.get("source") != CONTINUATION_SOURCE or detail_type != CONTINUATION_TYPE:
        raise BadEvent(f"expected a continuation event, got detail-type={detail_type!r}")
    detail = require(event, "detail", Mapping)
    named = require(detail, "automation", str, "event.detail")
    if named != automation:
        raise BadEvent(f"continuation of {named[:40]!r}, this function is {automation}")
    number = require(detail, "round", int, "event.detail")
    if isinstance(number, bool) or not 1 <= number <= MAX_ROUNDS:
        raise BadEvent(f"event.detail.round={number!r}: a round is 1-{MAX_ROUNDS}")
    return Continuation(
        id=require(event, "id", str),
        time=parse_time(require(event, "time", str)),
        account=require(event, "account", str),
        region=require(event, "region", str),
        round=number,
    )


def require_own_account(event: Any, context: Any) -> None:
    """BadEvent if the event names an account other than the function's own (the account in
    the context's function ARN). EventBridge only delivers this account's events here; any
    other is misrouted or forged, and acting on it would act on the wrong account's ids."""
    arn = getattr(context, "invoked_function_arn", None)
    parts = arn.split(":") if isinstance(arn, str) else []
    own = parts[4] if len(parts) > 4 else ""
    account = event.get("account") if isinstance(event, Mapping) else None
    if own and isinstance(account, str) and account != own:
        raise BadEvent(f"event of account {account[:20]!r}; this function runs in account {own}")


def require_fresh(
    event: Any, now: datetime, max_age: timedelta = MAX_EVENT_AGE, max_ahead: timedelta = MAX_EVENT_AHEAD
) -> datetime:
    """The event's ``time`` (every EventBridge event has one), or StaleEvent if it lies more
    than ``max_age`` before ``now`` (the clock's) or more than ``max_ahead`` after it.

    Whoever may invoke a function could hand it any event; this bounds what a replayed or
    forged one can do to "now, give or take a delivery's retries". The time decides nothing
    else: "now" is always the clock's (PRODUCT.md safety rule 7)."""
    when = parse_time(require(event, "time", str))
    if when < now - max_age:
        raise StaleEvent(
            f"event time {when.isoformat()} is {_ago(now - when)} before the clock's {now.isoformat()} "
            f"(at most {_ago(max_age)} is accepted): replayed, or retried for too long"
        )
    if when > now + max_ahead:
        raise StaleEvent(
            f"event time {when.isoformat()} is {_ago(when - now)} ahead of the clock's {now.isoformat()} "
            f"(at most {_ago(max_ahead)} is accepted): not a real delivery"
        )
    return when


def _ago(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


def accept(
    event: Any,
    context: Any,
    parser: Callable[[Any], T],
    now: datetime | None = None,
    max_age: timedelta = MAX_EVENT_AGE,
) -> T:
    """The one way a handler reads its event: reject another account's event, then parse it
    with the automation's own parser, then (given the clock's ``now``) reject an event whose
    time is far from it. Raises BadEvent; nothing has been changed yet."""
    require_own_account(event, context)
    trigger = parser(event)
    if now is not None:
        require_fresh(event, now, max_age)
    return trigger


def describe(event: Any) -> dict[str, Any]:
    """A short, safe summary of an event for a log line (never the whole payload)."""
    if not isinstance(event, Mapping):
        return {"type": type(event).__name__}
    summary: dict[str, Any] = {"keys": sorted(str(k) for k in event)[:20]}
    for key in ("id", "source", "detail-type", "account", "region", "time"):
        if isinstance(event.get(key), str):
            summary[key] = event[key][:200]
    detail = event.get("detail")
    if isinstance(detail, Mapping):
        for key in ("eventName", "eventSource", "errorCode", "status", "command-id"):
            if isinstance(detail.get(key), str):
                summary[f"detail.{key}"] = detail[key][:200]
    return summary


def reject(err: BadEvent, event: Any, logger: Any, metrics: Any) -> dict[str, Any]:
    """The one way a handler turns down an event: one error log line naming the reason and
    a safe summary of the event, a MalformedEvents (or StaleEvents, or for an event with nothing
    to do an info line and EmptyEvents) metric, and a normal return (so the event is not
    retried). Nothing has been changed at this point."""
    if isinstance(err, StaleEvent):
        logger.error("ignored stale event", extra={"reason": str(err), "event": describe(event)})
        metrics.add_metric(name="StaleEvents", unit="Count", value=1)
    elif isinstance(err, EmptyEvent):
        logger.info("ignored event with nothing to do", extra={"reason": str(err), "event": describe(event)})
        metrics.add_metric(name="EmptyEvents", unit="Count", value=1)
    else:
        logger.error("ignored malformed event", extra={"reason": str(err), "event": describe(event)})
        metrics.add_metric(name="MalformedEvents", unit="Count", value=1)
    return {"status": "ignored", "reason": str(err)}
