"""Every AWS call of instance_recovery: gather the facts, apply the plan. No decisions here.

Per scheduled run, N instances of T types, A alarms of this stack, C changed: DescribeInstances
ceil(N / 1000), DescribeInstanceTypes ceil(T / 100), DescribeAlarms ceil(A / 100) (each API's
largest page), one PutMetricAlarm per alarm created or updated (it takes one alarm) and
DeleteAlarms ceil(deleted / 100). A state change: DescribeInstances 1, DescribeInstanceTypes 1,
DescribeAlarms 1 (its alarm, by name) and at most one put or delete.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from botocore.exceptions import ClientError

from autopilot import aws, tags
from instance_recovery.decide import METRIC, NAMESPACE, Alarm, AlarmSpec, Instance, alarm_prefix, instance_of

FILTER_VALUES_MAX: Final = 200  # values per DescribeInstances filter
TYPES_MAX: Final = 100  # instance types per DescribeInstanceTypes call
ALARMS_PAGE: Final = 100  # DescribeAlarms' MaxRecords maximum
DELETE_MAX: Final = 100  # alarm names per DeleteAlarms call
# The schedule looks at every instance that is not gone: its alarm stays while it is stopped.
KEPT_STATES: Final = ["pending", "running", "stopping", "stopped"]
# What CloudWatch does with the caller's rights on PutMetricAlarm with an EC2 action (its
# service-linked role, created the first time): no botocore call of the function names it.
IAM_FOR_EC2_ALARM_ACTIONS: Final = frozenset({"iam:CreateServiceLinkedRole"})


@dataclass(frozen=True)
class Failure:
    alarm: str
    instance_id: str
    action: str  # put or delete
    code: str

    def as_dict(self) -> dict[str, str]:
        return {
            "alarm": self.alarm,
            "instance_id": self.instance_id,
            "action": self.action,
            "code": self.code,
        }


def _instance(raw: dict[str, Any]) -> Instance:
    return Instance(
        id=str(raw["InstanceId"]),
        state=str(raw.get("State", {}).get("Name", "unknown")),
        instance_type=str(raw.get("InstanceType", "")),
        tags=tags.as_dict(raw.get("Tags")),
        root_device=str(raw.get("RootDeviceType", "ebs")),
        tenancy=str(raw.get("Placement", {}).get("Tenancy", "default")),
        spot=raw.get("InstanceLifecycle") == "spot",
        simplified_recovery=str((raw.get("MaintenanceOptions") or {}).get("AutoRecovery", "default")),
    )


def all_instances() -> list[Instance]:
    """Every instance of the region that is not shutting down or terminated (1000 a page)."""
    return [
        _instance(raw)
        for raw in aws.paginate(
            aws.client("ec2"),
            "describe_instances",
            "Reservations[].Instances[]",
            Filters=[{"Name": "instance-state-name", "Values": KEPT_STATES}],
            PaginationConfig={"PageSize": 1000},
        )
    ]


def instances(ids: Sequence[str]) -> list[Instance]:
    """The instances among ``ids``, in whatever state EC2 reports now (terminated ones while
    EC2 still lists them). An id this account does not have is simply not found."""
    found: list[Instance] = []
    for batch in aws.chunked(ids, FILTER_VALUES_MAX):
        found += map(
            _instance,
            aws.paginate(
                aws.client("ec2"),
                "describe_instances",
                "Reservations[].Instances[]",
                Filters=[{"Name": "instance-id", "Values": batch}],
            ),
        )
    return found


def recovery_support(instance_types: Iterable[str]) -> dict[str, bool]:
    """``AutoRecoverySupported`` per instance type; a type EC2 does not know is left out."""
    supported: dict[str, bool] = {}
    for batch in aws.chunked(sorted(set(t for t in instance_types if t)), TYPES_MAX):
        supported.update(_types(batch))
    return supported


def _types(batch: list[str]) -> dict[str, bool]:
    try:
        found = aws.paginate(
            aws.client("ec2"), "describe_instance_types", "InstanceTypes[]", InstanceTypes=batch
        )
        return {str(t["InstanceType"]): bool(t.get("AutoRecoverySupported")) for t in found}
    except ClientError as err:
        if aws.error_code(err) != "InvalidInstanceType":
            raise
        if len(batch) == 1:
            return {}  # a type EC2 does not know: left out, and the mail says so
        return {k: v for one in batch for k, v in _types([one]).items()}


def alarms(stack: str, names: Sequence[str] | None = None) -> list[Alarm]:
    """This stack's recovery alarms (named ``<stack>-recover-<instance id>``, 100 a page), or
    only those of ``names`` (at most 100: one call, whatever the number of alarms)."""
    found: list[Alarm] = []
    selection: dict[str, Any] = (
        {"AlarmNames": list(names)} if names is not None else {"AlarmNamePrefix": alarm_prefix(stack)}
    )
    for raw in aws.paginate(
        aws.client("cloudwatch"),
        "describe_alarms",
        "MetricAlarms[]",
        AlarmTypes=["MetricAlarm"],
        PaginationConfig={"PageSize": ALARMS_PAGE},
        **selection,
    ):
        name = str(raw["AlarmName"])
        instance_id = instance_of(name, stack)
        if instance_id is None:
            continue  # a name that only starts like ours: not this stack's
        found.append(
            Alarm(
                name=name,
                instance_id=instance_id,
                period=int(raw.get("Period", 0)),
                evaluation_periods=int(raw.get("EvaluationPeriods", 0)),
                actions=tuple(str(a) for a in raw.get("AlarmActions", [])),
                metric=str(raw.get("MetricName", "")),
                namespace=str(raw.get("Namespace", "")),
                statistic=str(raw.get("Statistic", "")),
                threshold=float(raw.get("Threshold", 0.0)),
                comparison=str(raw.get("ComparisonOperator", "")),
                dimensions=tuple((str(d["Name"]), str(d["Value"])) for d in raw.get("Dimensions", [])),
                state=str(raw.get("StateValue", "")),
            )
        )
    return found


def put_alarm(spec: AlarmSpec, description: str) -> Failure | None:
    """Create the alarm, or overwrite it with the spec (PutMetricAlarm is idempotent)."""
    try:
        aws.client("cloudwatch").put_metric_alarm(
            AlarmName=spec.name,
            AlarmDescription=description,
            Namespace=NAMESPACE,
            MetricName=METRIC,
            Dimensions=[{"Name": "InstanceId", "Value": spec.instance_id}],
            Statistic="Maximum",
            Period=spec.period,
            EvaluationPeriods=spec.evaluation_periods,
            Threshold=1.0,
            ComparisonOperator="GreaterThanOrEqualToThreshold",
            TreatMissingData="missing",
            AlarmActions=list(spec.actions),
        )
    except ClientError as err:
        return Failure(spec.name, spec.instance_id, "put", aws.error_code(err))
    return None


def delete_alarms(names: Sequence[tuple[str, str]]) -> list[Failure]:
    """Delete ``(alarm, instance)`` alarms, 100 a call; a refused batch is tried one alarm at a
    time. An alarm that is gone already counts as deleted (a resumed run deletes again)."""
    failures: list[Failure] = []
    for batch in aws.chunked(list(names), DELETE_MAX):
        failures += _delete(batch)
    return failures


def _delete(batch: list[tuple[str, str]]) -> list[Failure]:
    try:
        aws.client("cloudwatch").delete_alarms(AlarmNames=[name for name, _ in batch])
    except ClientError as err:
        code = aws.error_code(err)
        if len(batch) > 1:
            return [f for one in batch for f in _delete([one])]
        if code == "ResourceNotFound":
            return []
        return [Failure(batch[0][0], batch[0][1], "delete", code)]
    return []
