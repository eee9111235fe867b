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
    "SUMMARY_MAIL": "false",
}


@pytest.mark.parametrize(
    ("expression", "period"),
    [("rate(1 day)", DAY), ("rate(12 hours)", timedelta(hours=12)), ("cron(0 3 * * ? *)", DAY)],
)
def test_schedule_period(expression: str, period: timedelta) -> None:
    assert schedule_period(expression) == period


def test_config_from_the_environment() -> None:
    config = Config.from_env(ENV)
    assert config.policy == RetentionPolicy(keep_newest=7, keep_daily=7, keep_weekly=4, keep_monthly=12)
    assert config.retry_window == timedelta(hours=12) and not config.summary_mail


def test_config_fails_fast_and_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="KEEP_NEWEST"):
        Config.from_env({**ENV, "KEEP_NEWEST": "0"})
    with pytest.raises(ConfigError, match="SCHEDULE"):
        Config.from_env({**ENV, "SCHEDULE": "daily"})
    with pytest.raises(ConfigError, match="SUMMARY_MAIL"):
        Config.from_env({**ENV, "SUMMARY_MAIL": "maybe"})


@pytest.mark.parametrize("name", sorted(ENV))
def test_every_variable_is_required(name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Config.from_env({k: v for k, v in ENV.items() if k != name})
