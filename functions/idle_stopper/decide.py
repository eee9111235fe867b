"""Which running instances to stop, and why: pure functions over plain data, no AWS, no clock.

The run decides in steps, each a function of data only (``now`` is passed in, from the clock):

1. :func:`assess` sorts every instance into *excluded* (a safety rule says never stop it),
   *stop* (its ``StopAfter`` lifetime is over), *keep* (too young to judge) or *needs metrics*.
2. :func:`judge_idle` applies the idle rule to the metric series of an instance that needs
   metrics: idle in at least N of the last M periods, where a period is idle when its peak CPU
   is below the threshold and its network in+out is below the threshold. Fewer than M periods
   with data means "not enough data": never idle.
3. :func:`select` picks at most ``max_stops`` instances from the stop candidates, lifetime stops
   first, skipping any that are stop-protected. Stop protection is a fact the caller reads from
   AWS one instance at a time; :func:`next_to_check` names the one candidate whose protection
   the selection needs next (in priority order, only until the cap is filled), so the reads
   stay bounded by the cap plus the protected candidates met on the way.
4. :func:`intent` turns the decision into the run's intent, plain JSON recorded before acting
   (or None: nothing to do and nothing to say).
5. :func:`recheck` decides, when an interrupted run's intent is carried out again later, what
   to do with each instance of its stop set given the instance's facts *now*.

:func:`decide` chains 1-3 for callers (and property tests) that have all data at hand.
The ``StopAfter`` value grammar (:func:`parse_stop_after`) lives here too.
"""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from autopilot.tags import opted_out

AUTOSTOP_TAG = "AutoStop"
STOP_AFTER_TAG = "StopAfter"
MB = 1_000_000  # network thresholds are in MB = 10^6 bytes, as CloudWatch's Bytes unit counts them
# A malformed StopAfter alone (nothing stopped, nothing failed) is mailed once a day, by the run
# whose time (the clock's) falls in this UTC hour; otherwise it rides along in every mail.
MALFORMED_REPORT_HOUR_UTC = 7
STAMP = "%Y-%m-%dT%H:%M:%SZ"

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


# ---- StopAfter: a whole number and a unit, 90m, 8h or 2d ------------------------------------
# Anything else is malformed and raises BadDuration with a reason a human can act on; a
# malformed value is never guessed ("8" is not "8 hours", "1.5h" is not "90 minutes").

UNITS = {"m": 60, "h": 3600, "d": 86400}
MAX_LIFETIME = timedelta(days=366)
_DURATION = re.compile(r"^([0-9]{1,6})([mhd])$", re.ASCII)


class BadDuration(ValueError):
    """A StopAfter value that is not ``<whole number><m|h|d>``."""


def parse_stop_after(raw: str) -> timedelta:
    """``"90m"`` -> 90 minutes. Surrounding spaces and the unit's case are forgiven; nothing else."""
    value = raw.strip()
    match = _DURATION.match(value.lower())
    if not match:
        raise BadDuration(f"StopAfter={raw!r} is not a whole number followed by m, h or d (e.g. 90m, 8h, 2d)")
    amount = int(match.group(1))
    if amount == 0:
        raise BadDuration(f"StopAfter={raw!r} is zero; use AutoStop=false to never stop, or a positive value")
    lifetime = timedelta(seconds=amount * UNITS[match.group(2)])
    if lifetime > MAX_LIFETIME:
        raise BadDuration(f"StopAfter={raw!r} is longer than {MAX_LIFETIME.days} days")
    return lifetime


