"""report.py, pure: the digest of the transitions act applied, the site-list mail, the counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from autopilot.config import CommonConfig
from autopilot.runner import Context, Counts
from autopilot.runtime import Deadline
from website_health_check import report
from website_health_check.config import Config

pytestmark = pytest.mark.unit
NOW = datetime(2026, 11, 23, 10, 5, tzinfo=UTC)
CTX = Context(
    "website_health_check",
    Config("/s/website-health-check/sites", "health-state", 2, 14, "s-WebsiteHealthCheckFunction-1"),
    CommonConfig("s", "eu-west-1", "arn:aws:sns:eu-west-1:123456789012:t", dry_run=False),
    NOW,
    Deadline(60),
)


def write(url: str, kind: str | None, name: str | None = None, **transition: Any) -> dict[str, Any]:
    t = None if kind is None else {"kind": kind, "old": "UP", "reason": f"{kind} reason", "down_since": ""}
    return {
        "url": url,
        "site_name": name or url,
        "record": {"url": url},
        "transition": None if t is None else {**t, **transition},
        "now": "HTTP 200 in 80 ms",
    }


def intent(*writes: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "checks",
        "token": "t",
        "at": NOW.isoformat(),
        "failures_before_down": 2,
        "writes": list(writes),
    }


def done(*urls: str, already: tuple[str, ...] = (), conflict: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "written": list(urls),
        "already": list(already),
        "conflict": list(conflict),
        "forgot_site_list_error": False,
    }


def test_one_site_down_says_so_in_the_subject() -> None:
    mail = report.mail(CTX, intent(write("https://a.example", "DOWN", "shop")), done("https://a.example"))
    assert mail is not None and mail.severity == "critical"
    assert mail.subject == "[s] DOWN: https://a.example - DOWN reason"
    assert "DOWN (1)" in mail.body and "- shop: https://a.example" in mail.body
    assert "failed 2 checks in a row" in mail.body
    assert "edit the SSM parameter /s/website-health-check/sites" in mail.body
    assert "log-group/$252Faws$252Flambda$252Fs-WebsiteHealthCheckFunction-1" in mail.body
    assert "2026-11-23 10:05 UTC" in mail.body  # the clock's time of the run


def test_several_changes_are_one_digest_by_kind() -> None:
    plan = intent(
        write("https://a.example", "DOWN"),
        write("https://b.example", "RECOVERED"),
        write("https://c.example", "DEGRADED"),
        write("https://d.example", None),  # a streak building: not news
    )
    mail = report.mail(
        CTX, plan, done("https://a.example", "https://b.example", "https://c.example", "https://d.example")
    )
    assert mail is not None and mail.severity == "critical"
    assert mail.subject == "[s] 3 sites changed state: 1 DOWN, 1 DEGRADED, 1 RECOVERED"
    assert mail.body.index("DOWN (1)") < mail.body.index("DEGRADED (1)") < mail.body.index("RECOVERED (1)")
    assert "Website health check: 1 site DOWN, 1 site DEGRADED, 1 site RECOVERED." in mail.body
    assert "d.example" not in mail.body


def test_recovered_says_how_long_it_was_down_and_what_it_answers_now() -> None:
    since = (NOW - timedelta(hours=2, minutes=35)).isoformat()
    plan = intent(write("https://a.example", "RECOVERED", old="DOWN", down_since=since))
    mail = report.mail(CTX, plan, done("https://a.example"))
    assert mail is not None and mail.severity == "info" and mail.subject == "[s] RECOVERED: https://a.example"
    assert "now: HTTP 200 in 80 ms" in mail.body
    assert "was DOWN since 2026-11-23 07:30 UTC (2 h 35 min)" in mail.body
    assert "Nothing to do: the site answers again." in mail.body


def test_degraded_only_is_a_warning() -> None:
    mail = report.mail(CTX, intent(write("https://a.example", "DEGRADED")), done("https://a.example"))
    assert mail is not None and mail.severity == "warning"


def test_only_what_act_applied_is_mailed_and_counted() -> None:
    plan = intent(
        write("https://a.example", "DOWN"),
        write("https://b.example", "DOWN"),
        write("https://c.example", "DOWN"),
    )
    # a: written now; b: written by this intent's interrupted first attempt; c: another run's
    result = done("https://a.example", already=("https://b.example",), conflict=("https://c.example",))
    mail = report.mail(CTX, plan, result)
    assert mail is not None and "a.example" in mail.body and "b.example" in mail.body
    assert "c.example" not in mail.body
    assert report.counts(plan, result) == Counts(changed=2)


def test_no_transition_applied_is_no_mail() -> None:
    plan = intent(write("https://a.example", "DOWN"), write("https://b.example", None))
    assert report.mail(CTX, plan, done("https://b.example", conflict=("https://a.example",))) is None
    assert report.counts(plan, done("https://b.example")) == Counts()


def test_a_malformed_site_list_is_mailed_when_its_record_was_written() -> None:
    plan = {
        "kind": "site_list",
        "token": "t",
        "parameter": "/s/sites",
        "problems": ["ftp://x is not http"],
        "record": {},
    }
    for outcome in ("written", "already"):
        mail = report.mail(CTX, plan, {"site_list": outcome})
        assert mail is not None and mail.severity == "critical"
        assert mail.subject == "[s] Site list is malformed: 1 problem(s), no site checked"
        assert "- ftp://x is not http" in mail.body and "Fix the SSM parameter /s/sites" in mail.body
    assert report.mail(CTX, plan, {"site_list": "conflict"}) is None  # another run mails it
    assert report.counts(plan, {"site_list": "written"}) == Counts()  # Failed is counted by the plan


@pytest.mark.parametrize(
    ("minutes", "text"), [(0, "0 min"), (119, "119 min"), (120, "2 h 0 min"), (1501, "25 h 1 min")]
)
def test_durations(minutes: int, text: str) -> None:
    assert report.duration(timedelta(minutes=minutes)) == text
