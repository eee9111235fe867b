"""Monthly cost of the suite for the reference account, from the measured runs.

Reference account (the issue): 10 sites checked every 5 minutes, 200 running instances
(idle_stopper hourly, patch_sweeper weekly), 100 backed-up volumes (snapshot_rotator daily),
and an assumed 300 RunInstances events a month of 1 instance each (owner_tagger).

Duration model (stated, not measured on Lambda): billed seconds per invocation =
the in-process wall time measured here (moto's own work included, so an over-estimate of the
function's CPU) + calls x API_ROUND_TRIP (each AWS call sequential). The health check's wall
time is measured against local sites that answer in 200 ms. 256 MB (template Globals), arm64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from bench import prices
from bench.common import Run

MONTH_MINUTES: Final = 30 * 24 * 60
API_ROUND_TRIP: Final = 0.03  # seconds per AWS call (assumption: same-region, small requests)
MEMORY_GB: Final = 0.25
LAUNCH_EVENTS: Final = 300  # assumption: RunInstances events per month in the reference account
# template.yaml: failed-events queue 1 + 5 functions x (Errors, Throttles, Failed) + 2 health check
ALARMS: Final = 18
SITES: Final = 10
# EMF custom metrics (each metric name x dimension set is one metric): the health check's 3 per
# site (Availability, Latency, CertificateDaysLeft) + 6 run totals; owner_tagger 6; patch_sweeper
# 6; snapshot_rotator 7; idle_stopper its outcome's metrics (counted in the run); plus
# Powertools' ColdStart metric per function (5).
STATIC_METRICS: Final = 3 * SITES + 6 + 6 + 6 + 7 + 5


@dataclass(frozen=True)
class Line:
    automation: str
    invocations: float
    seconds_each: float
    calls_each: float
    get_metric_data_metrics: float = 0.0  # metrics requested per invocation
    ddb_writes: float = 0.0  # write request units per invocation
    ddb_reads: float = 0.0
    publishes: float = 0.0

    @property
    def gb_seconds(self) -> float:
        return self.invocations * self.seconds_each * MEMORY_GB

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


def lines(health: Run, health_wall: float, idle: Run, patch: Run, snapshots: Run, owner: Run) -> list[Line]:
    patch_commands = patch.calls.get("ssm.SendCommand", 0)
    patch_invocations = 1 + patch_commands  # the scheduled start + one per command's final event
    return [
        Line(
            "website_health_check",
            MONTH_MINUTES / 5,
            _seconds(health, health_wall),
            health.total,
            ddb_reads=1,  # one consistent Scan of 10 small items = 1 RRU
        ),
        Line(
            "idle_stopper",
            MONTH_MINUTES / 60,
            _seconds(idle),
            idle.total,
            get_metric_data_metrics=3 * (idle.size - idle.size // 100),
            publishes=idle.calls.get("sns.Publish", 0),
        ),
        Line(
            "patch_sweeper",
            (MONTH_MINUTES / (7 * 24 * 60)) * patch_invocations,
            _seconds(patch) / patch_invocations,
            patch.total / patch_invocations,
            # Upper bound: every write billed at the sweep record's size (1 WRU per started KB).
            ddb_writes=(patch.calls.get("dynamodb.PutItem", 0) + patch.calls.get("dynamodb.UpdateItem", 0))
            * math.ceil(int(patch.extra["sweep_record_bytes"]) / 1024)
            / patch_invocations,
            ddb_reads=patch.calls.get("dynamodb.GetItem", 0) / patch_invocations,
            publishes=1 / patch_invocations,
        ),
        Line("snapshot_rotator", 30, _seconds(snapshots), snapshots.total),
        Line("owner_tagger", LAUNCH_EVENTS, _seconds(owner), owner.total),
    ]


def fixed_monthly(idle_metric_names: int) -> dict[str, float]:
    return {
        f"custom metrics ({STATIC_METRICS + idle_metric_names})": (STATIC_METRICS + idle_metric_names)
        * prices.CW_CUSTOM_METRIC_MONTH,
        f"alarms ({ALARMS})": ALARMS * prices.CW_ALARM_MONTH,
    }


def alternatives() -> dict[str, float]:
    runs = MONTH_MINUTES / 5
    route53_each = (
        prices.ROUTE53_HEALTH_CHECK_NON_AWS_MONTH + 2 * prices.ROUTE53_OPTIONAL_FEATURE_NON_AWS_MONTH
    )
    return {
        "CloudWatch Synthetics: 1 canary per site, every 5 min": SITES * runs * prices.SYNTHETICS_CANARY_RUN,
        "Route 53 health checks (non-AWS endpoint + HTTPS + string matching)": SITES * route53_each,
    }
