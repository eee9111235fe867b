"""instance_recovery: the decisions.

Pure functions of plain data - no AWS, no clock - so the tests call them directly.

Which instances get a recovery alarm (a CloudWatch alarm on ``StatusCheckFailed_System`` whose
action is EC2's recover action, and the stack's topic), which alarms go, and what the mail says:

- **Wanted**: ``AutoRecover=true`` (also ``yes``, ``on``), or every instance with
  ``RecoveryForAll``; ``AutoRecover=false`` (``no``, ``never``, ``off``) always keeps one out.
- **Eligible** (what EC2's recover action supports): an EBS root, not Spot, not an Auto
  Scaling member (its group replaces an impaired instance instead), not on a Dedicated Host
  (Dedicated Host auto recovery covers those), and an instance type whose
  ``AutoRecoverySupported`` is true (DescribeInstanceTypes).
- **This stack's alarms** are named ``<stack>-recover-<instance id>``: nothing else is ever
  changed or deleted. An alarm goes when its instance is terminated or gone, opted out, or no
  longer eligible; one whose definition drifted (other period, datapoints, actions) is put
  again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from autopilot.tags import opted_out

OPT_IN_KEY: Final = "AutoRecover"
OPT_IN_WORDS: Final = frozenset({"true", "yes", "on"})
ASG_TAG: Final = "aws:autoscaling:groupName"
ALARM_INFIX: Final = "-recover-"
METRIC: Final = "StatusCheckFailed_System"
NAMESPACE: Final = "AWS/EC2"
GONE_STATES: Final = frozenset({"shutting-down", "terminated"})
UNKNOWN_OWNER: Final = "unknown"

# AWS Health event type codes of EC2's recoveries: (which recovery, succeeded).
HEALTH_CODES: Final[Mapping[str, tuple[str, bool]]] = {
    "AWS_EC2_SIMPLIFIED_AUTO_RECOVERY_SUCCESS": ("simplified automatic recovery", True),
    "AWS_EC2_SIMPLIFIED_AUTO_RECOVERY_FAILURE": ("simplified automatic recovery", False),
    "AWS_EC2_INSTANCE_AUTO_RECOVERY_SUCCESS": ("the recovery alarm", True),
    "AWS_EC2_INSTANCE_AUTO_RECOVERY_FAILURE": ("the recovery alarm", False),
}


@dataclass(frozen=True)
class Policy:
    for_all: bool = False  # RecoveryForAll: every eligible instance, not only AutoRecover=true
    period: int = 60  # seconds per datapoint of the alarm
    evaluation_periods: int = 2  # failed datapoints in a row before EC2 recovers the instance


@dataclass(frozen=True)
class Instance:
    """What the decision needs to know about one instance (DescribeInstances)."""

    id: str
    state: str = "running"
    instance_type: str = "t3.micro"
    tags: Mapping[str, str] = field(default_factory=dict)
    root_device: str = "ebs"
    tenancy: str = "default"
    spot: bool = False
    simplified_recovery: str = "default"  # MaintenanceOptions.AutoRecovery: default or disabled

    def owner(self, owner_tag_key: str) -> str:
        return self.tags.get(owner_tag_key, "").strip() or UNKNOWN_OWNER

    @property
    def name(self) -> str:
        return self.tags.get("Name", "").strip()


@dataclass(frozen=True)
class AlarmSpec:
    """One recovery alarm as it should be (PutMetricAlarm's parameters that matter)."""

    name: str
    instance_id: str
    period: int
    evaluation_periods: int
    actions: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "instance_id": self.instance_id,
            "period": self.period,
            "evaluation_periods": self.evaluation_periods,
            "actions": list(self.actions),
        }


@dataclass(frozen=True)
class Alarm:
    """One alarm of this stack as CloudWatch has it (DescribeAlarms)."""

    name: str
    instance_id: str
    period: int = 0
    evaluation_periods: int = 0
    actions: tuple[str, ...] = ()
    metric: str = METRIC
    namespace: str = NAMESPACE
    statistic: str = "Maximum"
    threshold: float = 1.0
    comparison: str = "GreaterThanOrEqualToThreshold"
    dimensions: tuple[tuple[str, str], ...] = ()
    state: str = "INSUFFICIENT_DATA"

    def matches(self, spec: AlarmSpec) -> bool:
        return (
            self.metric == METRIC
            and self.namespace == NAMESPACE
            and self.statistic == "Maximum"
            and self.threshold == 1.0
            and self.comparison == "GreaterThanOrEqualToThreshold"
            and self.dimensions == (("InstanceId", spec.instance_id),)
            and self.period == spec.period
            and self.evaluation_periods == spec.evaluation_periods
            and sorted(self.actions) == sorted(spec.actions)
        )


def alarm_prefix(stack: str) -> str:
    return f"{stack}{ALARM_INFIX}"


def alarm_name(stack: str, instance_id: str) -> str:
    return f"{alarm_prefix(stack)}{instance_id}"


def instance_of(name: str, stack: str) -> str | None:
    """The instance of one of this stack's alarm names, or None for any other name."""
    match = re.fullmatch(re.escape(alarm_prefix(stack)) + r"(i-[0-9a-f]{8,17})", name)
    return match.group(1) if match else None


def recover_action(partition: str, region: str) -> str:
    return f"arn:{partition}:automate:{region}:ec2:recover"


