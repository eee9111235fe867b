"""owner_backfill's own settings.

Read once from the environment (the function's Environment in template.yaml). The stack-wide
settings - dry run, the owner tag key, the topic - are the runner's: ``ctx.common``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from autopilot.config import env_bool


@dataclass(frozen=True)
class Config:
    # OwnerBackfill=true: look for the owners of what exists (off by default: the schedule is
    # disabled too, and a run that is invoked anyway looks at nothing).
    enabled: bool

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Every setting, or ConfigError naming the variable (no default hides a missing one)."""
        return cls(enabled=env_bool("OWNER_BACKFILL", env))
