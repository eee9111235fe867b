"""Monthly cost of the suite for the reference account, from the measured runs.

Reference account (the issue): 10 sites checked every 5 minutes, 200 running instances
(idle_stopper hourly, patch_sweeper weekly), 100 backed-up volumes (snapshot_rotator daily),
and an assumed 300 RunInstances events a month of 1 instance each (owner_tagger). idle_stopper
is its steady state: the hourly run after the first day over bench.idle_stopper_bill's fleet
(what a month of runs looks like; the first run's stops happen once).

Duration model (stated, not measured on Lambda): billed seconds per invocation =
the in-process wall time measured here (moto's own work included, so an over-estimate of the
function's CPU) + calls x API_ROUND_TRIP (each AWS call sequential). The health check's wall
time is measured against local sites that answer in 200 ms. 256 MB (template Globals; the health
check 512 MB), arm64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench import prices
from bench.common import Run
from bench.idle_stopper_bill import Steady

MONTH_MINUTES: Final = 30 * 24 * 60
MONTH_HOURS: Final = 730  # CloudWatch bills custom metrics per hour in which they are sent
API_ROUND_TRIP: Final = 0.03  # seconds per AWS call (assumption: same-region, small requests)
MEMORY_GB: Final = 0.25
LAUNCH_EVENTS: Final = 300  # assumption: RunsInstances events per month in the reference account
SITES: Final = 10
PER_SITE_METRICS: Final = 3  # Availability, Latency, CertificateDaysLeft (WebsiteHealthCheckPerSiteMetrics)


def alarms() -> int:
    """Alarms template.yaml creates with its default parameters (each $0.10 a month)."""
    from samcli.yamlhelper import yaml_parse

    from tools.render import expand_foreach

    template = yaml_parse((Path(__file__).resolve().parent.parent / "template.yaml").read_text())
    resources = expand_foreach(template["Resources"])
    off = {
        "OwnerBackfillOn",
        "OwnerBackfillSilenceAlarmOn",
        "RollupOn",
        "WebsiteHealthCheckHomeRegion",
    }  # opt-in
    return sum(
        1
        for r in resources.values()
        if r["Type"] == "AWS::CloudWatch::Alarm" and r.get("Condition") not in off
    )


@dataclass(frozen=True)
class Line:
    automation: str
    invocations: float
    seconds_each: float
    calls_each: float
    metrics_sent: int = 0  # custom metrics a run sends
    memory_gb: float = MEMORY_GB
    hours_with_data: float = MONTH_HOURS  # hours of the month in which they are sent
    get_metric_data_metrics: float = 0.0  # metrics requested per invocation
    ddb_writes: float = 0.0  # write request units per invocation
    ddb_reads: float = 0.0
    publishes: float = 0.0

    @property
    def gb_seconds(self) -> float:
        return self.invocations * self.seconds_each * self.memory_gb

    @property
    def metric_months(self) -> float:
        """Custom metrics, in metric-months (each billed for the hours it is sent)."""
        return self.metrics_sent * min(1.0, self.hours_with_data / MONTH_HOURS)

    @property
    def metric_cost(self) -> float:
        return self.metric_months * prices.CW_CUSTOM_METRIC_MONTH

    @property
    def lambda_cost(self) -> float:
        return self.gb_seconds * prices.LAMBDA_ARM_GB_SECOND + self.invocations * prices.LAMBDA_REQUEST

    @property
    def other_cost(self) -> float:
        n = self.invocations
        return n * (
            self.get_metric_data_metrics * prices.CW_GET_METRIC_DATA_PER_METRIC
            + self.ddb_writes * prices.DDB_WRITE_REQUEST_UNIT
            + self.ddb_reads * prices.DDB_READ_REQUEST_UNIT
            + self.publishes * (prices.SNS_PUBLISH + prices.SNS_EMAIL)
        )


def _seconds(run: Run, wall: float | None = None) -> float:
    return (run.seconds if wall is None else wall) + run.total * API_ROUND_TRIP


def lines(
    health: Run,
    health_wall: float,
    idle: Steady,
    patch: Run,
    snapshots: Run,
    owner: Run,
    *,
    per_site_metrics: bool = False,
) -> list[Line]:
    patch_commands = patch.calls.get("ssm.SendCommand", 0)
    patch_invocations = 1 + patch_commands  # the scheduled start + one per command's final event
    # Custom metrics (each name x dimension set is one) as measured: bench.common.metrics_sent.
    health_metrics = int(health.extra["metrics_sent"])
    if per_site_metrics:
        health_metrics += PER_SITE_METRICS * SITES
    return [
        Line(
            "website_health_check" + (" (per-site metrics on)" if per_site_metrics else ""),
            MONTH_MINUTES / 5,
            _seconds(health, health_wall),
            health.total,
            metrics_sent=health_metrics,
            memory_gb=0.5,  # template.yaml: the health check's own MemorySize
            ddb_reads=1,  # one consistent Scan of 10 small items = 1 RRU
        ),
        Line(  # the hourly run once the first day is over (bench.idle_stopper_bill's fleet)
            "idle_stopper",
            MONTH_HOURS,
            idle.seconds + idle.calls * API_ROUND_TRIP,
            idle.calls,
            metrics_sent=round(idle.metrics_sent),
            get_metric_data_metrics=idle.metrics_requested,
        ),
        Line(
            "patch_sweeper",
            (MONTH_MINUTES / (7 * 24 * 60)) * patch_invocations,
            _seconds(patch) / patch_invocations,
            patch.total / patch_invocations,
            metrics_sent=int(patch.extra["metrics_sent"]),
            # at most one hour with data per invocation (a sweep's commands end within hours)
            hours_with_data=(MONTH_MINUTES / (7 * 24 * 60)) * patch_invocations,
            # Upper bound: every write billed at the sweep record's size (1 WRU per started KB).
            ddb_writes=(patch.calls.get("dynamodb.PutItem", 0) + patch.calls.get("dynamodb.UpdateItem", 0))
            * math.ceil(int(patch.extra["sweep_record_bytes"]) / 1024)
            / patch_invocations,
            ddb_reads=patch.calls.get("dynamodb.GetItem", 0) / patch_invocations,
            publishes=1 / patch_invocations,
        ),
        Line(  # the hourly look at the open sweep (rings): nothing due in almost every hour
            "patch_sweeper (hourly tick)",
            MONTH_HOURS,
            int(patch.extra.get("tick_calls", 0)) * API_ROUND_TRIP,
            int(patch.extra.get("tick_calls", 0)),
            ddb_reads=int(patch.extra.get("tick_reads", 0)),
            ddb_writes=int(patch.extra.get("tick_writes", 0)),
        ),
        Line(
            "snapshot_rotator",
            30,
            _seconds(snapshots),
            snapshots.total,
            metrics_sent=int(snapshots.extra["metrics_sent"]),
            hours_with_data=30,
        ),
        Line(
            "owner_tagger",
            LAUNCH_EVENTS,
            _seconds(owner),
            owner.total,
            metrics_sent=int(owner.extra["metrics_sent"]),
            hours_with_data=LAUNCH_EVENTS,  # at most one hour per launch
        ),
    ]


def fixed_monthly() -> dict[str, float]:
    count = alarms()
    return {f"alarms ({count}, template defaults)": count * prices.CW_ALARM_MONTH}


def alternatives() -> dict[str, float]:
    runs = MONTH_MINUTES / 5
    route53_each = (
        prices.ROUTE53_HEALTH_CHECK_NON_AWS_MONTH + 2 * prices.ROUTE53_OPTIONAL_FEATURE_NON_AWS_MONTH
    )
    return {
        "CloudWatch Synthetics: 1 canary per site, every 5 min": SITES * runs * prices.SYNTHETICS_CANARY_RUN,
        "Route 53 health checks (non-AWS endpoint + HTTPS + string matching)": SITES * route53_each,
    }
