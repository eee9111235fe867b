"""instance_recovery: its own settings.

Read once from the environment (the function's Environment in template.yaml, from its
parameters ``InstanceRecovery*``). The stack-wide settings - dry run, the owner tag key, the
topic - are the runner's: ``ctx.common``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from autopilot.config import ConfigError, env_bool, env_int
from instance_recovery.decide import Policy

ALARM_PERIODS = (60, 300)  # seconds: what InstanceRecoveryAlarmPeriod allows


@dataclass(frozen=True)
class Config:
    policy: Policy

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Every setting, or ConfigError naming the variable (no default hides a missing one)."""
        period = env_int("ALARM_PERIOD", env, minimum=60, maximum=300)
        if period not in ALARM_PERIODS:
            raise ConfigError(f"environment variable ALARM_PERIOD={period} must be one of {ALARM_PERIODS}")
        return cls(
            policy=Policy(
                for_all=env_bool("RECOVERY_FOR_ALL", env),
                period=period,
                evaluation_periods=env_int("ALARM_DATAPOINTS", env, minimum=1, maximum=10),
            )
        )
