"""Which running instances to stop, and why: pure functions over plain data, no AWS.

The run decides in three steps, each a function of data only:

1. :func:`assess` sorts every instance into *excluded* (a safety rule says never stop it),
   *stop* (its ``StopAfter`` lifetime is over), *keep* (too young to judge) or *needs metrics*.
2. :func:`judge_idle` applies the idle rule to the metric series of an instance that needs
   metrics: idle in at least N of the last M periods, where a period is idle when its peak CPU
   is below the threshold and its network in+out is below the threshold. Fewer than M periods
   with data means "not enough data": never idle.
3. :func:`select` picks at most ``max_stops`` instances from the stop candidates, lifetime stops
   first, skipping any that are stop-protected.

:func:`decide` chains the three for callers (and property tests) that have all data at hand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from idle_stopper.duration import BadDuration, format_duration, parse_stop_after

AUTOSTOP_TAG = "AutoStop"
STOP_AFTER_TAG = "StopAfter"
OPT_OUT_VALUES = frozenset({"false", "never"})
MB = 1_000_000  # network thresholds are in MB = 10^6 bytes, as CloudWatch's Bytes unit counts them

# Tags that mean "another system manages this instance's lifecycle": stopping it would fight
# that system (an ASG replaces a stopped member; a cluster loses a node it scheduled pods on).
AUTO_SCALING_TAGS = ("aws:autoscaling:groupName",)
KUBERNETES_TAGS = (
    "eks:cluster-name",
    "eks:nodegroup-name",
    "aws:eks:cluster-name",
    "karpenter.sh/nodepool",
    "karpenter.sh/provisioner-name",
    "karpenter.sh/managed-by",
    "karpenter.k8s.aws/ec2nodeclass",
)
KUBERNETES_TAG_PREFIXES = ("kubernetes.io/cluster/", "k8s.io/cluster-autoscaler/")
OTHER_MANAGED_TAGS = (
    "aws:ec2:fleet-id",
    "aws:ec2spot:fleet-request-id",
    "aws:elasticmapreduce:job-flow-id",
    "elasticbeanstalk:environment-name",
    "aws:batch:compute-environment",
)


class Outcome(StrEnum):
    """Where one instance ended up. Values are stable: they name metrics and log fields."""

    STOP_IDLE = "StopIdle"
    STOP_LIFETIME = "StopLifetime"
    BUSY = "Busy"
    TOO_LITTLE_DATA = "TooLittleData"
    TOO_YOUNG = "TooYoung"
    NOT_RUNNING = "NotRunning"
    AUTO_SCALING = "AutoScaling"
    KUBERNETES = "Kubernetes"
    MANAGED = "Managed"
    SPOT = "Spot"
    INSTANCE_STORE = "InstanceStore"
    OPTED_OUT = "OptedOut"
    STOP_PROTECTED = "StopProtected"
    OVER_CAP = "OverCap"
    NEEDS_METRICS = "NeedsMetrics"


# Outcomes that a safety rule (PRODUCT.md rule 2) forces: never in the stop set.
EXCLUDED = frozenset(
    {
        Outcome.NOT_RUNNING,
        Outcome.AUTO_SCALING,
        Outcome.KUBERNETES,
        Outcome.MANAGED,
        Outcome.SPOT,
        Outcome.INSTANCE_STORE,
        Outcome.OPTED_OUT,
        Outcome.STOP_PROTECTED,
        Outcome.TOO_YOUNG,
        Outcome.TOO_LITTLE_DATA,
    }
)
STOPS = frozenset({Outcome.STOP_IDLE, Outcome.STOP_LIFETIME})


@dataclass(frozen=True)
class Instance:
    """The facts about one instance that the decision needs (from DescribeInstances)."""

    instance_id: str
    launch_time: datetime
    state: str = "running"
    lifecycle: str | None = None  # InstanceLifecycle: None = on-demand, "spot", "scheduled", "capacity-block"
    root_device_type: str | None = "ebs"
    instance_type: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.tags.get("Name", "")

    def owner(self, key: str) -> str:
        return self.tags.get(key, "")


@dataclass(frozen=True)
class Period:
    """One metric period of one instance: peak CPU % and network bytes (None = no datapoint)."""

    start: datetime
    cpu_max: float | None
    network_in: float | None
    network_out: float | None

    @property
    def has_data(self) -> bool:
        return self.cpu_max is not None and self.network_in is not None and self.network_out is not None

    @property
    def network_mb(self) -> float:
        return ((self.network_in or 0.0) + (self.network_out or 0.0)) / MB


@dataclass(frozen=True)
class Policy:
    """The idle rule and the run's limits (from the deploy parameters)."""

    lookback_periods: int = 24  # M
    periods_required: int = 23  # N
    cpu_percent: float = 10.0
    network_mb: float = 5.0
    max_stops: int = 10
    period: timedelta = timedelta(hours=1)
    settle: timedelta = timedelta(minutes=10)  # CloudWatch basic monitoring lands a few minutes late

    def __post_init__(self) -> None:
        if self.lookback_periods < 1:
            raise ValueError("lookback_periods must be at least 1")
        if not 1 <= self.periods_required <= self.lookback_periods:
            raise ValueError("periods_required must be between 1 and lookback_periods")
        if self.max_stops < 0:
            raise ValueError("max_stops must not be negative")
        if self.period <= timedelta(0) or self.period.total_seconds() % 60:
            raise ValueError("period must be a positive whole number of minutes")

    def window(self, now: datetime) -> tuple[datetime, datetime]:
        """[start, end) of the last M complete periods before ``now`` (aligned to the period)."""
        seconds = int(self.period.total_seconds())
        latest = (now.astimezone(UTC) - self.settle).timestamp()
        end = datetime.fromtimestamp(latest - latest % seconds, UTC)
        return end - self.lookback_periods * self.period, end

    def period_starts(self, now: datetime) -> list[datetime]:
        start, _ = self.window(now)
        return [start + i * self.period for i in range(self.lookback_periods)]

    def describe(self) -> str:
        hours = self.period.total_seconds() / 3600
        unit = "hour" if hours == 1 else f"{format_duration(self.period)} period"
        return (
            f"idle in at least {self.periods_required} of the last {self.lookback_periods} {unit}s "
            f"(peak CPU below {self.cpu_percent:g}% and network in+out "
            f"below {self.network_mb:g} MB per {unit})"
        )


