"""The health check's own settings (the stack-wide ones are the runner's ``ctx.common``)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta

from autopilot.config import ConfigError, env_bool, env_int, env_str
from autopilot.schedule import BadSchedule, Schedule
from website_health_check.decide import MAX_WINDOW, Window
from website_health_check.decide.quorum import QuorumConfigError, Regions

DEFAULT_WINDOW = Window(failures=4, size=10)

AUTOMATION = "website_health_check"
ALONE = Regions((), 0)
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")


@dataclass(frozen=True)
class Config:
    sites_parameter: str  # SITES_PARAMETER: the SSM parameter holding the site list (read every run)
    state_table: str  # STATE_TABLE: the site-state table (store.py)
    failures_before_down: int  # FAILURES_BEFORE_DOWN: checks in a row before DOWN/DEGRADED is mailed
    cert_warning_days: int  # CERT_WARNING_DAYS: a certificate expiring sooner makes the site DEGRADED
    function_name: str  # AWS_LAMBDA_FUNCTION_NAME (set by Lambda): for the log link in the mails
    # FLAPPING when FLAPPING_FAILURES of the last FLAPPING_WINDOW checks failed (0: off).
    flapping: Window = DEFAULT_WINDOW
    per_site_metrics: bool = False  # PER_SITE_METRICS: Availability/Latency/CertificateDaysLeft per site
    # Heartbeats: the heartbeat function's URL (HEARTBEAT_URL) and the SSM folder that keeps each
    # heartbeat's own URL (HEARTBEAT_PARAMETERS, /<stack>/heartbeats); "" = no heartbeat function.
    heartbeat_url: str = ""
    heartbeat_parameters: str = ""
    # Several regions (HEALTH_CHECK_REGIONS, the home first; HEALTH_CHECK_QUORUM): none = this
    # region checks and decides alone. RESULTS_TABLE: the home's results table (the same name in
    # every region); a member's result counts while at most quorum_window old.
    regions: Regions = ALONE
    results_table: str = ""
    quorum_window: timedelta = timedelta(minutes=10)

    @classmethod
    def from_env(cls) -> Config:
        """Raises ConfigError naming the variable that is missing or out of range."""
        failures_before_down = env_int("FAILURES_BEFORE_DOWN", default=2, minimum=1, maximum=10)
        size = env_int("FLAPPING_WINDOW", default=10, minimum=2, maximum=MAX_WINDOW)
        failures = env_int("FLAPPING_FAILURES", default=4, minimum=0, maximum=MAX_WINDOW)
        if failures and not failures_before_down < failures <= size:
            raise ConfigError(
                f"FLAPPING_FAILURES={failures} must be 0 (off) or more than FAILURES_BEFORE_DOWN="
                f"{failures_before_down} (else an outage is called flapping before it is called down) "
                f"and at most FLAPPING_WINDOW={size}"
            )
        sites_parameter = env_str("SITES_PARAMETER")
        if not sites_parameter.startswith("/") or sites_parameter.strip("/").count("/") < 1:
            raise ConfigError(
                f"SITES_PARAMETER={sites_parameter!r} must be a parameter in a folder, like "
                "/<stack>/website-health-check/sites (the list is read with its folder's parameters)"
            )
        regions, results_table, window = _regions()
        return cls(
            sites_parameter=sites_parameter,
            state_table=env_str("STATE_TABLE"),
            failures_before_down=failures_before_down,
            cert_warning_days=env_int("CERT_WARNING_DAYS", default=14, minimum=1, maximum=365),
            function_name=os.environ.get("AWS_LAMBDA_FUNCTION_NAME") or AUTOMATION,
            flapping=Window(failures=failures, size=size),
            per_site_metrics=env_bool("PER_SITE_METRICS", default=False),
            heartbeat_url=_https_or_empty(env_str("HEARTBEAT_URL", default="")),
            heartbeat_parameters=_folder_or_empty(env_str("HEARTBEAT_PARAMETERS", default="")),
            regions=regions,
            results_table=results_table,
            quorum_window=window,
        )


def _regions() -> tuple[Regions, str, timedelta]:
    """The several-regions settings, checked together: a quorum the regions can reach, a
    results table, and a rate(...) schedule (its period sets the window of fresh results)."""
    text = env_str("HEALTH_CHECK_REGIONS", default="")
    names = tuple(r.strip() for r in text.split(",") if r.strip())
    if not names:
        return ALONE, "", timedelta(minutes=10)
    bad = [r for r in names if not _REGION.match(r)]
    if bad:
        raise ConfigError(f"HEALTH_CHECK_REGIONS={text!r}: {', '.join(bad)} is not a region name")
    quorum = env_int("HEALTH_CHECK_QUORUM", default=2, minimum=1, maximum=len(names))
    try:
        regions = Regions(names, quorum)
        schedule = Schedule.parse(env_str("SCHEDULE"))
    except (QuorumConfigError, BadSchedule) as err:
        raise ConfigError(f"HEALTH_CHECK_REGIONS={text!r}: {err}") from None
    if schedule.period is None:
        raise ConfigError(
            f"HEALTH_CHECK_REGIONS={text!r} needs a rate(...) schedule: the regions' checks are "
            f"compared within two of its periods, and {schedule.expression} has none"
        )
    # A member's last check is at most one period old when the home runs; two allow for one late.
    return regions, env_str("RESULTS_TABLE"), 2 * schedule.period


def _https_or_empty(value: str) -> str:
    if value and not value.startswith("https://"):
        raise ConfigError(f"HEARTBEAT_URL={value!r} must be the heartbeat function's https:// URL (or empty)")
    return value


def _folder_or_empty(value: str) -> str:
    if value and (not value.startswith("/") or value.endswith("/")):
        raise ConfigError(f"HEARTBEAT_PARAMETERS={value!r} must be an SSM folder like /<stack>/heartbeats")
    return value
