"""The health check's own settings (the stack-wide ones are the runner's ``ctx.common``)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from autopilot.config import ConfigError, env_bool, env_int, env_str
from website_health_check.decide import MAX_WINDOW, Window

DEFAULT_WINDOW = Window(failures=4, size=10)

AUTOMATION = "website_health_check"


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
        )


def _https_or_empty(value: str) -> str:
    if value and not value.startswith("https://"):
        raise ConfigError(f"HEARTBEAT_URL={value!r} must be the heartbeat function's https:// URL (or empty)")
    return value


def _folder_or_empty(value: str) -> str:
    if value and (not value.startswith("/") or value.endswith("/")):
        raise ConfigError(f"HEARTBEAT_PARAMETERS={value!r} must be an SSM folder like /<stack>/heartbeats")
    return value
