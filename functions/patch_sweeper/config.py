"""The patch sweeper's own settings: one frozen dataclass built from the environment.

The stack-wide ones (stack name, topic, dry run, owner tag key) are the runner's
``ctx.common``; a missing or invalid variable here raises ConfigError naming it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from autopilot.config import ConfigError, env_int, env_str
from autopilot.schedule import BadSchedule, Schedule
from autopilot.tags import valid_key

OPERATIONS = ("Scan", "Install")
REBOOT_OPTIONS = ("NoReboot", "RebootIfNeeded")
# SendCommand's own patterns for MaxConcurrency and MaxErrors (a count or a percentage).
_CONCURRENCY = re.compile(r"^([1-9][0-9]*|[1-9][0-9]%|[1-9]%|100%)$")
_ERRORS = re.compile(r"^([1-9][0-9]*|[0]|[1-9][0-9]%|[0-9]%|100%)$")
_LOG_GROUP = re.compile(r"^[.\-_/#A-Za-z0-9]{1,512}$")


@dataclass(frozen=True)
class Config:
    operation: str  # Scan | Install
    reboot_option: str  # NoReboot | RebootIfNeeded
    max_concurrency: str
    max_errors: str
    output_log_group: str  # CloudWatch Logs group for the command output
    state_table: str  # DynamoDB table with one small record per sweep (store.py)
    opt_out_tag: str = "AutoPatch"
    # Rings (PatchRing=<n>): the next ring starts only when the last one's success rate met
    # this and its soak time has passed; a ring with no last status after the timeout is closed.
    ring_success_percent: int = 100
    ring_soak: timedelta = timedelta(hours=24)
    ring_timeout: timedelta = timedelta(hours=8)
    # Warn, then act (PATCH_WARNING_HOURS; 0 = off): the hourly tick this long before the next
    # sweep the schedule names tells the operators and the owners of its first ring's instances.
    warning: timedelta = timedelta(0)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        _require_cron(env)
        opt_out_tag = env_str("OPT_OUT_TAG", env, default="AutoPatch")
        if not valid_key(opt_out_tag):
            raise ConfigError(f"environment variable OPT_OUT_TAG={opt_out_tag!r} is not a valid EC2 tag key")
        return cls(
            operation=_choice("PATCH_OPERATION", OPERATIONS, env),
            reboot_option=_choice("PATCH_REBOOT_OPTION", REBOOT_OPTIONS, env),
            max_concurrency=_matching("PATCH_MAX_CONCURRENCY", _CONCURRENCY, env),
            max_errors=_matching("PATCH_MAX_ERRORS", _ERRORS, env),
            output_log_group=_matching("OUTPUT_LOG_GROUP", _LOG_GROUP, env),
            state_table=env_str("STATE_TABLE", env),
            opt_out_tag=opt_out_tag,
            ring_success_percent=env_int(
                "PATCH_RING_SUCCESS_PERCENT", env, default=100, minimum=0, maximum=100
            ),
            ring_soak=timedelta(
                hours=env_int("PATCH_RING_SOAK_HOURS", env, default=24, minimum=0, maximum=336)
            ),
            ring_timeout=timedelta(
                hours=env_int("PATCH_SWEEP_TIMEOUT_HOURS", env, default=8, minimum=1, maximum=168)
            ),
            warning=timedelta(hours=env_int("PATCH_WARNING_HOURS", env, default=0, minimum=0, maximum=72)),
        )


def _require_cron(env: Mapping[str, str] | None) -> None:
    """A sweep may reboot every instance, so it must run only at times its schedule names, and
    the runner can only check that against a cron(...) (a rate(...) names no times)."""
    value = env_str("SCHEDULE", env)
    try:
        anchored = Schedule.parse(value).anchored
    except BadSchedule as err:
        raise ConfigError(f"environment variable SCHEDULE: {err}") from None
    if not anchored:
        raise ConfigError(
            f"environment variable SCHEDULE={value!r} must be a cron(...) expression: a patch sweep "
            "may reboot instances, so it runs only at the times its schedule names"
        )


def _choice(name: str, allowed: tuple[str, ...], env: Mapping[str, str] | None) -> str:
    value = env_str(name, env)
    if value not in allowed:
        raise ConfigError(f"environment variable {name}={value!r} must be one of {', '.join(allowed)}")
    return value


def _matching(name: str, pattern: re.Pattern[str], env: Mapping[str, str] | None) -> str:
    value = env_str(name, env)
    if not pattern.match(value):
        raise ConfigError(f"environment variable {name}={value!r} is not valid (expected {pattern.pattern})")
    return value
