"""Configuration of idle_stopper, from the environment (set by the template's parameters)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from autopilot.config import CommonConfig, ConfigError, env_float, env_int, env_str
from idle_stopper.decision import Policy

_TAG_KEY = re.compile(r"^[\w\s+\-=.:/@]{1,128}$")


@dataclass(frozen=True)
class IdleStopperConfig:
    common: CommonConfig
    policy: Policy
    owner_tag_key: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> IdleStopperConfig:
        lookback = env_int("LOOKBACK_HOURS", env, minimum=1, maximum=168)
        required = env_int("PERIODS_REQUIRED", env, minimum=1)
        if required > lookback:
            raise ConfigError(
                f"environment variable PERIODS_REQUIRED={required} is above LOOKBACK_HOURS={lookback}"
            )
        owner_tag_key = env_str("OWNER_TAG_KEY", env)
        if not _TAG_KEY.match(owner_tag_key):
            raise ConfigError(f"environment variable OWNER_TAG_KEY={owner_tag_key!r} is not a tag key")
        policy = Policy(
            lookback_periods=lookback,
            periods_required=required,
            cpu_percent=env_float("CPU_PERCENT", env, minimum=0.0),
            network_mb=env_float("NETWORK_MB", env, minimum=0.0),
            max_stops=env_int("MAX_STOPS_PER_RUN", env, minimum=0, maximum=100),
        )
        return cls(common=CommonConfig.from_env(env), policy=policy, owner_tag_key=owner_tag_key)