@dataclass(frozen=True)
class IdleVerdict:
    """The numbers behind an idle decision."""

    idle: bool
    idle_periods: int
    periods_with_data: int
    periods: int
    peak_cpu: float | None
    peak_network_mb: float | None

    def summary(self, policy: Policy) -> str:
        unit = "hour" if policy.period == timedelta(hours=1) else "period"
        if self.periods_with_data < self.periods:
            return f"only {self.periods_with_data} of {self.periods} {unit}s have metric data"
        return (
            f"quiet in {self.idle_periods} of the last {self.periods} {unit}s "
            f"(needs {policy.periods_required}); "
            f"peak CPU {self.peak_cpu:.1f}%, peak network {self.peak_network_mb:.2f} MB in one {unit}"
        )


@dataclass(frozen=True)
class Assessment:
    """One instance's outcome with the reason (for people) and numbers (for logs and tags)."""

    instance: Instance
    outcome: Outcome
    reason: str
    verdict: IdleVerdict | None = None
    stop_after_error: str | None = None  # a malformed StopAfter, reported whatever the outcome
    overdue: timedelta = timedelta(0)  # how long past StopAfter (lifetime stops)

    @property
    def stops(self) -> bool:
        return self.outcome in STOPS


def _has_tag(tags: Mapping[str, str], keys: Iterable[str], prefixes: Iterable[str] = ()) -> str | None:
    for key in keys:
        if key in tags:
            return key
    for key in tags:
        if key.startswith(tuple(prefixes)):
            return key
    return None


