"""Heartbeats (dead man's switch): a site entry {"heartbeat": id, "period", "grace"} gets a URL
(the heartbeat function's, a secret token in the path) made once into an SSM SecureString; a
ping with the right token records the clock's time; a missed period + grace is DOWN, the next
ping RECOVERED - one mail each, through the health check's states; a wrong token changes
nothing and is counted. The token is stored hashed and never logged.

The health check's handler on a simulated clock (scheduled runs every 5 minutes), the
heartbeat function's handler on function-URL events; SSM, DynamoDB and SNS are moto's."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from autopilot import runner
from conftest import REGION, FakeContext
from heartbeat import ping
from website_health_check import store
from website_health_check.decide import Site, SiteConfigError, Status, classify_heartbeat, parse_sites

BASE_URL = "https://abcdefghij.lambda-url.eu-west-1.on.aws/"
FOLDER = "/ops-autopilot-test/heartbeats"
T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
ENTRY = {"heartbeat": "nightly-backup", "period": "1d", "grace": "1h", "name": "Nightly backup"}


# -- the rules, pure -------------------------------------------------------------------------


@pytest.mark.unit
def test_a_heartbeat_entry_is_parsed_and_every_mistake_is_named() -> None:
    (site,) = parse_sites(json.dumps([ENTRY]))
    assert (site.url, site.kind, site.period_seconds, site.grace_seconds) == (
        "heartbeat:nightly-backup",
        "heartbeat",
        86400,
        3600,
    )
    bad = [
        {"heartbeat": "Nightly Backup", "period": "1d"},
        {"heartbeat": "x", "period": "1m"},
        {"heartbeat": "y", "period": "1d", "grace": "-1h"},
        {"heartbeat": "z", "period": "1d", "url": "https://example.com"},
    ]
    with pytest.raises(SiteConfigError) as err:
        parse_sites(json.dumps(bad))
    assert err.value.problems == [
        "site 1: heartbeat must be an id of lower-case letters, digits and -, at most 63",
        "heartbeat x: period must be a duration like 1h or 1d, between 5m and 35d",
        "heartbeat y: grace must be a duration like 30m (0 or more, at most 35d)",
        "site 4 has unknown field(s) url",
    ]


@pytest.mark.unit
def test_down_exactly_when_period_and_grace_have_passed_since_the_last_ping() -> None:
    site = Site("heartbeat:b", "b", kind="heartbeat", period_seconds=3600, grace_seconds=600)
    due = T0 + timedelta(seconds=4200)
    assert classify_heartbeat(site, T0, T0 - timedelta(days=3), due).status is Status.UP
    late = classify_heartbeat(site, T0, T0 - timedelta(days=3), due + timedelta(seconds=1))
    assert late.status is Status.DOWN
    assert late.reason == "no ping since 2026-12-01 02:00 UTC; expected every 1h, grace 10m"
    never = classify_heartbeat(site, None, T0, due + timedelta(seconds=1))
    assert never.reason.startswith("no ping at all since its URL was made (2026-12-01 02:00 UTC)")


# -- the handlers, in moto -------------------------------------------------------------------


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[datetime]:
    now = [T0]
    monkeypatch.setattr(runner, "clock", lambda: now[0])
    monkeypatch.setattr(ping, "clock", lambda: now[0])
    return now


@pytest.fixture
def heartbeat_env(
    health_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, sites: Callable[[str], None]
) -> Iterator[None]:
    monkeypatch.setenv("HEARTBEAT_URL", BASE_URL)
    monkeypatch.setenv("HEARTBEAT_PARAMETERS", FOLDER)
    sites(json.dumps([ENTRY]))
    yield


def url_of(heartbeat: str) -> str:
    value = boto3.client("ssm", region_name=REGION).get_parameter(
        Name=f"{FOLDER}/{heartbeat}", WithDecryption=True
    )["Parameter"]
    assert value["Type"] == "SecureString"
    return str(value["Value"])


def request(path: str, method: str = "GET") -> dict[str, Any]:
    """A function URL (payload 2.0) request, as Lambda hands it to the function."""
    return {
        "version": "2.0",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"user-agent": "curl/8.5.0"},
        "requestContext": {"http": {"method": method, "path": path, "sourceIp": "198.51.100.7"}},
        "isBase64Encoded": False,
    }


def ping_item() -> dict[str, Any]:
    item: dict[str, Any] = boto3.client("dynamodb", region_name=REGION).get_item(
        TableName="health-state", Key={"url": {"S": "ping#nightly-backup"}}
    )["Item"]
    return item


def run_every_5_minutes(
    invoke: Callable[..., dict[str, Any]], clock: list[datetime], until: datetime
) -> None:
    while clock[0] < until:
        clock[0] += timedelta(minutes=5)
        invoke()


@pytest.mark.integration
def test_missed_by_one_period_and_grace_one_down_then_the_next_ping_one_recovered(
    heartbeat_env: None,
    clock: list[datetime],
    invoke: Callable[..., dict[str, Any]],
    mailbox: Callable[[], list[dict[str, Any]]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)  # what the functions log (botocore logs requests at DEBUG)
    invoke()  # the first run makes the heartbeat's URL
    url = url_of("nightly-backup")
    assert url.startswith(f"{BASE_URL}nightly-backup/")
    token = url.rsplit("/", 1)[1]
    assert len(token) >= 40 and ping_item()["token_hash"]["S"] == store.token_hash(token)
    path = "/" + url.removeprefix(BASE_URL)

    assert ping.lambda_handler(request(path, "POST"), FakeContext())["statusCode"] == 200  # the job ran
    run_every_5_minutes(invoke, clock, T0 + timedelta(hours=25))  # the job's next run never comes
    assert mailbox() == []  # within period + grace: nothing
    run_every_5_minutes(invoke, clock, T0 + timedelta(hours=26))
    (down,) = mailbox()
    assert "DOWN: heartbeat:nightly-backup" in down["subject"]
    assert "no ping since 2026-12-01 02:00 UTC; expected every 1d, grace 1h" in down["body"]
    run_every_5_minutes(invoke, clock, T0 + timedelta(hours=30))  # still missing: no second mail
    assert len(mailbox()) == 1

    assert ping.lambda_handler(request(path), FakeContext())["statusCode"] == 200  # late, but it ran
    assert ping_item()["last_ping"]["S"] == clock[0].isoformat()  # the clock's time
    run_every_5_minutes(invoke, clock, clock[0] + timedelta(minutes=15))
    mails = mailbox()
    assert len(mails) == 2 and "RECOVERED: heartbeat:nightly-backup" in mails[1]["subject"]
    assert "heartbeat ping" in [r.getMessage() for r in caplog.records]  # the log lines are there ...
    assert token not in " ".join(str(r.__dict__) for r in caplog.records)  # ... the token never


@pytest.mark.integration
def test_a_thousand_wrong_tokens_change_nothing_and_are_counted(
    heartbeat_env: None,
    clock: list[datetime],
    invoke: Callable[..., dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    invoke()
    token = url_of("nightly-backup").rsplit("/", 1)[1]
    counted: list[str] = []
    monkeypatch.setattr(ping.metrics, "add_metric", lambda name, unit, value: counted.append(name))
    table = boto3.client("dynamodb", region_name=REGION)
    before = table.scan(TableName="health-state")["Items"]
    guesses = [f"/nightly-backup/{token[:-1]}{'A' if token[-1] != 'A' else 'B'}"]  # one character off
    guesses += [f"/nightly-backup/{'x' * 43}", f"/other/{token}", f"/nightly-backup/{token}/more", "/", ""]
    statuses = [
        ping.lambda_handler(request(guesses[n % len(guesses)]), FakeContext())["statusCode"]
        for n in range(999)
    ]
    statuses.append(
        ping.lambda_handler(request(f"/nightly-backup/{token}", "DELETE"), FakeContext())["statusCode"]
    )
    assert set(statuses) == {404} and counted == ["WrongHeartbeatTokens"] * 1000
    assert table.scan(TableName="health-state")["Items"] == before  # 0 state changes


@pytest.mark.integration
def test_a_second_run_makes_no_second_url_and_a_run_killed_after_the_url_keeps_it(
    heartbeat_env: None,
    clock: list[datetime],
    invoke: Callable[..., dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from website_health_check import store as state

    real = state.provision_ping

    def dies(*args: Any, **kwargs: Any) -> bool:
        raise TimeoutError("killed after the SecureString, before the ping item")

    monkeypatch.setattr(state, "provision_ping", dies)
    with pytest.raises(TimeoutError):
        invoke()
    url = url_of("nightly-backup")
    monkeypatch.setattr(state, "provision_ping", real)
    clock[0] += timedelta(minutes=20)  # past the dead run's lease: the next run finishes it
    invoke()
    invoke()
    assert url_of("nightly-backup") == url  # one URL, the first one
    assert ping_item()["token_hash"]["S"] == store.token_hash(url.rsplit("/", 1)[1])


@pytest.mark.unit
def test_the_heartbeat_function_may_only_read_and_update_ping_items() -> None:
    """Its role: exactly the calls ping.py makes, on the ping items of the health check's table
    only (a public URL's code must not reach the sites' states, the topic or anything else)."""
    from template_tools import expanded_template

    resources = expanded_template()["Resources"]
    (statement,) = resources["HeartbeatFunctionRole"]["Properties"]["Policies"][0]["PolicyDocument"][
        "Statement"
    ]
    assert set(statement["Action"]) == {a for a in ping.PERMISSIONS}
    assert statement["Resource"] == {"Fn::GetAtt": ["WebsiteHealthCheckStateTable", "Arn"]}
    assert statement["Condition"]["ForAllValues:StringLike"] == {"dynamodb:LeadingKeys": ["ping#*"]}
    assert statement["Condition"]["Null"] == {"dynamodb:LeadingKeys": "false"}
    function = resources["HeartbeatFunction"]["Properties"]
    assert function["Handler"] == "heartbeat.ping.lambda_handler" and function["FunctionUrlConfig"] == {
        "AuthType": "NONE"
    }
