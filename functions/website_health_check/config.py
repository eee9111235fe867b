"""The health check's own settings (the stack-wide ones are the runner's ``ctx.common``)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from autopilot.config import env_int, env_str

AUTOMATION = "website_health_check"


@dataclass(frozen=True)
class Config:
    sites_parameter: str  # SITES_PARAMETER: the SSM parameter holding the site list (read every run)
    state_table: str  # STATE_TABLE: the site-state table (store.py)
    failures_before_down: int  # FAILURES_BEFORE_DOWN: checks in a row before DOWN/DEGRADED is mailed
    cert_warning_days: int  # CERT_WARNING_DAYS: a certificate expiring sooner makes the site DEGRADED
    function_name: str  # AWS_LAMBDA_FUNCTION_NAME (set by Lambda): for the log link in the mails

    @classmethod
    def from_env(cls) -> Config:
        """Raises ConfigError naming the variable that is missing or out of range."""
        return cls(
            sites_parameter=env_str("SITES_PARAMETER"),
            state_table=env_str("STATE_TABLE"),
            failures_before_down=env_int("FAILURES_BEFORE_DOWN", default=2, minimum=1, maximum=10),
            cert_warning_days=env_int("CERT_WARNING_DAYS", default=14, minimum=1, maximum=365),
            function_name=os.environ.get("AWS_LAMBDA_FUNCTION_NAME") or AUTOMATION,
        )
