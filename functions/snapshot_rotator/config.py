"""Configuration of snapshot_rotator, from the environment the template sets (every variable is
required: a missing or invalid one raises ConfigError naming it). The product-wide settings
(stack, topic, dry run, owner tag key) are the runner's ``ctx.common``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from autopilot.config import ConfigError, env_bool, env_int, env_str
from autopilot.schedule import BadSchedule, Schedule
from snapshot_rotator.decide.policies import Policy, parse_policies
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
    policy: RetentionPolicy  # the default policy (Backup=true)
    # A volume with a snapshot of this stack younger than this is not snapshotted again.
    retry_window: timedelta
    summary_mail: bool
    ledger_table: str = ""  # the stack's record of the snapshots it created (store.py)
    # the named policies (Backup=<name>), the default one included under "default"
    policies: Mapping[str, Policy] | None = None
    # A volume with no completed backup newer than this is stale (two periods: one missed run).
    stale_after: timedelta = timedelta(days=2)
    # Work left by a run continues at once in rounds (the stack's state machine), not a day later.
    rounds: bool = False
    # Regions IAM lets the function copy to and delete copies in (SnapshotRotatorCopyRegions).
    copy_regions: tuple[str, ...] = ()

    @property
    def copy_targets(self) -> list[str]:
        """The destination regions the policies copy to, each once."""
        return sorted({p.copy_region for p in self.named.values() if p.copy_region})

    @property
    def named(self) -> Mapping[str, Policy]:
        return self.policies if self.policies is not None else {"default": Policy("default", self.policy)}

    @property
    def retention(self) -> dict[str, RetentionPolicy]:
        """Policy name -> its retention rules (the default one included)."""
        return {name: p.retention for name, p in self.named.items()}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        period = schedule_period(env_str("SCHEDULE", env))
        policy = RetentionPolicy(
            keep_newest=env_int("KEEP_NEWEST", env, minimum=1, maximum=1000),
            keep_days=env_int("KEEP_DAYS", env, minimum=0, maximum=3650),
            keep_daily=env_int("KEEP_DAILY", env, minimum=0, maximum=3650),
            keep_weekly=env_int("KEEP_WEEKLY", env, minimum=0, maximum=520),
            keep_monthly=env_int("KEEP_MONTHLY", env, minimum=0, maximum=240),
            keep_yearly=env_int("KEEP_YEARLY", env, minimum=0, maximum=100),
        )
        source = os.environ if env is None else env
        text = _may_be_empty("POLICIES", source)
        try:
            policies = parse_policies(text, policy)
        except ValueError as err:
            raise ConfigError(f"environment variable POLICIES: {err}") from None
        copy_regions = tuple(r.strip() for r in _may_be_empty("COPY_REGIONS", source).split(",") if r.strip())
        copy_keys = [k for k in _may_be_empty("COPY_KMS_KEYS", source).split(",") if k.strip()]
        own = source.get("AWS_REGION", "")
        for p in policies.values():
            if p.copy_region and p.copy_region not in copy_regions:
                raise ConfigError(
                    f"environment variable POLICIES: policy {p.name!r} copies to {p.copy_region}, which "
                    f"COPY_REGIONS ({', '.join(copy_regions) or 'empty'}) does not list: the function may "
                    "copy only there (SnapshotRotatorCopyRegions)"
                )
            if p.copy_region and p.copy_region == own:
                raise ConfigError(
                    f"environment variable POLICIES: policy {p.name!r} copies to {own}, this stack's own "
                    "region: a disaster-recovery copy needs another region"
                )
            if p.copy_kms_key and not copy_keys:
                raise ConfigError(
                    f"environment variable POLICIES: policy {p.name!r} encrypts its copies with "
                    f"{p.copy_kms_key}, but COPY_KMS_KEYS is empty: list the key's ARN in "
                    "SnapshotRotatorCopyKmsKeys so that the function may use it"
                )
        return cls(
            policy=policy,
            retry_window=period / 2,
            summary_mail=env_bool("SUMMARY_MAIL", env),
            ledger_table=env_str("LEDGER_TABLE", env),
            policies=policies,
            stale_after=period * 2,
            rounds=bool(source.get("CONTINUATION_STATE_MACHINE", "").strip()),
            copy_regions=copy_regions,
        )


def _may_be_empty(name: str, env: Mapping[str, str]) -> str:
    """A required variable whose value may be empty (a list with nothing in it)."""
    value = env.get(name)
    if value is None:
        raise ConfigError(f"environment variable {name} is required but not set")
    return value.strip()
