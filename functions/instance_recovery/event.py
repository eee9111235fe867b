"""instance_recovery: the triggers.

- EC2's "EC2 Instance State-change Notification" for the states in :data:`STATES` (EC2 sends it
  itself, whatever changed the instance), parsed into an
  :class:`autopilot.events.InstanceStateChange` naming the instance that changed - whose state
  the plan reads again from EC2, never from the event (anyone who may invoke the function could
  forge one);
- its daily schedule, ``InstanceRecoverySchedule``, which looks at every instance and so
  converges whatever an event missed (EventBridge delivers at least once, not always);
- AWS Health's "AWS Health Event" of EC2 recovering instances (:data:`HEALTH_CODES`), parsed
  into a :class:`HealthEvent`: only mailed, never acted on.

Any other event is :class:`autopilot.events.BadEvent`: the runner logs it once and changes
nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from autopilot.events import (
    EC2_STATE_CHANGE,
    INSTANCE_ID,
    BadEvent,
    InstanceStateChange,
    ScheduledRun,
    parse_scheduled,
    parse_state_change,
    parse_time,
    require,
)
from instance_recovery.decide import HEALTH_CODES

# The states this automation handles: the template rule's detail.state list (a test keeps the
# two equal).
STATES: Final = frozenset({"running", "terminated"})
HEALTH_EVENT: Final = "AWS Health Event"
MAX_ENTITIES: Final = 1000


@dataclass(frozen=True)
class HealthEvent:
    """AWS Health's word that EC2 recovered (or failed to recover) instances."""

    id: str
    time: datetime
    account: str
    region: str
    event_arn: str
    code: str
    instance_ids: tuple[str, ...]
    description: str


Trigger = ScheduledRun | InstanceStateChange | HealthEvent


def parse(event: Any) -> Trigger:
    """A state change of one of :data:`STATES`, a recovery's Health event, the scheduled event,
    or BadEvent."""
    if isinstance(event, Mapping) and event.get("detail-type") == EC2_STATE_CHANGE:
        return parse_state_change(event, STATES)
    if isinstance(event, Mapping) and event.get("source") == "aws.health":
        return parse_health(event)
    return parse_scheduled(event)


def parse_health(event: Any) -> HealthEvent:
    detail_type = require(event, "detail-type", str)
    if detail_type != HEALTH_EVENT:
        raise BadEvent(f"expected an AWS Health Event, got {detail_type[:100]!r}")
    detail = require(event, "detail", Mapping)
    service = require(detail, "service", str, "event.detail")
    code = require(detail, "eventTypeCode", str, "event.detail")
    if service != "EC2" or code not in HEALTH_CODES:
        raise BadEvent(f"not a recovery event this function handles: {service[:40]} {code[:100]}")
    named: list[Any] = list(require(event, "resources", list))
    entities = detail.get("affectedEntities", [])
    if isinstance(entities, list):
        named += [e.get("entityValue") for e in entities if isinstance(e, Mapping)]
    ids = [_instance_id(n) for n in named]
    found = tuple(dict.fromkeys(i for i in ids if i))
    if not found:
        raise BadEvent(f"{code} event names no instance (resources, detail.affectedEntities)")
    if len(found) > MAX_ENTITIES:
        raise BadEvent(f"{code} event names {len(found)} instances")
    return HealthEvent(
        id=require(event, "id", str),
        time=parse_time(require(event, "time", str)),
        account=require(event, "account", str),
        region=require(event, "region", str),
        event_arn=str(detail.get("eventArn", ""))[:500],
        code=code,
        instance_ids=found,
        description=_description(detail.get("eventDescription")),
    )


def _instance_id(value: Any) -> str | None:
    """``i-...`` itself, or the instance of an instance ARN; None for anything else."""
    if not isinstance(value, str):
        return None
    tail = value.rsplit("/", 1)[-1] if value.startswith("arn:") else value
    return tail if INSTANCE_ID.fullmatch(tail) else None


def _description(value: Any) -> str:
    """Health's English description, shortened for a mail."""
    if isinstance(value, list):
        for entry in value:
            if isinstance(entry, Mapping) and isinstance(entry.get("latestDescription"), str):
                return str(entry["latestDescription"]).strip()[:600]
    return ""
