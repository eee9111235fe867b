"""Typed, fail-fast configuration from the environment.

Every function builds one frozen dataclass from ``os.environ`` at cold start. A missing or
invalid variable raises :class:`ConfigError` naming the variable, so a broken deployment
fails loudly (and trips the function's Errors alarm) instead of running with a guess.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from autopilot.schedule import BadSchedule, Schedule
from autopilot.tags import valid_key

_TRUE = {"true", "yes", "1"}
_FALSE = {"false", "no", "0"}
_UNSET = object()
# An SSM document name (a Change Calendar is a document of type ChangeCalendar).
CALENDAR_NAME = re.compile(r"^[a-zA-Z0-9_.\-]{3,128}$")


class ConfigError(RuntimeError):
    """A required environment variable is missing or has an invalid value."""


def env_str(name: str, env: Mapping[str, str] | None = None, *, default: object = _UNSET) -> str:
    value = (os.environ if env is None else env).get(name)
    if value is None or value.strip() == "":
        if default is _UNSET:
            raise ConfigError(f"environment variable {name} is required but not set")
        return str(default)
    return value.strip()


def env_int(
    name: str,
    env: Mapping[str, str] | None = None,
    *,
    default: int | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    raw = env_str(name, env, default=_UNSET if default is None else str(default))
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not a whole number") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"environment variable {name}={value} is below the minimum {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"environment variable {name}={value} is above the maximum {maximum}")
    return value


def env_float(
    name: str,
    env: Mapping[str, str] | None = None,
    *,
    default: float | None = None,
    minimum: float | None = None,
) -> float:
    raw = env_str(name, env, default=_UNSET if default is None else str(default))
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not a number") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"environment variable {name}={value} is below the minimum {minimum}")
    return value


def env_bool(name: str, env: Mapping[str, str] | None = None, *, default: bool | None = None) -> bool:
    raw = env_str(name, env, default=_UNSET if default is None else str(default)).lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"environment variable {name}={raw!r} must be true or false")


_STACK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,127}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")


@dataclass(frozen=True)
class CommonConfig:
    """The product-wide settings every automation honours (template Globals): who it is, where
    it runs, where mails go, dry-run, and the owner tag key (``OwnerTagKey``)."""

    stack_name: str
    region: str
    topic_arn: str
    dry_run: bool
    owner_tag_key: str = "Owner"
    # The function's own EventBridge schedule (SCHEDULE; scheduled automations only): the runner
    # refuses a scheduled event at a time a cron(...) schedule does not name.
    schedule: Schedule | None = None
    # The Change Calendar whose CLOSED state pauses this automation's changes (CHANGE_CALENDAR,
    # set only on the automations that change workloads; '' = none): autopilot.freeze.
    change_calendar: str = ""
    # Owner-routed mail (autopilot.routing): the SES sender (MAIL_FROM, an address of a verified
    # identity; '' = routing off, every mail to the topic only), the routing map's SSM parameter
    # (MAIL_ROUTING_PARAMETER) and the team tag key (TEAM_TAG_KEY) it may be keyed by.
    mail_from: str = ""
    routing_parameter: str = ""
    team_tag_key: str = "Team"

    @property
    def routes_mail(self) -> bool:
        """Owner digests are sent (never in dry run: a dry run tells the operators only)."""
        return bool(self.mail_from) and not self.dry_run

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CommonConfig:
        stack_name = env_str("STACK_NAME", env)
        if not _STACK_NAME.match(stack_name):
            raise ConfigError(f"environment variable STACK_NAME={stack_name!r} is not a stack name")
        region = env_str("AWS_REGION", env)
        if not _REGION.match(region):
            raise ConfigError(f"environment variable AWS_REGION={region!r} is not a region name")
        topic_arn = env_str("TOPIC_ARN", env)
        if not topic_arn.startswith("arn:") or ":sns:" not in topic_arn:
            raise ConfigError(f"environment variable TOPIC_ARN={topic_arn!r} is not an SNS topic ARN")
        owner_tag_key = env_str("OWNER_TAG_KEY", env)
        if not valid_key(owner_tag_key):
            raise ConfigError(
                f"environment variable OWNER_TAG_KEY={owner_tag_key!r} is not a valid EC2 tag key"
            )
        schedule_text = env_str("SCHEDULE", env, default="")
        try:
            schedule = Schedule.parse(schedule_text) if schedule_text else None
        except BadSchedule as err:
            raise ConfigError(f"environment variable SCHEDULE: {err}") from None
        change_calendar = env_str("CHANGE_CALENDAR", env, default="")
        if change_calendar and not CALENDAR_NAME.match(change_calendar):
            raise ConfigError(
                f"environment variable CHANGE_CALENDAR={change_calendar!r} is not a Change Calendar name "
                "(an SSM document name: 3-128 letters, digits, _ . -)"
            )
        mail_from = env_str("MAIL_FROM", env, default="").strip()
        if mail_from and not _EMAIL.match(mail_from):
            raise ConfigError(f"environment variable MAIL_FROM={mail_from!r} is not an e-mail address")
        team_tag_key = env_str("TEAM_TAG_KEY", env, default="Team")
        if not valid_key(team_tag_key):
            raise ConfigError(
                f"environment variable TEAM_TAG_KEY={team_tag_key!r} is not a valid EC2 tag key"
            )
        return cls(
            stack_name=stack_name,
            region=region,
            topic_arn=topic_arn,
            dry_run=env_bool("DRY_RUN", env),
            owner_tag_key=owner_tag_key,
            schedule=schedule,
            change_calendar=change_calendar,
            mail_from=mail_from,
            routing_parameter=env_str("MAIL_ROUTING_PARAMETER", env, default=""),
            team_tag_key=team_tag_key,
        )
