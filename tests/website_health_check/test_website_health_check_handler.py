"""The handler end to end with moto: its SSM site list, its DynamoDB state, the runner's
outbox, its mails and metrics, and the exact AWS calls of a run."""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from typing import Any

import pytest

from autopilot import runner
from autopilot.config import ConfigError
from autopilot.recorder import CallRecorder
from conftest import FakeContext
from website_health_check import app, store

pytestmark = pytest.mark.integration
Mailbox = Callable[[], list[dict[str, Any]]]
Invoke = Callable[..., dict[str, Any]]
Sites = Callable[[str], None]
States = Callable[[], dict[str, str]]
# Every invocation: the runner's look for unfinished work (Query) and its claim on the event
# (Powertools: PutItem, then UpdateItem with the result).
RUNNER = {"dynamodb.Query": 1, "dynamodb.PutItem": 1, "dynamodb.UpdateItem": 1}
# A run with something to write: its intent recorded (PutItem), acted (UpdateItem), sent (DeleteItem).
OUTBOX = {"dynamodb.PutItem": 1, "dynamodb.UpdateItem": 1, "dynamodb.DeleteItem": 1}


def urls(web: ThreadingHTTPServer, *paths: str) -> list[str]:
    return [f"http://127.0.0.1:{web.server_port}{p}" for p in paths]


def test_down_after_two_failures_once_then_recovered(
    web: ThreadingHTTPServer, invoke: Invoke, sites: Sites, states: States, mailbox: Mailbox
) -> None:
    ok, toggle = urls(web, "/ok", "/toggle")
    sites(f"{ok}, {toggle}")
    first = invoke()
    assert (first["Checked"], first.get("SitesDown", 0), first["Changed"]) == (2, 0, 0) and mailbox() == []
    web.healthy = False  # type: ignore[attr-defined]
    assert invoke().get("SitesDown", 0) == 0 and mailbox() == []  # one failed check: could be a blip
    assert states() == {toggle: "UP"}  # ... but its streak is stored
    result = invoke()
    assert (result["Changed"], result.get("SitesDown", 0), result["mails_held"]) == (1, 1, 0)
    assert states() == {toggle: "DOWN"}
    (mail,) = mailbox()
    assert mail["subject"] == f"[ops-autopilot-test] DOWN: {toggle} - HTTP 503, expected 200-399"
    assert mail["attributes"] == {"automation": "website_health_check", "severity": "critical"}
    assert "failed 2 checks in a row" in mail["body"] and ok not in mail["body"]
    invoke()
    invoke()
    assert len(mailbox()) == 1  # still down: no new mail
    web.healthy = True  # type: ignore[attr-defined]
    assert invoke()["Changed"] == 1
    recovered = mailbox()[-1]
    assert recovered["subject"] == f"[ops-autopilot-test] RECOVERED: {toggle}"
    assert recovered["attributes"]["severity"] == "info" and "was DOWN since" in recovered["body"]
    invoke()
    assert len(mailbox()) == 2


def test_healthy_runs_write_nothing_and_cost_five_calls(
    web: ThreadingHTTPServer, invoke: Invoke, sites: Sites, calls: CallRecorder, states: States
) -> None:
    sites(", ".join(f"http://127.0.0.1:{web.server_port}/ok?{i}" for i in range(20)))
    result = invoke()
    # 2 of the health check's own (the list, the states) and the runner's 3; nothing recorded.
    assert calls.by_operation() == {"ssm.GetParametersByPath": 1, "dynamodb.Scan": 1, **RUNNER}
    assert result["Checked"] == 20 and result["Changed"] == 0 and states() == {}


