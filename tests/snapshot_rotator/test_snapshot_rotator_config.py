"""The function's own configuration (config.py): every variable required, named when wrong."""

from __future__ import annotations

from datetime import timedelta

import pytest

from autopilot.config import ConfigError
from snapshot_rotator.config import Config, schedule_period
from snapshot_rotator.decide.retention import RetentionPolicy

pytestmark = pytest.mark.unit

DAY = timedelta(days=1)
ENV = {
    "SCHEDULE": "rate(1 day)",
    "KEEP_NEWEST": "7",
    "KEEP_DAYS": "0",
    "KEEP_DAILY": "7",
    "KEEP_WEEKLY": "4",
    "KEEP_MONTHLY": "12",
    "KEEP_YEARLY": "2",
    "SUMMARY_MAIL": "false",
    "POLICIES": "gold: newest=14 yearly=5",
    "LEDGER_TABLE": "ledger",
    "COPY_REGIONS": "eu-central-1",
    "COPY_KMS_KEYS": "",
}


@pytest.mark.parametrize(
    ("expression", "period"),
    [("rate(1 day)", DAY), ("rate(12 hours)", timedelta(hours=12)), ("cron(0 3 * * ? *)", DAY)],
)
def test_schedule_period(expression: str, period: timedelta) -> None:
    assert schedule_period(expression) == period


def test_config_from_the_environment() -> None:
    config = Config.from_env(ENV)
    default = RetentionPolicy(keep_newest=7, keep_daily=7, keep_weekly=4, keep_monthly=12, keep_yearly=2)
    assert config.policy == default
    assert config.retry_window == timedelta(hours=12) and not config.summary_mail
    assert config.retention == {"default": default, "gold": RetentionPolicy(keep_newest=14, keep_yearly=5)}
    assert config.ledger_table == "ledger" and config.stale_after == 2 * DAY
    assert Config.from_env({**ENV, "POLICIES": ""}).retention == {"default": default}


def test_config_fails_fast_and_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="KEEP_NEWEST"):
        Config.from_env({**ENV, "KEEP_NEWEST": "0"})
    with pytest.raises(ConfigError, match="SCHEDULE"):
        Config.from_env({**ENV, "SCHEDULE": "daily"})
    with pytest.raises(ConfigError, match="SUMMARY_MAIL"):
        Config.from_env({**ENV, "SUMMARY_MAIL": "maybe"})
    with pytest.raises(ConfigError, match=r"^environment variable POLICIES: .*gold"):
        Config.from_env({**ENV, "POLICIES": "gold: weekly=4"})


@pytest.mark.parametrize("name", sorted(ENV))
def test_every_variable_is_required(name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Config.from_env({k: v for k, v in ENV.items() if k != name})


def test_a_policy_may_copy_only_to_a_region_iam_allows_and_not_to_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {
        "SCHEDULE": "rate(1 day)",
        "KEEP_NEWEST": "7",
        "KEEP_DAYS": "0",
        "KEEP_DAILY": "0",
        "KEEP_WEEKLY": "0",
        "KEEP_MONTHLY": "0",
        "KEEP_YEARLY": "0",
        "SUMMARY_MAIL": "false",
        "LEDGER_TABLE": "t",
        "POLICIES": "dr: newest=2 copy=us-east-1",
        "COPY_REGIONS": "eu-central-1",
        "COPY_KMS_KEYS": "",
        "AWS_REGION": "eu-west-1",
    }
    with pytest.raises(
        ConfigError, match=r"copies to us-east-1, which COPY_REGIONS \(eu-central-1\) does not list"
    ):
        Config.from_env(env)
    with pytest.raises(ConfigError, match="this stack's own region"):
        Config.from_env({**env, "POLICIES": "dr: newest=2 copy=eu-west-1", "COPY_REGIONS": "eu-west-1"})
    with pytest.raises(ConfigError, match="COPY_KMS_KEYS is empty"):
        Config.from_env({**env, "POLICIES": "dr: newest=2 copy=eu-central-1 copy_key=alias/dr"})
    assert Config.from_env({**env, "POLICIES": "dr: newest=2 copy=eu-central-1"}).copy_targets == [
        "eu-central-1"
    ]