def format_duration(delta: timedelta) -> str:
    """A short human duration: ``2d 3h``, ``9h 12m``, ``45m`` (rounded down to minutes)."""
    minutes = max(0, int(delta.total_seconds() // 60))
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {mins}m"
    return f"{mins}m"


# ---- the data ---------------------------------------------------------------------------------


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
    SNOOZED = "Snoozed"  # AutoStop=snooze-until:<date>, until then (section 7)
    WARNED = "Warned"  # a candidate whose owner was warned; stops at the planned time (section 7)


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
        Outcome.SNOOZED,
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
    warning: timedelta = timedelta(0)  # IdleStopperWarningHours: warn this long before a stop (0: off)
    max_snooze: timedelta = timedelta(days=14)  # IdleStopperMaxSnoozeDays
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
    # Decided by CPU alone (network not asked for): more busy periods than the rule allows.
    cpu_busy_periods: int | None = None

    def summary(self, policy: Policy) -> str:
        unit = "hour" if policy.period == timedelta(hours=1) else "period"
        if self.periods_with_data < self.periods:
            return f"only {self.periods_with_data} of {self.periods} {unit}s have metric data"
        if self.cpu_busy_periods is not None:
            return (
                f"CPU at or above {policy.cpu_percent:g}% in {self.cpu_busy_periods} of the last "
                f"{self.periods} {unit}s (idle allows {policy.lookback_periods - policy.periods_required}); "
                f"peak CPU {self.peak_cpu:.1f}%"
            )
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
    stop_after: str | None = None  # the StopAfter value that was reached (lifetime stops)

    @property
    def stops(self) -> bool:
        return self.outcome in STOPS


# ---- 1. assess: the safety rules, StopAfter, age ----------------------------------------------


def _has_tag(tags: Mapping[str, str], keys: Iterable[str], prefixes: Iterable[str] = ()) -> str | None:
    for key in keys:
        if key in tags:
            return key
    for key in tags:
        if key.startswith(tuple(prefixes)):
            return key
    return None


def _key(tags: Mapping[str, str], key: str) -> str | None:
    """The key present in ``tags`` that matches ``key`` case-insensitively (people type autostop,
    AUTOSTOP), the exact spelling first."""
    if key in tags:
        return key
    wanted = key.lower()
    return next((k for k in tags if k.lower() == wanted), None)


def _tag(tags: Mapping[str, str], key: str) -> str | None:
    """A tag's value, matching the key case-insensitively."""
    found = _key(tags, key)
    return None if found is None else tags[found]


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
    if key := _opted_out_by(instance.tags):
        return Outcome.OPTED_OUT, f"opted out ({AUTOSTOP_TAG}={instance.tags[key]})"
    return None


def _autostop_keys(tags: Mapping[str, str]) -> list[str]:
    """Every spelling of the AutoStop key present (AutoStop, autostop, AUTOSTOP), the exact one first."""
    wanted = AUTOSTOP_TAG.lower()
    return sorted((k for k in tags if k.lower() == wanted), key=lambda k: k != AUTOSTOP_TAG)


def _opted_out_by(tags: Mapping[str, str]) -> str | None:
    """The AutoStop key (any spelling) whose value is an opt-out word, or None. Any one of them
    opts the instance out, whatever the others say."""
    return next((k for k in _autostop_keys(tags) if opted_out(tags, k)), None)


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
                return Assessment(
                    instance,
                    Outcome.STOP_LIFETIME,
                    reason,
                    overdue=running - lifetime,
                    stop_after=raw.strip(),
                )
    window_start, _ = policy.window(now)
    if instance.launch_time > window_start:
        reason = (
            f"running only {format_duration(now - instance.launch_time)} since its last start; "
            f"the idle rule needs {policy.lookback_periods} full periods"
        )
        return Assessment(instance, Outcome.TOO_YOUNG, reason, stop_after_error=stop_after_error)
    return Assessment(instance, Outcome.NEEDS_METRICS, "needs metrics", stop_after_error=stop_after_error)


# ---- 2. the idle rule -----------------------------------------------------------------------


def judge_idle(periods: Iterable[Period], policy: Policy, now: datetime) -> IdleVerdict:
    """The idle rule over the window's periods. Periods outside the window are ignored; a missing
    period counts as one without data, so missing data can only make an instance *not* idle."""
    with_data = [p for p in _window(periods, policy, now) if p.has_data]
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


def _window(periods: Iterable[Period], policy: Policy, now: datetime) -> list[Period]:
    expected = set(policy.period_starts(now))
    by_start = {p.start.astimezone(UTC): p for p in periods if p.start.astimezone(UTC) in expected}
    return list(by_start.values())


def judge_cpu(periods: Iterable[Period], policy: Policy, now: datetime) -> IdleVerdict | None:
    """The verdict when CPU alone decides it, else None (the network series are needed).

    CPU alone decides when some period of the window has no CPU datapoint (too little data,
    whatever the network says) or when more periods than the rule allows (M - N) had peak CPU
    at or above the threshold (busy, whatever the network says). So the network series are
    asked for only for the instances whose CPU was quiet enough: for the same data, the outcome
    is the one :func:`judge_idle` gives on all three series, except that an instance busy by CPU
    is BUSY even where a network datapoint is missing."""
    window = _window(periods, policy, now)
    cpu = [p.cpu_max for p in window if p.cpu_max is not None]
    peak = max(cpu, default=None)
    if len(cpu) < policy.lookback_periods:
        return IdleVerdict(False, 0, len(cpu), policy.lookback_periods, peak, None)
    busy = sum(1 for value in cpu if value >= policy.cpu_percent)
    if busy > policy.lookback_periods - policy.periods_required:
        idle = policy.lookback_periods - busy
        return IdleVerdict(False, idle, len(cpu), policy.lookback_periods, peak, None, cpu_busy_periods=busy)
    return None


def busy_since(periods: Iterable[Period], policy: Policy, now: datetime) -> datetime | None:
    """While the window still holds the period returned, the instance cannot be idle: it holds
    more busy periods (peak CPU, or network in+out, at or above the threshold) than the rule
    allows, and a busy period stays busy (later datapoints can only raise a maximum or a sum).
    It is the (M - N + 1)-th newest busy period's start; None if there are not that many.

    This is what idle_stopper remembers (:func:`remember`): an instance whose busy periods are
    still in the window is not asked about until they leave it."""
    busy = sorted(
        (
            p.start.astimezone(UTC)
            for p in _window(periods, policy, now)
            if (p.cpu_max is not None and p.cpu_max >= policy.cpu_percent)
            or (p.has_data and p.network_mb >= policy.network_mb)
        ),
        reverse=True,
    )
    allowed = policy.lookback_periods - policy.periods_required
    return busy[allowed] if len(busy) > allowed else None


def conclude(assessment: Assessment, periods: Iterable[Period], policy: Policy, now: datetime) -> Assessment:
    """Turn a NEEDS_METRICS assessment into STOP_IDLE, BUSY or TOO_LITTLE_DATA."""
    if assessment.outcome is not Outcome.NEEDS_METRICS:
        return assessment
    periods = list(periods)
    verdict = judge_cpu(periods, policy, now) or judge_idle(periods, policy, now)
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


def merge(*series: Iterable[Period]) -> list[Period]:
    """One instance's periods from separate asks (CPU first, network after): per period start,
    each value from whichever ask has it."""
    merged: dict[datetime, Period] = {}
    for periods in series:
        for p in periods:
            had = merged.get(p.start)
            merged[p.start] = (
                p
                if had is None
                else Period(
                    p.start,
                    had.cpu_max if had.cpu_max is not None else p.cpu_max,
                    had.network_in if had.network_in is not None else p.network_in,
                    had.network_out if had.network_out is not None else p.network_out,
                )
            )
    return [merged[start] for start in sorted(merged)]


# ---- 2b. memory: the busy periods already seen -----------------------------------------------
# GetMetricData is billed per metric asked for, whatever the number of periods: the saving is
# not to ask at all about an instance that cannot be idle yet. Each run remembers, per instance
# judged busy, the start of the busy period that keeps it so (busy_since); the next runs skip it
# while that period is in the window. Memory is a fact about past periods, never a verdict of
# idle: a lost, stale or forged memory can only make a run ask again or keep an instance.

MEMORY_RULE = "rule"  # the idle rule the memory was judged under; another rule forgets it all


def rule_key(policy: Policy) -> str:
    return (
        f"{policy.periods_required}/{policy.lookback_periods}/{policy.cpu_percent:g}%/"
        f"{policy.network_mb:g}MB/{int(policy.period.total_seconds())}s"
    )


def recall(memory: Mapping[str, Any], policy: Policy, now: datetime) -> dict[str, datetime]:
    """The instances remembered busy whose busy period is still in the window now: they cannot
    be idle, and need no metrics. Entries judged under another rule, out of the window, ahead
    of it, or not a number are forgotten."""
    if memory.get(MEMORY_RULE) != rule_key(policy):
        return {}
    start, end = policy.window(now)
    recalled: dict[str, datetime] = {}
    for key, value in memory.items():
        if key == MEMORY_RULE or isinstance(value, bool) or not isinstance(value, int):
            continue
        try:
            since = datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            continue
        if start <= since < end:
            recalled[key] = since
    return recalled


def remembered(assessment: Assessment, since: datetime, policy: Policy) -> Assessment:
    """A NEEDS_METRICS assessment concluded from memory: BUSY, its metrics not asked for."""
    if assessment.outcome is not Outcome.NEEDS_METRICS:
        return assessment
    unit = "hour" if policy.period == timedelta(hours=1) else "period"
    reason = (
        f"busy in more of the last {policy.lookback_periods} {unit}s than idle allows, as judged "
        f"before; asked again once the busy {unit} of {since:%Y-%m-%d %H:%M} UTC leaves the window"
    )
    return replace(assessment, outcome=Outcome.BUSY, reason=reason)


def recalled(
    assessed: Iterable[Assessment], memory: Mapping[str, Any], policy: Policy, now: datetime
) -> dict[str, datetime]:
    """:func:`recall`, for the instances that need metrics only."""
    need = {a.instance.instance_id for a in assessed if a.outcome is Outcome.NEEDS_METRICS}
    return {i: since for i, since in recall(memory, policy, now).items() if i in need}


def conclude_all(
    assessed: Iterable[Assessment],
    metrics: Mapping[str, Sequence[Period]],
    recalled: Mapping[str, datetime],
    policy: Policy,
    now: datetime,
) -> list[Assessment]:
    """Every assessment concluded: from memory where recalled, else from its metrics."""
    return [
        remembered(a, recalled[a.instance.instance_id], policy)
        if a.instance.instance_id in recalled
        else conclude(a, metrics.get(a.instance.instance_id, ()), policy, now)
        for a in assessed
    ]


def remember(
    policy: Policy,
    judged: Mapping[str, Iterable[Period]],
    recalled: Mapping[str, datetime],
    now: datetime,
) -> dict[str, Any]:
    """The memory for the next runs: the recalled instances still recalled, and every instance
    judged this run that has a busy period keeping it busy (instances no longer running drop
    out); empty when there is none."""
    memory: dict[str, Any] = {MEMORY_RULE: rule_key(policy)}
    memory.update({instance_id: int(since.timestamp()) for instance_id, since in recalled.items()})
    for instance_id, periods in judged.items():
        since = busy_since(periods, policy, now)
        if since is not None:
            memory[instance_id] = int(since.timestamp())
    return memory if len(memory) > 1 else {}  # the rule alone is nothing to remember


# ---- 3. selection: priority, stop protection, the cap ---------------------------------------


def priority(assessment: Assessment) -> tuple[int, float, datetime, str]:
    """Lifetime stops first (most overdue first), then idle ones (longest running first)."""
    lifetime = assessment.outcome is Outcome.STOP_LIFETIME
    return (
        0 if lifetime else 1,
        -assessment.overdue.total_seconds(),
        assessment.instance.launch_time,
        assessment.instance.instance_id,
    )


def candidates(assessments: Iterable[Assessment]) -> list[Assessment]:
    """The stop candidates in priority order."""
    return sorted((a for a in assessments if a.stops), key=priority)


def next_to_check(
    assessments: Iterable[Assessment], max_stops: int, protection: Mapping[str, bool]
) -> str | None:
    """The next candidate, in priority order, whose stop protection the selection needs and
    ``protection`` (instance id -> protected, the answers so far) does not hold yet; None when
    the selection is decided (the cap is filled or every candidate is answered)."""
    chosen = 0
    for candidate in candidates(assessments):
        if chosen >= max_stops:
            return None
        instance_id = candidate.instance.instance_id
        if instance_id not in protection:
            return instance_id
        if not protection[instance_id]:
            chosen += 1
    return None


@dataclass(frozen=True)
class Selection:
    chosen: list[Assessment]
    protected: list[Assessment]
    over_cap: list[Assessment]


def select(assessments: Iterable[Assessment], max_stops: int, protection: Mapping[str, bool]) -> Selection:
    """At most ``max_stops`` stop candidates in priority order, skipping stop-protected ones.

    ``protection`` holds the answers :func:`next_to_check` asked for; a candidate without an
    answer that the cap would still admit counts as protected (the safe side)."""
    chosen: list[Assessment] = []
    protected: list[Assessment] = []
    over_cap: list[Assessment] = []
    for candidate in candidates(assessments):
        if len(chosen) >= max_stops:
            over_cap.append(_recast(candidate, Outcome.OVER_CAP, "over this run's stop limit"))
        elif protection.get(candidate.instance.instance_id, True):
            protected.append(_recast(candidate, Outcome.STOP_PROTECTED, "stop protection is on"))
        else:
            chosen.append(candidate)
    return Selection(chosen, protected, over_cap)


def _recast(assessment: Assessment, outcome: Outcome, why: str) -> Assessment:
    return replace(assessment, outcome=outcome, reason=f"{why} (would stop: {assessment.reason})")


@dataclass(frozen=True)
class Decision:
    """Every instance's final assessment; ``stop`` is the stop set (at most ``max_stops``)."""

    stop: list[Assessment]
    others: list[Assessment]
    # The candidates after the cap, in priority order (at most the cap of them, as they would
    # stop): each takes the place of a stop EC2 refuses for stop protection (run.act).
    reserve: list[Assessment] = field(default_factory=list)

    @property
    def all(self) -> list[Assessment]:
        return [*self.stop, *self.others]

    @property
    def malformed(self) -> list[Assessment]:
        return [a for a in self.all if a.stop_after_error]


def finish(concluded: Sequence[Assessment], policy: Policy, protection: Mapping[str, bool]) -> Decision:
    selection = select(concluded, policy.max_stops, protection)
    rest = [a for a in concluded if not a.stops]
    taken = {a.instance.instance_id for a in [*selection.chosen, *selection.protected]}
    reserve = [a for a in candidates(concluded) if a.instance.instance_id not in taken][: policy.max_stops]
    return Decision(
        stop=selection.chosen, others=[*selection.protected, *selection.over_cap, *rest], reserve=reserve
    )


def decide(
    instances: Sequence[Instance],
    metrics: Mapping[str, Sequence[Period]],
    policy: Policy,
    now: datetime,
    protected: Iterable[str] = (),
    memory: Mapping[str, Any] | None = None,
) -> Decision:
    """The whole decision for data at hand (an instance without metrics has too little data;
    ``protected`` are the ids with stop protection on; ``memory`` what earlier runs remembered)."""
    assessed = [assess(i, policy, now) for i in instances]
    concluded = conclude_all(assessed, metrics, recalled(assessed, memory or {}, policy, now), policy, now)
    on = set(protected)
    protection: dict[str, bool] = {}
    while (instance_id := next_to_check(concluded, policy.max_stops, protection)) is not None:
        protection[instance_id] = instance_id in on
    return finish(concluded, policy, protection)


# ---- 4. the intent: what the run is about to do, as plain JSON -------------------------------


def malformed_report_due(decision: Decision, now: datetime) -> bool:
    """A malformed StopAfter is worth a mail of its own once a day (see MALFORMED_REPORT_HOUR_UTC)."""
    return bool(decision.malformed) and now.astimezone(UTC).hour == MALFORMED_REPORT_HOUR_UTC


def intent(
    decision: Decision,
    policy: Policy,
    now: datetime,
    owner_tag_key: str,
    failures: Sequence[Mapping[str, str]],
    dry_run: bool,
    databases: Mapping[str, Any] | None = None,
    warnings: Warnings | None = None,
    snooze_news: Sequence[tuple[Instance, SnoozeState]] = (),
    savings: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The run's intent: everything the act needs to carry the stops out (again, if interrupted)
    and the mail needs to tell about them - ids, Name, owner, the numbers behind each decision.
    None when there is nothing to stop, warn, unmark or report.

    ``failures`` are the plan's own (stop protection that could not be read), as dicts;
    ``databases`` the database part (:func:`database_intent`), when IdleStopperDatabases is on;
    ``warnings`` the warning step's (:func:`warn_first`), ``snooze_news`` the expired and invalid
    snoozes not reported yet."""
    malformed_due = malformed_report_due(decision, now)
    warned = warnings or Warnings([])
    news = bool(warned.new or warned.unmark or snooze_news or savings)
    if not (decision.stop or failures or malformed_due or (databases or {}).get("stop") or news):
        return None
    protected = [a for a in decision.others if a.outcome is Outcome.STOP_PROTECTED]
    over_cap = [a for a in decision.others if a.outcome is Outcome.OVER_CAP]
    mentioned = [*decision.stop, *protected, *decision.malformed, *([] if dry_run else decision.reserve)]
    mentioned += [a for a, _ in warned.new] + [a for a, _ in warned.unmark]
    instances = {a.instance.instance_id: _facts(a.instance, owner_tag_key) for a in mentioned}
    instances.update({i.instance_id: _facts(i, owner_tag_key) for i, _ in snooze_news})
    return {
        "at": now.astimezone(UTC).strftime(STAMP),
        "dry_run": dry_run,
        "owner_tag_key": owner_tag_key,
        "policy": {
            "rule": policy.describe(),
            "lookback_periods": policy.lookback_periods,
            "max_stops": policy.max_stops,
        },
        "checked": len(decision.all),
        "stop": [_stop_entry(a, now) for a in decision.stop],
        # a dry run read the protection already: no refusal to fill in for
        "reserve": [] if dry_run else [_stop_entry(a, now) for a in decision.reserve],
        "protected": [a.instance.instance_id for a in protected],
        "over_cap": len(over_cap),
        "malformed": [
            {"id": a.instance.instance_id, "error": a.stop_after_error} for a in decision.malformed
        ],
        "malformed_due": malformed_due,
        "failures": [dict(f) for f in failures],
        "kept": dict(Counter(a.outcome.value for a in decision.others)),
        "instances": instances,
        **({"databases": dict(databases)} if databases is not None else {}),
        # Warn, then act (section 7): warned now (to tag and tell), no longer candidates (to
        # unmark and tell), the stops' planned times, expired or invalid snoozes (told once).
        "warned_remembered": len(warned.memory),
        "warn": [{**_stop_entry(a, now), "planned": at.strftime(STAMP)} for a, at in warned.new],
        "unmark": [{"id": a.instance.instance_id, "why": why} for a, why in warned.unmark],
        "snooze_notes": [{"id": i.instance_id, "state": s.state, "why": s.why} for i, s in snooze_news],
        **({"savings": dict(savings)} if savings else {}),
    }


def _stop_entry(a: Assessment, now: datetime) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": a.instance.instance_id, "outcome": a.outcome.value, "reason": a.reason}
    if a.verdict is not None:
        entry.update(
            idle_periods=a.verdict.idle_periods,
            periods=a.verdict.periods,
            peak_cpu=a.verdict.peak_cpu,
            peak_network_mb=a.verdict.peak_network_mb,
        )
    if a.outcome is Outcome.STOP_LIFETIME:
        entry.update(
            stop_after=a.stop_after or "",
            running_seconds=int((now - a.instance.launch_time).total_seconds()),
        )
    return entry


def _facts(instance: Instance, owner_tag_key: str) -> dict[str, str]:
    return {
        "name": instance.name,
        "owner": instance.owner(owner_tag_key),
        "type": instance.instance_type,
        "launched": f"{instance.launch_time.astimezone(UTC):%Y-%m-%d %H:%M}",
    }


# ---- 5. resume: an interrupted run's stop set, against the facts now -------------------------


class Recheck(StrEnum):
    STOP = "stop"  # still running, nothing changed that forbids it: stop it (and tag it)
    OURS = "ours"  # already stopping/stopped: the interrupted run stopped it; tag and mail it
    DROP = "drop"  # something changed since the decision: leave it alone


ALREADY_STOPPING = frozenset({"stopping", "stopped"})


def recheck(current: Instance | None, now: datetime | None = None) -> tuple[Recheck, str]:
    """What to do now with one instance of a recorded stop set, given its facts now (None: it is
    gone). The safety rules are applied again whatever its state: an instance opted out (or
    otherwise excluded, or snoozed) since the decision is neither stopped nor tagged."""
    if current is None:
        return Recheck.DROP, "no longer exists"
    if current.state not in ALREADY_STOPPING | {"running"}:
        return Recheck.DROP, f"state is now {current.state}"
    excluded = exclusion(replace(current, state="running"))
    if excluded:
        return Recheck.DROP, f"{excluded[1]} since the decision; it is {current.state}, left as it is"
    if current.state == "running" and has_future_snooze(current.tags, now):
        return Recheck.DROP, f"snoozed since the decision ({AUTOSTOP_TAG}={snooze_value(current.tags)})"
    if current.state in ALREADY_STOPPING:
        return Recheck.OURS, f"already {current.state}"
    return Recheck.STOP, "still running"


# ---- 6. idle databases (IdleStopperDatabases=true) ----------------------------------------------------
# RDS DB instances and Aurora clusters, judged by the same N-of-M rule on their own metrics: a
# period is idle when nobody was connected (DatabaseConnections maximum 0) and peak CPU was below
# the threshold. AWS starts a stopped database again after 7 days; one this stack stopped (its
# memory says so: a tag could be forged) and that nobody has connected to since that restart is
# stopped again as soon as a full period shows it, instead of after a whole window.

DB_RESTART_AFTER = timedelta(days=7)  # AWS starts a stopped DB instance or cluster after 7 days
DB_RESTART_SLACK = timedelta(hours=1)  # seen running this much before that: someone started it
DB_RESTART_WAIT = timedelta(days=1)  # after that, the ordinary rule (a full window) judges it
DB_MEMORY = "db:"  # memory key prefix: db:<arn> -> when this stack stopped it (epoch seconds)


class DbOutcome(StrEnum):
    """Where one database ended up. Values name log fields and the mail's counts."""

    STOP_IDLE = "StopIdle"
    STOP_AGAIN = "StopAgain"  # restarted by AWS after 7 days stopped, still unused
    BUSY = "Busy"
    TOO_LITTLE_DATA = "TooLittleData"
    TOO_YOUNG = "TooYoung"
    WAITING = "WaitingAfterRestart"  # restarted by AWS: waiting for a full period of data
    NOT_AVAILABLE = "NotAvailable"
    CLUSTER_MEMBER = "ClusterMember"
    REPLICA = "Replica"
    HAS_REPLICAS = "HasReplicas"
    NOT_STOPPABLE = "NotStoppable"
    OPTED_OUT = "OptedOut"
    OVER_CAP = "OverCap"


DB_STOPS = frozenset({DbOutcome.STOP_IDLE, DbOutcome.STOP_AGAIN})


@dataclass(frozen=True)
class Database:
    """The facts about one DB instance or Aurora cluster (DescribeDBInstances/-Clusters)."""

    kind: str  # "instance" or "cluster"
    identifier: str
    arn: str
    status: str
    engine: str
    created: datetime
    tags: Mapping[str, str] = field(default_factory=dict)
    multi_az: bool = False
    replica_of: str | None = None  # ReadReplicaSourceDBInstanceIdentifier / ReplicationSourceIdentifier
    replicas: tuple[str, ...] = ()  # ReadReplicaDBInstanceIdentifiers / ReadReplicaIdentifiers
    cluster: str | None = None  # an instance's DBClusterIdentifier: it stops with its cluster
    engine_mode: str = "provisioned"
    db_class: str = ""

    @property
    def memory_key(self) -> str:
        return f"{DB_MEMORY}{self.arn}"


@dataclass(frozen=True)
class DbPeriod:
    """One metric period of one database (None = no datapoint)."""

    start: datetime
    cpu_max: float | None
    connections_max: float | None

    @property
    def has_data(self) -> bool:
        return self.cpu_max is not None and self.connections_max is not None

    def idle(self, policy: Policy) -> bool:
        return (
            self.cpu_max is not None
            and self.connections_max is not None
            and self.connections_max < 1
            and self.cpu_max < policy.cpu_percent
        )


@dataclass(frozen=True)
class DbAssessment:
    database: Database
    outcome: DbOutcome
    reason: str
    idle_periods: int = 0
    periods: int = 0

    @property
    def stops(self) -> bool:
        return self.outcome in DB_STOPS


def db_exclusion(db: Database) -> tuple[DbOutcome, str] | None:
    """The rule that keeps this database out, or None. Most specific first; what AWS cannot
    stop is never tried (its refusal would be a failure in every run's mail)."""
    if db.status != "available":
        return DbOutcome.NOT_AVAILABLE, f"status is {db.status}"
    if db.engine in ("docdb", "neptune"):
        return DbOutcome.NOT_STOPPABLE, f"{db.engine}: not an RDS database"
    if db.kind == "instance" and db.cluster:
        return (
            DbOutcome.CLUSTER_MEMBER,
            f"member of the Aurora cluster {db.cluster}: judged and stopped with it",
        )
    if db.replica_of:
        return DbOutcome.REPLICA, f"a read replica of {db.replica_of}: AWS cannot stop a read replica"
    if db.replicas:
        return DbOutcome.HAS_REPLICAS, f"has read replicas ({', '.join(db.replicas)}): AWS cannot stop it"
    if db.engine.startswith("custom-"):
        return DbOutcome.NOT_STOPPABLE, "RDS Custom: not stopped by this automation"
    if db.kind == "instance" and db.engine.startswith("sqlserver") and db.multi_az:
        return DbOutcome.NOT_STOPPABLE, "SQL Server in a Multi-AZ deployment: AWS cannot stop it"
    if db.kind == "cluster" and not db.engine.startswith("aurora"):
        return DbOutcome.NOT_STOPPABLE, f"a Multi-AZ DB cluster ({db.engine}): not stopped by this automation"
    if db.kind == "cluster" and db.engine_mode != "provisioned":
        return DbOutcome.NOT_STOPPABLE, f"Aurora {db.engine_mode} cluster: AWS cannot stop it"
    if key := _opted_out_by(db.tags):
        return DbOutcome.OPTED_OUT, f"opted out ({AUTOSTOP_TAG}={db.tags[key]})"
    return None


def stopped_by_us(db: Database, memory: Mapping[str, Any]) -> datetime | None:
    """When this stack stopped the database, from its memory (never from a tag)."""
    value = memory.get(db.memory_key)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def assess_database(
    db: Database, periods: Iterable[DbPeriod], policy: Policy, now: datetime, stopped_at: datetime | None
) -> DbAssessment:
    """One database's outcome. ``stopped_at``: when this stack stopped it (memory), if it did."""
    excluded = db_exclusion(db)
    if excluded:
        return DbAssessment(db, *excluded)
    start, end = policy.window(now)
    window = {p.start.astimezone(UTC): p for p in periods if start <= p.start.astimezone(UTC) < end}
    unit = "hour" if policy.period == timedelta(hours=1) else "period"
    if stopped_at is not None and stopped_at + DB_RESTART_AFTER - DB_RESTART_SLACK <= now:
        restarted = stopped_at + DB_RESTART_AFTER - DB_RESTART_SLACK
        # the periods it ran since: a stopped database reports nothing, a running one 0 connections
        since = [p for s, p in sorted(window.items()) if s >= restarted and p.has_data]
        if since and all(p.idle(policy) for p in since):
            reason = (
                f"started again by AWS {format_duration(now - stopped_at)} after this stack stopped it "
                f"(AWS restarts a stopped database after 7 days); no connection and peak CPU below "
                f"{policy.cpu_percent:g}% in all {len(since)} {unit}s since"
            )
            return DbAssessment(db, DbOutcome.STOP_AGAIN, reason, len(since), len(since))
        if not since and now < stopped_at + DB_RESTART_AFTER + DB_RESTART_WAIT:
            reason = "started again by AWS after 7 days stopped; stopped again after a full quiet " + unit
            return DbAssessment(db, DbOutcome.WAITING, reason)
    if db.created > start:
        reason = (
            f"created {format_duration(now - db.created)} ago; "
            f"the idle rule needs {policy.lookback_periods} full {unit}s"
        )
        return DbAssessment(db, DbOutcome.TOO_YOUNG, reason)
    with_data = [p for p in window.values() if p.has_data]
    if len(with_data) < policy.lookback_periods:
        reason = f"only {len(with_data)} of {policy.lookback_periods} {unit}s have metric data"
        return DbAssessment(db, DbOutcome.TOO_LITTLE_DATA, reason, 0, policy.lookback_periods)
    idle = sum(1 for p in with_data if p.idle(policy))
    peak = max(p.connections_max or 0.0 for p in with_data)
    cpu = max(p.cpu_max or 0.0 for p in with_data)
    numbers = (
        f"unused in {idle} of the last {policy.lookback_periods} {unit}s (needs {policy.periods_required}); "
        f"at most {peak:g} connections, peak CPU {cpu:.1f}%"
    )
    outcome = DbOutcome.STOP_IDLE if idle >= policy.periods_required else DbOutcome.BUSY
    return DbAssessment(db, outcome, numbers, idle, policy.lookback_periods)


def decide_databases(
    databases: Sequence[Database],
    metrics: Mapping[str, Sequence[DbPeriod]],
    policy: Policy,
    now: datetime,
    memory: Mapping[str, Any],
) -> tuple[list[DbAssessment], dict[str, Any]]:
    """Every database's assessment (at most ``max_stops`` stops: re-stops first, then the
    longest-existing) and the database part of the memory for the next runs: ``db:<arn>`` ->
    when this stack stopped it, kept while it stays stopped, dropped once someone starts it
    (seen available before AWS's 7 days), written anew for this run's stops."""
    assessed: list[DbAssessment] = []
    remembered: dict[str, Any] = {}
    for db in databases:
        stopped_at = stopped_by_us(db, memory)
        if stopped_at is not None and db.status in ("stopped", "stopping"):
            remembered[db.memory_key] = int(stopped_at.timestamp())
        if (
            stopped_at is not None
            and db.status == "available"
            and now - stopped_at < DB_RESTART_AFTER - DB_RESTART_SLACK
        ):
            stopped_at = None  # started by someone before AWS would have: not ours to stop again
        assessed.append(assess_database(db, metrics.get(db.arn, ()), policy, now, stopped_at))
        if assessed[-1].outcome is DbOutcome.WAITING and stopped_at is not None:
            remembered[db.memory_key] = int(stopped_at.timestamp())
    order = sorted(
        (a for a in assessed if a.stops),
        key=lambda a: (a.outcome is not DbOutcome.STOP_AGAIN, a.database.created, a.database.arn),
    )
    over = {a.database.arn for a in order[policy.max_stops :]}
    final = [
        replace(a, outcome=DbOutcome.OVER_CAP, reason=f"over this run's stop limit (would stop: {a.reason})")
        if a.database.arn in over
        else a
        for a in assessed
    ]
    for a in final:
        if a.stops:
            remembered[a.database.memory_key] = int(now.timestamp())
    return final, remembered


def database_intent(assessed: Sequence[DbAssessment], owner_tag_key: str, policy: Policy) -> dict[str, Any]:
    """The database part of the run's intent: the stops, with what the mail needs."""
    unit = "hour" if policy.period == timedelta(hours=1) else f"{format_duration(policy.period)} period"
    rule = (
        f"nobody connected and peak CPU below {policy.cpu_percent:g}% in at least "
        f"{policy.periods_required} of the last {policy.lookback_periods} {unit}s"
    )
    return {
        "rule": rule,
        "checked": len(assessed),
        "stop": [
            {
                "kind": a.database.kind,
                "id": a.database.identifier,
                "arn": a.database.arn,
                "outcome": a.outcome.value,
                "reason": a.reason,
                "engine": a.database.engine,
                "class": a.database.db_class,
                "owner": a.database.tags.get(owner_tag_key, ""),
                "name": a.database.tags.get("Name", ""),
            }
            for a in assessed
            if a.stops
        ],
        "over_cap": sum(1 for a in assessed if a.outcome is DbOutcome.OVER_CAP),
        "kept": dict(Counter(a.outcome.value for a in assessed if not a.stops)),
    }


# ---- 7. warn, then act; a snooze that expires ----------------------------------------------
# With a warning period (IdleStopperWarningHours), a new stop candidate is not stopped: its
# owner is warned, it is tagged with the planned time (PLANNED_TAG, for people: the decision
# never reads the tag - a tagger could forge it), and the run remembers the planned time
# (memory WARN + id: the stack's own record). A later run stops it only when that time has come
# *and* it is still a candidate then; one that stopped being a candidate before (busy again,
# snoozed, opted out) is unmarked and told. Warning 0: today's behaviour, stopped at once.
#
# A snooze (``AutoStop=snooze-until:2026-12-24`` or ``...:2026-12-24T18:00Z``; a date alone is
# its first minute, UTC) keeps an instance running until then, never longer than the operator's
# maximum (IdleStopperMaxSnoozeDays) from when a run first saw that tag value (memory SNOOZE +
# id). Expired and invalid snoozes are reported once each and never guessed: an invalid one is
# no snooze (the instance is judged, and warned before any stop, as any other).

PLANNED_TAG = "AutoStopPlanned"
SNOOZE_PREFIX = "snooze-until:"
WARN = "warn#"  # memory: warn#<id> -> planned stop time (STAMP)
WARN_DRY = "warn-dry#"  # the same in dry run: a dry run's warnings never shorten a real one's
SNOOZE = "snooze#"  # memory: snooze#<id> -> "<tag value>|<first seen STAMP>|<state told>"
_SNOOZE_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class BadSnooze(ValueError):
    """An ``AutoStop=snooze-until:`` value whose end cannot be read."""


def parse_snooze(value: str) -> datetime:
    """The end of a snooze from the text after ``snooze-until:``: ``2026-12-24`` (00:00 UTC of
    that day) or an ISO time with its zone (``2026-12-24T18:00Z``, ``...+01:00``)."""
    text = value.strip()
    try:
        if _SNOOZE_DATE.match(text):
            return datetime.fromisoformat(text).replace(tzinfo=UTC)
        when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise BadSnooze(
            f"{text!r} is not a date (2026-12-24) or a time with its zone (2026-12-24T18:00Z)"
        ) from None
    if when.tzinfo is None:
        raise BadSnooze(f"{text!r} has no time zone: add Z for UTC (2026-12-24T18:00Z)")
    return when.astimezone(UTC)


def snooze_value(tags: Mapping[str, str]) -> str | None:
    """The AutoStop value that is a snooze (any spelling of the key), or None."""
    values = (tags[k].strip() for k in _autostop_keys(tags))
    return next((v for v in values if v.lower().startswith(SNOOZE_PREFIX)), None)


@dataclass(frozen=True)
class SnoozeState:
    """One instance's snooze now: active (until), expired, invalid (why), with its memory."""

    state: str  # active | expired | invalid
    value: str
    until: datetime | None
    why: str
    memory: str  # what to remember: "<value>|<first seen>|<state told>"
    news: bool  # expired or invalid and not yet reported for this value


def snooze_state(
    instance: Instance, remembered: str | None, policy: Policy, now: datetime
) -> SnoozeState | None:
    """The instance's snooze judged by the clock (``now``) and the operator's maximum from when
    its value was first seen (``remembered``: the memory of an earlier run, if any)."""
    value = snooze_value(instance.tags)
    if value is None:
        return None
    old_value, _, rest = (remembered or "").partition("|")
    seen_text, _, told = rest.partition("|")
    seen = now
    if old_value == value and seen_text:
        with contextlib.suppress(ValueError):
            seen = datetime.strptime(seen_text, STAMP).replace(tzinfo=UTC)
    else:
        told = ""
    hint = f"tag {AUTOSTOP_TAG}={SNOOZE_PREFIX}<date> at most {policy.max_snooze.days} days ahead"
    try:
        until = parse_snooze(value[len(SNOOZE_PREFIX) :])
    except BadSnooze as err:
        state, why, until_or_none = "invalid", f"snooze not honoured: {err}; {hint}", None
    else:
        until_or_none = until
        if until > seen + policy.max_snooze:
            limit = (seen + policy.max_snooze).strftime("%Y-%m-%d %H:%M")
            state = "invalid"
            why = (
                f"snooze not honoured: until {until:%Y-%m-%d %H:%M} UTC is beyond the maximum of "
                f"{policy.max_snooze.days} days (at most {limit} UTC); {hint}"
            )
        elif now < until:
            state, why = "active", f"snoozed until {until:%Y-%m-%d %H:%M} UTC ({AUTOSTOP_TAG}={value})"
        else:
            state, why = "expired", f"snooze ended {until:%Y-%m-%d %H:%M} UTC ({AUTOSTOP_TAG}={value})"
    news = state not in ("active", told)
    memory = f"{value}|{seen.strftime(STAMP)}|{state if state != 'active' else ''}"
    return SnoozeState(state, value, until_or_none, why, memory, news)


def snoozed(assessment: Assessment, snooze: SnoozeState | None) -> Assessment:
    """An assessment kept out by an active snooze (SNOOZED), else unchanged."""
    if snooze is None or snooze.state != "active" or assessment.outcome in EXCLUDED:
        return assessment
    return replace(assessment, outcome=Outcome.SNOOZED, reason=snooze.why)


def has_future_snooze(tags: Mapping[str, str], now: datetime | None) -> bool:
    """A readable snooze ending after ``now`` (any, when ``now`` is not known): what a resumed
    stop must respect whatever the maximum (it never stops more than the plan decided)."""
    value = snooze_value(tags)
    if value is None:
        return False
    try:
        until = parse_snooze(value[len(SNOOZE_PREFIX) :])
    except BadSnooze:
        return False
    return now is None or until > now


@dataclass(frozen=True)
class Warnings:
    """The warning step's outcome: the assessments to select from (candidates not yet due are
    WARNED), what to warn now, what waits, what to unmark, and the memory to keep."""

    concluded: list[Assessment]
    new: list[tuple[Assessment, datetime]] = field(default_factory=list)
    waiting: list[tuple[Assessment, datetime]] = field(default_factory=list)
    unmark: list[tuple[Assessment, str]] = field(default_factory=list)
    memory: dict[str, str] = field(default_factory=dict)


def warn_first(
    concluded: Sequence[Assessment], memory: Mapping[str, Any], policy: Policy, now: datetime, dry_run: bool
) -> Warnings:
    """Candidates are stopped only at the planned time of an earlier warning (the stack's own
    memory), if they are candidates still; new ones are warned; warned ones that are no longer
    candidates are unmarked (those not running any more are simply forgotten)."""
    if policy.warning <= timedelta(0):
        return Warnings(list(concluded))
    prefix = WARN_DRY if dry_run else WARN
    planned: dict[str, datetime] = {}
    for key, value in memory.items():
        if key.startswith(prefix) and isinstance(value, str):
            with contextlib.suppress(ValueError):
                planned[key[len(prefix) :]] = datetime.strptime(value, STAMP).replace(tzinfo=UTC)
    out: list[Assessment] = []
    found = Warnings(out)
    for a in concluded:
        instance_id = a.instance.instance_id
        at = planned.get(instance_id)
        if a.stops and at is not None and now >= at:
            out.append(a)  # due: it competes for the cap as any stop
            found.memory[prefix + instance_id] = at.strftime(STAMP)
        elif a.stops:
            at = at or (now + policy.warning).replace(second=0, microsecond=0)
            (found.waiting if instance_id in planned else found.new).append((a, at))
            found.memory[prefix + instance_id] = at.strftime(STAMP)
            why = f"warned: stops at {at:%Y-%m-%d %H:%M} UTC if still a candidate then ({a.reason})"
            out.append(replace(a, outcome=Outcome.WARNED, reason=why))
        else:
            if at is not None and a.outcome is not Outcome.NOT_RUNNING:
                found.unmark.append((a, a.reason))
            out.append(a)
    return found


# ---- 8. money saved ------------------------------------------------------------------------
# Every instance this stack stops is remembered (memory STOPPED + id: when, its type, its owner
# and team - the stack's own record). A later run that finds it running again closes the
# record: the hours between the stop and its new start (EC2's LaunchTime is the last start)
# times its on-demand price are what the stop saved, added to the month's ledger (SAVED +
# YYYY-MM: per owner). One running with a start before the stop never stopped: dropped. One
# still stopped after MAX_COUNTED is closed there (a stopped or terminated instance is not
# seen; a month is what the ledger counts). The first run of a month mails the last month's
# ledger (operators: every owner; each owner: their own line) and sends SavedDollars.

STOPPED = "stopped#"  # memory: stopped#<id> -> [stopped at, instance type, owner, team]
SAVED = "saved#"  # memory: saved#<YYYY-MM> -> [[owner, team, hours, dollars, hours without a price], ...]
PRICE = "price#"  # memory: price#<type> -> [USD an hour or None, source, YYYY-MM fetched]
SAVINGS_TOLD = "savings-told"  # memory: the last month whose ledger was mailed
MAX_COUNTED = timedelta(days=31)


@dataclass(frozen=True)
class Closed:
    """One stop whose instance runs again (or that is counted to MAX_COUNTED)."""

    instance_id: str
    owner: str
    team: str
    instance_type: str
    hours: float


def stop_records(
    stopping: Iterable[Instance], now: datetime, owner_key: str, team_key: str
) -> dict[str, Any]:
    """The memory of this run's stops (written before the act: one that fails is dropped later)."""
    at = now.astimezone(UTC).strftime(STAMP)
    return {
        STOPPED + i.instance_id: [at, i.instance_type, i.tags.get(owner_key, ""), i.tags.get(team_key, "")]
        for i in stopping
    }


def close_stops(
    memory: Mapping[str, Any], running: Mapping[str, Instance], now: datetime
) -> tuple[list[Closed], dict[str, Any], dict[str, Any]]:
    """The remembered stops closed now, the records still open (their memory), and those of
    instances running since before the stop (it did not happen: EC2 refused it, or the run
    died first) - kept only if the instance is to be stopped again, with its first time."""
    closed: list[Closed] = []
    still: dict[str, Any] = {}
    unconfirmed: dict[str, Any] = {}
    for key, value in memory.items():
        if not key.startswith(STOPPED):
            continue
        instance_id = key[len(STOPPED) :]
        try:
            at_text, instance_type, owner, team = (str(v) for v in value)
            stopped_at = datetime.strptime(at_text, STAMP).replace(tzinfo=UTC)
        except (TypeError, ValueError):
            continue  # unreadable: forgotten (nothing is guessed)
        instance = running.get(instance_id)
        if instance is not None:
            if instance.launch_time >= stopped_at:
                hours = (instance.launch_time - stopped_at).total_seconds() / 3600
                closed.append(Closed(instance_id, owner, team, instance_type, hours))
            else:
                unconfirmed[key] = list(value)  # started before the stop: the stop did not happen
            continue
        if now - stopped_at >= MAX_COUNTED:
            closed.append(Closed(instance_id, owner, team, instance_type, MAX_COUNTED.total_seconds() / 3600))
        else:
            still[key] = list(value)
    return closed, still, unconfirmed


def read_ledger(value: Any) -> dict[tuple[str, str], list[float]]:
    """A month's ledger: (owner, team) -> [hours, dollars, hours without a price]."""
    ledger: dict[tuple[str, str], list[float]] = {}
    for row in value if isinstance(value, list) else []:
        with contextlib.suppress(TypeError, ValueError):
            owner, team, hours, dollars, unpriced = row
            ledger[(str(owner), str(team))] = [float(hours), float(dollars), float(unpriced)]
    return ledger


def write_ledger(ledger: Mapping[tuple[str, str], Sequence[float]]) -> list[list[Any]]:
    return [[o, t, round(h, 2), round(d, 4), round(u, 2)] for (o, t), (h, d, u) in sorted(ledger.items())]


def add_to_ledger(
    ledger: dict[tuple[str, str], list[float]], closed: Iterable[Closed], prices: Mapping[str, float | None]
) -> float:
    """Add the closed stops (hours x price; hours without a price counted apart); the dollars added."""
    added = 0.0
    for c in closed:
        entry = ledger.setdefault((c.owner, c.team), [0.0, 0.0, 0.0])
        price = prices.get(c.instance_type)
        entry[0] += c.hours
        if price is None:
            entry[2] += c.hours
        else:
            entry[1] += c.hours * price
            added += c.hours * price
    return added


def month_of(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m")


def previous_month(when: datetime) -> str:
    first = when.astimezone(UTC).replace(day=1)
    return month_of(first - timedelta(days=1))