def test_a_run_with_a_change_costs_one_write_per_changed_site_and_the_outbox(
    web: ThreadingHTTPServer,
    invoke: Invoke,
    sites: Sites,
    calls: CallRecorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAILURES_BEFORE_DOWN", "1")
    web.healthy = False  # type: ignore[attr-defined]
    sites(", ".join(urls(web, "/ok", "/toggle?1", "/toggle?2")))
    invoke()
    own = {"ssm.GetParametersByPath": 1, "dynamodb.Scan": 1, "dynamodb.PutItem": 2, "sns.Publish": 1}
    assert calls.by_operation() == Counter(RUNNER) + Counter(OUTBOX) + Counter(own)
    assert calls.by_operation() == {
        "ssm.GetParametersByPath": 1,
        "dynamodb.Scan": 1,
        "dynamodb.Query": 1,
        "dynamodb.PutItem": 1 + 1 + 2,  # claim, intent, one per changed site
        "dynamodb.UpdateItem": 1 + 1,  # claim's result, the entry acted
        "dynamodb.DeleteItem": 1,  # the entry, once its mail was sent
        "sns.Publish": 1,
    }


def test_metrics_are_the_standard_four_and_the_health_checks_own(
    web: ThreadingHTTPServer, invoke: Invoke, sites: Sites, tls_web: ThreadingHTTPServer
) -> None:
    sites(", ".join([*urls(web, "/ok", "/error"), f"https://127.0.0.1:{tls_web.server_port}/ok"]))
    result = invoke()
    metrics = {k: v for k, v in result.items() if k[0].isupper()}
    assert metrics["CertificateDaysLeftMin"] == pytest.approx(3.0, abs=0.1)
    del metrics["CertificateDaysLeftMin"]
    # /error failed once: not DOWN yet (2 in a row), so no site is down: a zero is not sent.
    assert metrics == {
        "Checked": 3,
        "Changed": 0,
        "Skipped": 0,
        "Failed": 0,
        "SitesDown": 0,
        "SitesNotChecked": 0,
        "CertificatesExpiring": 1,  # 3 days left, under the default warning of 14
    }


def test_the_clock_not_the_event_says_when_a_site_went_down(
    web: ThreadingHTTPServer,
    invoke: Invoke,
    sites: Sites,
    mailbox: Mailbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (toggle,) = urls(web, "/toggle")
    sites(toggle)
    monkeypatch.setenv("FAILURES_BEFORE_DOWN", "1")
    web.healthy = False  # type: ignore[attr-defined]
    monkeypatch.setattr(runner, "clock", lambda: datetime(2030, 1, 1, 10, 0, tzinfo=UTC))
    invoke()  # the sample event says 2026-11-23 10:05
    web.healthy = True  # type: ignore[attr-defined]
    monkeypatch.setattr(runner, "clock", lambda: datetime(2030, 1, 1, 12, 30, tzinfo=UTC))
    invoke()
    recovered = mailbox()[-1]["body"]
    assert "was DOWN since 2030-01-01 10:00 UTC (2 h 30 min)" in recovered
    assert "2030-01-01 12:30 UTC" in recovered and "2026-11-23" not in recovered


def test_sites_not_reached_in_the_time_budget_are_skipped_and_untouched(
    health_env: dict[str, str],
    sites: Sites,
    states: States,
    scheduled: Callable[[], dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAILURES_BEFORE_DOWN", "1")
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        refused, stuck = "http://127.0.0.1:9/", f"http://127.0.0.1:{silent.getsockname()[1]}/"
        sites(f"{refused}, {stuck}")
        # 21 s left: the runner keeps 20 s in reserve, so the checks get 1 s (stuck's own timeout: 10 s)
        result = app.lambda_handler(scheduled(), FakeContext(remaining_ms=21_000))  # type: ignore[arg-type]
    assert (result["Checked"], result["Skipped"], result.get("SitesNotChecked", 0), result["Changed"]) == (
        1,
        1,
        1,
        1,
    )
    assert states() == {refused: "DOWN"}


def test_malformed_site_list_mails_once_and_checks_nothing(
    invoke: Invoke, sites: Sites, mailbox: Mailbox, web: ThreadingHTTPServer
) -> None:
    sites('[{"url": "https://ok.example.com"}, {"url": "ftp://nope"}]')
    result = invoke()
    assert (result["Failed"], result["Checked"]) == (1, 0)
    assert invoke()["Failed"] == 1  # still broken: the metric (and its alarm) says so every run ...
    (mail,) = mailbox()  # ... but the mail comes once
    assert "Site list is malformed" in mail["subject"] and "ftp://nope" in mail["body"]
    assert mail["attributes"]["severity"] == "critical"
    sites('[{"url": "ftp://still-bad"}]')  # a different mistake is a new mail
    invoke()
    assert len(mailbox()) == 2
    sites(f"http://127.0.0.1:{web.server_port}/ok")
    fixed = invoke()
    assert (fixed["Failed"], fixed["Checked"]) == (0, 1)
    assert store.CONFIG_ITEM not in store.load("health-state")
    sites("ftp://nope-again")
    invoke()
    assert len(mailbox()) == 3  # the complaint was forgotten with the fix: a new mistake mails


def test_missing_configuration_fails_loudly(
    health_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, scheduled: Callable[[], dict[str, Any]]
) -> None:
    monkeypatch.delenv("STATE_TABLE")
    with pytest.raises(ConfigError, match="STATE_TABLE"):
        app.lambda_handler(scheduled(), FakeContext())  # type: ignore[arg-type]


def test_out_of_range_configuration_names_the_variable(
    health_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, scheduled: Callable[[], dict[str, Any]]
) -> None:
    monkeypatch.setenv("FAILURES_BEFORE_DOWN", "0")
    with pytest.raises(ConfigError, match="FAILURES_BEFORE_DOWN=0 is below the minimum 1"):
        app.lambda_handler(scheduled(), FakeContext())  # type: ignore[arg-type]


def test_concurrent_runs_mail_a_transition_once(
    web: ThreadingHTTPServer,
    invoke: Invoke,
    sites: Sites,
    mailbox: Mailbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sites(f"http://127.0.0.1:{web.server_port}/toggle")
    web.healthy = False  # type: ignore[attr-defined]
    invoke()
    # Two overlapping runs (two schedule occurrences) read the same state; both decide DOWN;
    # only the first write wins and the other run stays silent about it.
    snapshot = store.load("health-state")
    monkeypatch.setattr(store, "load", lambda table: snapshot)
    first, second = invoke(), invoke()
    assert (first["Changed"], second["Changed"]) == (1, 0)
    assert len(mailbox()) == 1


def test_the_same_event_twice_is_one_run(
    web: ThreadingHTTPServer,
    invoke: Invoke,
    sites: Sites,
    mailbox: Mailbox,
    scheduled: Callable[[], dict[str, Any]],
    calls: CallRecorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAILURES_BEFORE_DOWN", "1")
    sites(f"http://127.0.0.1:{web.server_port}/error")
    event = scheduled()
    invoke(event)
    with CallRecorder() as again:
        assert invoke(event)["status"] == "duplicate"
    # the claim attempt (refused), and the look for a held mail to send (none)
    assert again.by_operation() == {"dynamodb.PutItem": 1, "dynamodb.Query": 1}
    assert len(mailbox()) == 1


def test_dry_run_checks_and_mails_the_same(
    web: ThreadingHTTPServer,
    invoke: Invoke,
    sites: Sites,
    states: States,
    mailbox: Mailbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DryRun changes nothing for the health check: it changes nothing in the account, and its
    state table is its own memory (without it, no site would ever fail twice in a row)."""
    monkeypatch.setenv("DRY_RUN", "true")
    (toggle,) = urls(web, "/toggle")
    sites(toggle)
    web.healthy = False  # type: ignore[attr-defined]
    invoke()
    result = invoke()
    assert result["dry_run"] is True and result["Changed"] == 1 and states() == {toggle: "DOWN"}
    (mail,) = mailbox()
    assert mail["subject"] == f"[ops-autopilot-test] DOWN: {toggle} - HTTP 503, expected 200-399"
    invoke()
    assert len(mailbox()) == 1


def test_the_owner_tag_key_is_irrelevant_here(
    web: ThreadingHTTPServer,
    invoke: Invoke,
    sites: Sites,
    calls: CallRecorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sites have no owner and the function writes no tag: OWNER_TAG_KEY only has to be valid."""
    monkeypatch.setenv("OWNER_TAG_KEY", "CreatedBy")
    sites(f"http://127.0.0.1:{web.server_port}/ok")
    assert invoke()["Checked"] == 1
    assert not [c for c in calls.calls if "Tag" in c.operation]


def test_credentials_in_a_site_url_reach_the_site_and_nothing_else(
    web: ThreadingHTTPServer,
    invoke: Invoke,
    sites: Sites,
    states: States,
    mailbox: Mailbox,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A site checked with a user and password and a heartbeat token in its URL: the request
    carries them, but the logs, the EMF metrics, the mails and the state table show the URL
    without them (issue 13: they leaked into all four)."""
    monkeypatch.setenv("PER_SITE_METRICS", "true")  # the per-site metrics name the site too
    port = web.server_port
    secret_url = f"http://alice:pw-s3cr3t@127.0.0.1:{port}/toggle?token=tok-0123456789&lang=en"
    dead = "http://bob:pw-0th3r@127.0.0.1:9/?api_key=key-9876543210"  # nothing listens on port 9
    sites(f"{secret_url}, {dead}")
    web.healthy = False  # type: ignore[attr-defined]
    capsys.readouterr()
    invoke()
    invoke()
    shown = f"http://127.0.0.1:{port}/toggle?token=***&lang=en"
    assert set(states()) == {shown, "http://127.0.0.1:9/?api_key=***"}
    mails = mailbox()
    assert [m["subject"] for m in mails] == ["[ops-autopilot-test] 2 sites changed state: 2 DOWN"]
    assert shown in mails[0]["body"] and "http://127.0.0.1:9/?api_key=***" in mails[0]["body"]
    printed = capsys.readouterr().out  # every log line and EMF document of both runs
    assert "127.0.0.1" in printed  # the sites are in the logs and metrics...
    seen = printed + "".join(m["subject"] + m["body"] for m in mails)
    for secret in ("pw-s3cr3t", "tok-0123456789", "pw-0th3r", "key-9876543210", "alice", "bob:"):
        assert secret not in seen, secret  # ... their secrets are not


def test_a_flapping_site_is_mailed_once_as_flapping_with_its_history_then_recovered(
    web: ThreadingHTTPServer, invoke: Invoke, sites: Sites, states: States, mailbox: Mailbox
) -> None:
    """503, 200, 503, 200...: never 2 failures in a row, so never DOWN - but 4 of 7 checks failed."""
    (toggle,) = urls(web, "/toggle")
    sites(toggle)
    results = []
    for check in range(8):  # fail, ok, fail, ok, fail, ok, fail, ok
        web.healthy = check % 2 == 1  # type: ignore[attr-defined]
        results.append(invoke())
    (mail,) = mailbox()
    assert mail["subject"] == f"[ops-autopilot-test] FLAPPING: {toggle} - HTTP 503, expected 200-399"
    assert mail["attributes"]["severity"] == "critical"
    assert (
        "failed 4 of its last 7 checks, never 2 in a row; oldest first: FAIL ok FAIL ok FAIL ok FAIL"
        in (mail["body"])
    )
    assert "reported RECOVERED after 10 good checks in a row" in mail["body"]
    assert [r.get("SitesDown", 0) for r in results] == [0, 0, 0, 0, 0, 0, 1, 1]  # the alarm's metric
    assert states() == {toggle: "FLAPPING"}
    web.healthy = True  # type: ignore[attr-defined]
    for _ in range(8):
        invoke()
    assert len(mailbox()) == 1  # 9 good checks since the last failure: the window is not clean yet
    assert invoke().get("SitesDown", 0) == 0
    recovered = mailbox()[-1]
    assert recovered["subject"] == f"[ops-autopilot-test] RECOVERED: {toggle}"
    assert "was FLAPPING since" in recovered["body"] and states() == {toggle: "UP"}