def _tag(tags: Mapping[str, str], key: str) -> str | None:
    """A tag's value, matching the key case-insensitively (people type autostop, AUTOSTOP)."""
    if key in tags:
        return tags[key]
    wanted = key.lower()
    for k, v in tags.items():
        if k.lower() == wanted:
            return v
    return None


def exclusion(instance: Instance) -> tuple[Outcome, str] | None:
    """The safety rule that forbids stopping this instance, or None. Order: most specific first."""
    if instance.state != "running":
        return Outcome.NOT_RUNNING, f"state is {instance.state}"
    if key := _has_tag(instance.tags, AUTO_SCALING_TAGS):
        return Outcome.AUTO_SCALING, f"Auto Scaling group member ({key}={instance.tags[key]})"
    if key := _has_tag(instance.tags, KUBERNETES_TAGS, KUBERNETES_TAG_PREFIXES):
        return Outcome.KUBERNETES, f"EKS/Karpenter/Kubernetes node (tag {key})"
    if key := _has_tag(instance.tags, OTHER_MANAGED_TAGS):
        return Outcome.MANAGED, f"managed by another service (tag {key})"
    if instance.lifecycle is not None:
        return Outcome.SPOT, f"not on-demand (InstanceLifecycle={instance.lifecycle})"
    if instance.root_device_type != "ebs":
        return Outcome.INSTANCE_STORE, f"root device is {instance.root_device_type or 'unknown'}, not EBS"
    opt_out = _tag(instance.tags, AUTOSTOP_TAG)
    if opt_out is not None and opt_out.strip().lower() in OPT_OUT_VALUES:
        return Outcome.OPTED_OUT, f"opted out ({AUTOSTOP_TAG}={opt_out})"
    return None


def assess(instance: Instance, policy: Policy, now: datetime) -> Assessment:
    """Everything that can be decided without metrics."""
    excluded = exclusion(instance)
    if excluded:
        return Assessment(instance, excluded[0], excluded[1])
    stop_after_error = None
    raw = _tag(instance.tags, STOP_AFTER_TAG)
    if raw is not None:
        try:
            lifetime = parse_stop_after(raw)
        except BadDuration as err:
            stop_after_error = str(err)
        else:
            running = now - instance.launch_time
            if running >= lifetime:
                reason = (
                    f"StopAfter={raw.strip()} reached: running {format_duration(running)} "
                    f"since {instance.launch_time.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
                )
                return Assessment(instance, Outcome.STOP_LIFETIME, reason, overdue=running - lifetime)
    window_start, _ = policy.window(now)
    if instance.launch_time > window_start:
        reason = (
            f"running only {format_duration(now - instance.launch_time)} since its last start; "
            f"the idle rule needs {policy.lookback_periods} full periods"
        )
        return Assessment(instance, Outcome.TOO_YOUNG, reason, stop_after_error=stop_after_error)
    return Assessment(instance, Outcome.NEEDS_METRICS, "needs metrics", stop_after_error=stop_after_error)


def judge_idle(periods: Iterable[Period], policy: Policy, now: datetime) -> IdleVerdict:
    """The idle rule over the window's periods. Periods outside the window are ignored; a missing
    period counts as one without data, so missing data can only make an instance *not* idle."""
    expected = set(policy.period_starts(now))
    by_start = {p.start.astimezone(UTC): p for p in periods if p.start.astimezone(UTC) in expected}
    with_data = [p for p in by_start.values() if p.has_data]
    idle = [
        p
        for p in with_data
        if p.cpu_max is not None and p.cpu_max < policy.cpu_percent and p.network_mb < policy.network_mb
    ]
    enough = len(with_data) >= policy.lookback_periods
    return IdleVerdict(
        idle=enough and len(idle) >= policy.periods_required,
        idle_periods=len(idle),
        periods_with_data=len(with_data),
        periods=policy.lookback_periods,
        peak_cpu=max((p.cpu_max for p in with_data if p.cpu_max is not None), default=None),
        peak_network_mb=max((p.network_mb for p in with_data), default=None),
    )


