"""Configuration of snapshot_rotator, from the environment the template sets (every variable is
required: a missing or invalid one raises ConfigError naming it). The product-wide settings
(stack, topic, dry run, owner tag key) are the runner's ``ctx.common``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from autopilot.config import ConfigError, env_bool, env_int, env_str
from autopilot.schedule import BadSchedule, Schedule
from snapshot_rotator.decide.retention import RetentionPolicy


def schedule_period(expression: str) -> timedelta:
    """The time between two scheduled runs: exact for rate(), one day for cron()."""
    try:
        schedule = Schedule.parse(expression)
    except BadSchedule as err:
        raise ConfigError(f"environment variable SCHEDULE: {err}") from None
    return schedule.period if schedule.period is not None else timedelta(days=1)


@dataclass(frozen=True)
class Config:
    policy: RetentionPolicy
    # A volume with a snapshot of this stack younger than this is not snapshotted again.
    retry_window: timedelta
    summary_mail: bool

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        period = schedule_period(env_str("SCHEDULE", env))
        policy = RetentionPolicy(
            keep_newest=env_int("KEEP_NEWEST", env, minimum=1, maximum=1000),
            keep_days=env_int("KEEP_DAYS", env, minimum=0, maximum=3650),
            keep_daily=env_int("KEEP_DAILY", env, minimum=0, maximum=3650),
            keep_weekly=env_int("KEEP_WEEKLY", env, minimum=0, maximum=520),
            keep_monthly=env_int("KEEP_MONTHLY", env, minimum=0, maximum=240),
        )
        return cls(policy=policy, retry_window=period / 2, summary_mail=env_bool("SUMMARY_MAIL", env))
