"""End to end with moto: the handler, its SSM site list, its DynamoDB state, its mails."""

from __future__ import annotations

from collections.abc import Callable
from http.server import ThreadingHTTPServer
from typing import Any

import boto3
import pytest

from autopilot.recorder import CallRecorder
from conftest import REGION, FakeContext
from website_health_check import app, store

pytestmark = pytest.mark.integration
PARAM = "/ops-autopilot-test/website-health-check/sites"


@pytest.fixture
def health_env(stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    table = boto3.client("dynamodb", region_name=REGION).create_table(
        TableName="health-state",
        AttributeDefinitions=[{"AttributeName": "url", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "url", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )["TableDescription"]["TableName"]
    env = {
        "SITES_PARAMETER": PARAM,
        "STATE_TABLE": table,
        "FAILURES_BEFORE_DOWN": "2",
        "CERT_WARNING_DAYS": "14",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return {**stack_env, **env}


def set_sites(text: str) -> None:
    boto3.client("ssm", region_name=REGION).put_parameter(
        Name=PARAM, Value=text, Type="String", Overwrite=True
    )


Invoke = Callable[[], dict[str, Any]]


@pytest.fixture
def invoke(health_env: dict[str, str], load_event: Callable[[str], dict[str, Any]]) -> Invoke:
    event = load_event("website_health_check/eventbridge.scheduled")
    return lambda: app.lambda_handler(event, FakeContext())  # type: ignore[arg-type]


def test_down_after_two_failures_once_then_recovered(
    web: ThreadingHTTPServer, invoke: Invoke, mailbox: Callable[[], list[dict[str, Any]]]
) -> None:
    ok, toggle = f"http://127.0.0.1:{web.server_port}/ok", f"http://127.0.0.1:{web.server_port}/toggle"
    set_sites(f"{ok}, {toggle}")
    assert invoke()["down"] == 0 and mailbox() == []
    web.healthy = False  # type: ignore[attr-defined]
    assert invoke()["down"] == 1 and mailbox() == []  # one failed check: could be a blip
    result = invoke()
    assert result["transitions"] == [f"DOWN {toggle}"]
    (mail,) = mailbox()
    assert mail["subject"] == f"[ops-autopilot-test] DOWN: {toggle} - HTTP 503, expected 200-399"
    assert mail["attributes"] == {"automation": "website_health_check", "severity": "critical"}
    assert "failed 2 checks in a row" in mail["body"] and ok not in mail["body"]
    invoke()
    invoke()
    assert len(mailbox()) == 1  # still down: no new mail
    web.healthy = True  # type: ignore[attr-defined]
    assert invoke()["transitions"] == [f"RECOVERED {toggle}"]
    recovered = mailbox()[-1]
    assert recovered["subject"] == f"[ops-autopilot-test] RECOVERED: {toggle}"
    assert recovered["attributes"]["severity"] == "info" and "was DOWN since" in recovered["body"]
    invoke()
    assert len(mailbox()) == 2


def test_healthy_runs_write_nothing_and_cost_three_calls(
    web: ThreadingHTTPServer, invoke: Invoke, calls: CallRecorder
) -> None:
    set_sites(", ".join(f"http://127.0.0.1:{web.server_port}/ok?{i}" for i in range(20)))
    invoke()
    assert calls.by_operation() == {"ssm.GetParameter": 1, "dynamodb.Scan": 1}


def test_malformed_site_list_mails_once_and_checks_nothing(
    invoke: Invoke, mailbox: Callable[[], list[dict[str, Any]]], web: ThreadingHTTPServer
) -> None:
    set_sites('[{"url": "https://ok.example.com"}, {"url": "ftp://nope"}]')
    assert invoke()["status"] == "config_error"
    invoke()
    (mail,) = mailbox()
    assert "Site list is malformed" in mail["subject"] and "ftp://nope" in mail["body"]
    set_sites('[{"url": "ftp://still-bad"}]')  # a different mistake is a new mail
    invoke()
    assert len(mailbox()) == 2
    set_sites(f"http://127.0.0.1:{web.server_port}/ok")
    assert invoke()["status"] == "ok"
    assert store.CONFIG_ITEM not in store.load("health-state")


def test_malformed_event_changes_nothing(health_env: dict[str, str], calls: CallRecorder) -> None:
    result = app.lambda_handler({"detail-type": "Scheduled Event"}, FakeContext())  # type: ignore[arg-type]
    assert result["status"] == "ignored" and "source" in result["reason"]
    assert calls.calls == []


def test_an_event_of_another_kind_is_ignored(
    health_env: dict[str, str], load_event: Callable[[str], dict[str, Any]], calls: CallRecorder
) -> None:
    event = load_event("website_health_check/eventbridge.not_a_schedule")
    assert app.lambda_handler(event, FakeContext())["status"] == "ignored"  # type: ignore[arg-type]
    assert calls.calls == []


def test_missing_configuration_fails_loudly(
    health_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STATE_TABLE")
    with pytest.raises(Exception, match="STATE_TABLE"):
        app.lambda_handler({}, FakeContext())  # type: ignore[arg-type]


def test_concurrent_runs_mail_a_transition_once(
    web: ThreadingHTTPServer,
    health_env: dict[str, str],
    mailbox: Callable[[], list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
    load_event: Callable[[str], dict[str, Any]],
) -> None:
    set_sites(f"http://127.0.0.1:{web.server_port}/toggle")
    web.healthy = False  # type: ignore[attr-defined]
    event = load_event("website_health_check/eventbridge.scheduled")
    app.lambda_handler(event, FakeContext())  # type: ignore[arg-type]
    # Two overlapping runs read the same state; both decide DOWN; only the first write wins.
    snapshot = store.load("health-state")
    monkeypatch.setattr(store, "load", lambda table: snapshot)
    app.lambda_handler(event, FakeContext())  # type: ignore[arg-type]
    app.lambda_handler(event, FakeContext())  # type: ignore[arg-type]
    assert len(mailbox()) == 1


def test_a_failed_mail_is_retried_not_lost(
    web: ThreadingHTTPServer,
    invoke: Invoke,
    mailbox: Callable[[], list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_sites(f"http://127.0.0.1:{web.server_port}/toggle")
    web.healthy = False  # type: ignore[attr-defined]
    invoke()

    def broken_publish(*args: object, **kwargs: object) -> str:
        raise RuntimeError("SNS unavailable")

    with monkeypatch.context() as patch:
        patch.setattr("autopilot.notify.publish", broken_publish)
        with pytest.raises(RuntimeError):
            invoke()  # the invocation fails (Errors alarm, Lambda retries it) ...
    # ... and the state was rolled back, so the retry still mails DOWN.
    assert invoke()["transitions"] == [f"DOWN http://127.0.0.1:{web.server_port}/toggle"]
    assert len(mailbox()) == 1