def conclude(assessment: Assessment, periods: Iterable[Period], policy: Policy, now: datetime) -> Assessment:
    """Turn a NEEDS_METRICS assessment into STOP_IDLE, BUSY or TOO_LITTLE_DATA."""
    if assessment.outcome is not Outcome.NEEDS_METRICS:
        return assessment
    verdict = judge_idle(periods, policy, now)
    if verdict.periods_with_data < verdict.periods:
        outcome = Outcome.TOO_LITTLE_DATA
    elif verdict.idle:
        outcome = Outcome.STOP_IDLE
    else:
        outcome = Outcome.BUSY
    return Assessment(
        assessment.instance,
        outcome,
        verdict.summary(policy),
        verdict=verdict,
        stop_after_error=assessment.stop_after_error,
    )


def priority(assessment: Assessment) -> tuple[int, float, datetime, str]:
    """Lifetime stops first (most overdue first), then idle ones (longest running first)."""
    lifetime = assessment.outcome is Outcome.STOP_LIFETIME
    return (
        0 if lifetime else 1,
        -assessment.overdue.total_seconds(),
        assessment.instance.launch_time,
        assessment.instance.instance_id,
    )


@dataclass(frozen=True)
class Selection:
    chosen: list[Assessment]
    protected: list[Assessment]
    over_cap: list[Assessment]


def select(
    assessments: Iterable[Assessment], max_stops: int, is_protected: Callable[[str], bool]
) -> Selection:
    """At most ``max_stops`` stop candidates in priority order, skipping stop-protected ones.

    ``is_protected`` is asked lazily, in priority order, and only until the cap is filled, so
    the caller's per-instance protection lookups stay bounded by the cap plus the protected
    instances met on the way."""
    chosen: list[Assessment] = []
    protected: list[Assessment] = []
    over_cap: list[Assessment] = []
    for candidate in sorted((a for a in assessments if a.stops), key=priority):
        if len(chosen) >= max_stops:
            over_cap.append(_recast(candidate, Outcome.OVER_CAP, "over this run's stop limit"))
        elif is_protected(candidate.instance.instance_id):
            protected.append(_recast(candidate, Outcome.STOP_PROTECTED, "stop protection is on"))
        else:
            chosen.append(candidate)
    return Selection(chosen, protected, over_cap)


def _recast(assessment: Assessment, outcome: Outcome, why: str) -> Assessment:
    return Assessment(
        assessment.instance,
        outcome,
        f"{why} (would stop: {assessment.reason})",
        verdict=assessment.verdict,
        stop_after_error=assessment.stop_after_error,
        overdue=assessment.overdue,
    )


@dataclass(frozen=True)
class Plan:
    """Every instance's final assessment; ``stop`` is the stop set (at most ``max_stops``)."""

    stop: list[Assessment]
    others: list[Assessment]

    @property
    def all(self) -> list[Assessment]:
        return [*self.stop, *self.others]


def decide(
    instances: Sequence[Instance],
    metrics: Mapping[str, Sequence[Period]],
    policy: Policy,
    now: datetime,
    is_protected: Callable[[str], bool] = lambda _id: False,
) -> Plan:
    """The whole decision for data at hand (an instance without metrics has too little data)."""
    concluded = [
        conclude(assess(i, policy, now), metrics.get(i.instance_id, ()), policy, now) for i in instances
    ]
    return finish(concluded, policy, is_protected)


def finish(concluded: Sequence[Assessment], policy: Policy, is_protected: Callable[[str], bool]) -> Plan:
    selection = select(concluded, policy.max_stops, is_protected)
    rest = [a for a in concluded if not a.stops]
    return Plan(stop=selection.chosen, others=[*selection.protected, *selection.over_cap, *rest])
