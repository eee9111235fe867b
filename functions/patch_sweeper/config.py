"""The patch sweeper's configuration: one frozen dataclass built from the environment."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from autopilot.config import CommonConfig, ConfigError, env_str

OPERATIONS = ("Scan", "Install")
REBOOT_OPTIONS = ("NoReboot", "RebootIfNeeded")
# SendCommand's own patterns for MaxConcurrency and MaxErrors (a count or a percentage).
_CONCURRENCY = re.compile(r"^([1-9][0-9]*|[1-9][0-9]%|[1-9]%|100%)$")
_ERRORS = re.compile(r"^([1-9][0-9]*|[0]|[1-9][0-9]%|[0-9]%|100%)$")
_LOG_GROUP = re.compile(r"^[.\-_/#A-Za-z0-9]{1,512}$")
_TAG_KEY = re.compile(r"^[^\s].{0,126}$")


@dataclass(frozen=True)
class PatchSweeperConfig:
    common: CommonConfig
    operation: str  # Scan | Install
    reboot_option: str  # NoReboot | RebootIfNeeded
    max_concurrency: str
    max_errors: str
    output_log_group: str  # CloudWatch Logs group for the command output
    state_table: str  # DynamoDB table with one small record per sweep
    opt_out_tag: str = "AutoPatch"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PatchSweeperConfig:
        operation = _choice("PATCH_OPERATION", OPERATIONS, env)
        reboot = _choice("PATCH_REBOOT_OPTION", REBOOT_OPTIONS, env)
        concurrency = _matching("PATCH_MAX_CONCURRENCY", _CONCURRENCY, env)
        errors = _matching("PATCH_MAX_ERRORS", _ERRORS, env)
        return cls(
            common=CommonConfig.from_env(env),
            operation=operation,
            reboot_option=reboot,
            max_concurrency=concurrency,
            max_errors=errors,
            output_log_group=_matching("OUTPUT_LOG_GROUP", _LOG_GROUP, env),
            state_table=env_str("STATE_TABLE", env),
            opt_out_tag=_matching("OPT_OUT_TAG", _TAG_KEY, env, default="AutoPatch"),
        )


def _choice(name: str, allowed: tuple[str, ...], env: Mapping[str, str] | None) -> str:
    value = env_str(name, env)
    if value not in allowed:
        raise ConfigError(f"environment variable {name}={value!r} must be one of {', '.join(allowed)}")
    return value


def _matching(
    name: str, pattern: re.Pattern[str], env: Mapping[str, str] | None, *, default: str | None = None
) -> str:
    value = env_str(name, env) if default is None else env_str(name, env, default=default)
    if not pattern.match(value):
        raise ConfigError(f"environment variable {name}={value!r} is not valid (expected {pattern.pattern})")
    return value
