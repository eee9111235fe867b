"""Configuration of snapshot_rotator, from the environment the template sets (every variable is
required: a missing or invalid one raises ConfigError naming it). The product-wide settings
(stack, topic, dry run, owner tag key) are the runner's ``ctx.common``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from autopilot.config import ConfigError, env_bool, env_int, env_str
from snapshot_rotator.decide.retention import RetentionPolicy

_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_UNITS = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}


def schedule_period(expression: str) -> timedelta:
    """The time between two scheduled runs: exact for rate(), one day for cron()."""
    expression = expression.strip()
    rate = _RATE.match(expression)
    if rate:
        value = int(rate.group(1))
        if value < 1:
            raise ConfigError(f"environment variable SNAPSHOT_SCHEDULE={expression!r} has a zero rate")
        return value * _UNITS[rate.group(2).rstrip("s")]
    if expression.startswith("cron(") and expression.endswith(")"):
        return timedelta(days=1)
    raise ConfigError(
        f"environment variable SNAPSHOT_SCHEDULE={expression!r} is not a rate(...) or cron(...) expression"
    )


@dataclass(frozen=True)
class Config:
    policy: RetentionPolicy
    # A volume with a snapshot of this stack younger than this is not snapshotted again.
    retry_window: timedelta
    summary_mail: bool

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        period = schedule_period(env_str("SNAPSHOT_SCHEDULE", env))
        policy = RetentionPolicy(
            keep_newest=env_int("KEEP_NEWEST", env, minimum=1, maximum=1000),
            keep_days=env_int("KEEP_DAYS", env, minimum=0, maximum=3650),
            keep_daily=env_int("KEEP_DAILY", env, minimum=0, maximum=3650),
            keep_weekly=env_int("KEEP_WEEKLY", env, minimum=0, maximum=520),
            keep_monthly=env_int("KEEP_MONTHLY", env, minimum=0, maximum=240),
        )
        return cls(policy=policy, retry_window=period / 2, summary_mail=env_bool("SUMMARY_MAIL", env))