def opted_in(instance: Instance) -> bool:
    """Tagged AutoRecover=true (yes, on): someone asked for this instance's recovery."""
    return instance.tags.get(OPT_IN_KEY, "").strip().lower() in OPT_IN_WORDS


def wanted(instance: Instance, policy: Policy) -> bool:
    """Opted in (or everyone, with RecoveryForAll), and not opted out."""
    if opted_out(instance.tags, OPT_IN_KEY):
        return False
    return opted_in(instance) or policy.for_all


def ineligible(instance: Instance, supported: bool | None) -> str | None:
    """Why EC2's recover action cannot serve this instance, or None if it can."""
    if instance.root_device != "ebs":
        return "instance-store root volume: EC2 can recover only EBS-backed instances"
    if instance.spot:
        return "Spot instance: EC2 does not recover Spot instances"
    if ASG_TAG in instance.tags:
        return (
            f"in the Auto Scaling group {instance.tags[ASG_TAG]}, which replaces an impaired instance instead"
        )
    if instance.tenancy == "host":
        return "on a Dedicated Host: Dedicated Host auto recovery covers it"
    if supported is None:
        return f"instance type {instance.instance_type} unknown to DescribeInstanceTypes"
    if not supported:
        return f"instance type {instance.instance_type} does not support the recover action"
    return None


@dataclass(frozen=True)
class Plan:
    """What to change: alarms to put (create or update) and to delete, and what to say."""

    create: list[AlarmSpec] = field(default_factory=list)
    update: list[AlarmSpec] = field(default_factory=list)
    delete: list[tuple[str, str, str]] = field(default_factory=list)  # (alarm, instance, why)
    # tagged AutoRecover=true but not eligible: why (mailed; with RecoveryForAll, an instance
    # nobody tagged that EC2 cannot recover is only counted in ``unrecoverable``)
    ineligible: dict[str, str] = field(default_factory=dict)
    unrecoverable: int = 0  # wanted but not eligible, tagged or not
    watched: int = 0  # wanted and eligible instances (alarm there or put now)
    checked: int = 0

    @property
    def changes(self) -> bool:
        return bool(self.create or self.update or self.delete)


def plan_alarms(
    instances: Iterable[Instance],
    supported: Mapping[str, bool],
    alarms: Iterable[Alarm],
    policy: Policy,
    actions: Sequence[str],
    stack: str,
    scope: frozenset[str] | None = None,
) -> Plan:
    """The changes that make this stack's alarms match the instances.

    ``instances``: what DescribeInstances returned (gone ones are simply missing); ``alarms``:
    this stack's alarms; ``scope``: the instance ids to look at (a state change: one), or None
    for all of them (the schedule, which also removes the alarms of instances that are gone)."""
    found = {i.id: i for i in instances if scope is None or i.id in scope}
    mine = {a.instance_id: a for a in alarms if instance_of(a.name, stack) == a.instance_id}
    if scope is not None:
        mine = {k: v for k, v in mine.items() if k in scope}
    create: list[AlarmSpec] = []
    update: list[AlarmSpec] = []
    delete: list[tuple[str, str, str]] = []
    blocked: dict[str, str] = {}
    unrecoverable = 0
    watched = 0
    for instance_id in sorted(found):
        instance = found[instance_id]
        alarm = mine.get(instance_id)
        if instance.state in GONE_STATES:
            if alarm:
                delete.append((alarm.name, instance_id, f"the instance is {instance.state}"))
            continue
        if not wanted(instance, policy):
            if alarm:
                delete.append((alarm.name, instance_id, "no longer opted in (AutoRecover)"))
            continue
        why = ineligible(instance, supported.get(instance.instance_type))
        if why:
            unrecoverable += 1
            if opted_in(instance):
                blocked[instance_id] = why
            if alarm:
                delete.append((alarm.name, instance_id, why))
            continue
        watched += 1
        spec = AlarmSpec(
            alarm_name(stack, instance_id),
            instance_id,
            policy.period,
            policy.evaluation_periods,
            tuple(actions),
        )
        if alarm is None:
            create.append(spec)
        elif not alarm.matches(spec):
            update.append(spec)
    for instance_id in sorted(set(mine) - set(found)):
        delete.append((mine[instance_id].name, instance_id, "the instance no longer exists"))
    return Plan(create, update, delete, blocked, unrecoverable, watched, len(found))


@dataclass(frozen=True)
class Recovery:
    """One AWS Health event about EC2 recovering instances."""

    code: str
    kind: str  # simplified automatic recovery / the recovery alarm
    succeeded: bool
    instance_ids: tuple[str, ...]
    description: str = ""


def recovery(code: str, instance_ids: Sequence[str], description: str = "") -> Recovery | None:
    """The recovery an AWS Health event reports, or None for any other event type."""
    if code not in HEALTH_CODES:
        return None
    kind, succeeded = HEALTH_CODES[code]
    return Recovery(code, kind, succeeded, tuple(dict.fromkeys(instance_ids)), description)


def newly_ineligible(blocked: Mapping[str, str], memory: Mapping[str, Any]) -> dict[str, str]:
    """The wanted-but-ineligible instances not mailed before with this reason (memory
    ``ineligible:<id>`` -> the reason mailed)."""
    return {i: why for i, why in blocked.items() if memory.get(f"ineligible:{i}") != why}
