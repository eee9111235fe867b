"""Configuration of idle_stopper, from the environment (set by the template's parameters).

The product-wide settings (stack, topic, dry run, owner tag key) are the runner's
:class:`autopilot.config.CommonConfig`; this is only idle_stopper's own idle rule and cap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from autopilot.config import ConfigError, env_bool, env_float, env_int
from idle_stopper.decide import Policy


@dataclass(frozen=True)
class Config:
    policy: Policy
    databases: bool = False  # IdleStopperDatabases: RDS DB instances and Aurora clusters too

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        lookback = env_int("LOOKBACK_HOURS", env, minimum=1, maximum=168)
        required = env_int("PERIODS_REQUIRED", env, minimum=1)
        if required > lookback:
            raise ConfigError(
                f"environment variable PERIODS_REQUIRED={required} is above LOOKBACK_HOURS={lookback}"
            )
        policy = Policy(
            lookback_periods=lookback,
            periods_required=required,
            cpu_percent=env_float("CPU_PERCENT", env, minimum=0.0),
            network_mb=env_float("NETWORK_MB", env, minimum=0.0),
            max_stops=env_int("MAX_STOPS_PER_RUN", env, minimum=0, maximum=1000),  # one StopInstances call
            # Warn the owner this long before a stop (IdleStopperWarningHours; unset: 0, stop at once).
            warning=timedelta(hours=env_int("WARNING_HOURS", env, default=0, minimum=0, maximum=168)),
            max_snooze=timedelta(days=env_int("MAX_SNOOZE_DAYS", env, default=14, minimum=1, maximum=90)),
        )
        return cls(policy=policy, databases=env_bool("IDLE_DATABASES", env, default=False))
