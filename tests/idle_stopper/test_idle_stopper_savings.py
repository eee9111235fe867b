"""Money saved (issue 17): every stop the stack made is remembered; when its instance runs again,
the hours it stayed stopped times its on-demand price are added to the month's ledger, per owner;
the first run of the next month mails the ledger (operators: every owner; each owner: their own
line through SES) and every closing run sends SavedDollars (the dashboard's "Money saved").

Prices: the Price List API (pricing:GetProducts; moto has none - it answers 404, so the handler
tests take the bundled table, labelled), parsed from a recorded answer's shape here."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto.ses.models import ses_backends

from idle_stopper import app, service
from idle_stopper.decide import (
    MAX_COUNTED,
    STAMP,
    STOPPED,
    Closed,
    Instance,
    add_to_ledger,
    close_stops,
    previous_month,
    read_ledger,
    stop_records,
    write_ledger,
)
from tests.idle_stopper.conftest import ACCOUNT, NOW, REGION

SENDER = "ops-autopilot@example.com"


def box(instance_id: str, started: datetime, **tags: str) -> Instance:
    return Instance(instance_id, started, instance_type="t3.micro", tags=tags)


# -- the arithmetic, pure --------------------------------------------------------------------


@pytest.mark.unit
def test_a_stop_closes_when_its_instance_runs_again_and_only_then() -> None:
    stopped = stop_records([box("i-1", NOW - timedelta(days=3), Owner="alice")], NOW, "Owner", "Team")
    assert stopped == {STOPPED + "i-1": [NOW.strftime(STAMP), "t3.micro", "alice", ""]}
    later = NOW + timedelta(hours=50)
    # still stopped: open
    closed, still, _ = close_stops(stopped, {}, later)
    assert closed == [] and still == stopped
    # started again 50 h after the stop: 50 h saved
    closed, still, _ = close_stops(
        stopped, {"i-1": box("i-1", later, Owner="alice")}, later + timedelta(hours=1)
    )
    assert closed == [Closed("i-1", "alice", "", "t3.micro", 50.0)] and still == {}
    # running with a start before the stop: the stop never happened - nothing saved
    closed, still, unconfirmed = close_stops(stopped, {"i-1": box("i-1", NOW - timedelta(days=3))}, later)
    assert closed == [] and still == {} and unconfirmed == stopped
    # never seen running again: counted to MAX_COUNTED, then closed
    closed, _, _ = close_stops(stopped, {}, NOW + MAX_COUNTED)
    assert [c.hours for c in closed] == [MAX_COUNTED.total_seconds() / 3600]
    # an unreadable record is forgotten, never guessed
    assert close_stops({STOPPED + "i-2": "yesterday"}, {}, later) == ([], {}, {})


@pytest.mark.unit
def test_the_ledger_adds_hours_times_price_per_owner_and_keeps_unpriced_hours_apart() -> None:
    ledger: dict[tuple[str, str], list[float]] = {}
    closed = [
        Closed("i-1", "alice", "", "t3.micro", 50.0),
        Closed("i-2", "alice", "", "m5.large", 10.0),
        Closed("i-3", "bob", "payments", "x9.huge", 7.0),
    ]
    added = add_to_ledger(ledger, closed, {"t3.micro": 0.0104, "m5.large": 0.096, "x9.huge": None})
    assert added == pytest.approx(50 * 0.0104 + 10 * 0.096)
    assert ledger[("alice", "")] == pytest.approx([60.0, 1.48, 0.0])
    assert ledger[("bob", "payments")] == [7.0, 0.0, 7.0]
    again = read_ledger(write_ledger(ledger))
    assert again.keys() == ledger.keys()
    assert all(again[k] == pytest.approx(ledger[k]) for k in ledger)
    assert previous_month(datetime(2026, 1, 1, 0, 5, tzinfo=UTC)) == "2025-12"


@pytest.mark.integration  # the service room's parser (no call made)
def test_the_price_is_read_from_a_price_list_answer() -> None:
    product = {
        "product": {"attributes": {"instanceType": "t3.micro", "regionCode": "eu-west-1"}},
        "terms": {
            "OnDemand": {
                "ABC.JRTCKXETXF": {
                    "priceDimensions": {
                        "ABC.JRTCKXETXF.6YS6EN2CT7": {
                            "unit": "Hrs",
                            "pricePerUnit": {"USD": "0.0114000000"},
                            "description": "$0.0114 per On Demand Linux t3.micro Instance Hour",
                        }
                    }
                }
            }
        },
    }
    assert service.price_from_products([json.dumps(product)]) == 0.0114
    assert service.price_from_products(["not json", json.dumps({"terms": {}})]) is None


# -- the handler -----------------------------------------------------------------------------


@pytest.fixture
def mailing(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    boto3.client("ses", region_name=REGION).verify_email_identity(EmailAddress=SENDER)
    monkeypatch.setenv("MAIL_FROM", SENDER)


@pytest.mark.integration
def test_a_stop_started_again_is_priced_once_and_mailed_in_next_months_ledger(
    mailing: None,
    clock: Callable[[datetime], None],
    new_event: Callable[[], dict[str, Any]],
    ec2: Any,
    mailbox: Callable[[], list[dict[str, Any]]],
    calls: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)

    def run(when: datetime, *idle: str) -> dict[str, Any]:
        clock(when)
        for instance_id in idle:
            ec2.write_metrics(instance_id, now=when)
        result: dict[str, Any] = app.lambda_handler(new_event(), ec2.context(f"r-{when:%d%H%M}"))
        return result

    alice = ec2.launch("alice-box", tags={"Owner": "alice@example.com"})[0]
    carol = ec2.launch("carol-box", tags={"Owner": "carol"})[0]  # the same type, no address
    assert run(NOW, alice, carol)["Changed"] == 2 and ec2.states()[alice] == "stopped"

    def start(instance_id: str, when: datetime) -> None:
        boto3.client("ec2", region_name=REGION).start_instances(InstanceIds=[instance_id])
        ec2.backend_instance(instance_id).launch_time = when.replace(tzinfo=None)  # EC2: the last start

    restarted = NOW + timedelta(hours=50)
    start(alice, restarted)
    result = run(restarted + timedelta(hours=1))  # not idle yet (too young since its start)
    assert result["SavedDollars"] == pytest.approx(round(50 * service.BUNDLED_PRICES["t3.micro"], 2))
    assert calls.count("pricing", "GetProducts") == 1  # moto has no Price List: the bundled table
    start(carol, NOW + timedelta(hours=10 * 24))
    assert run(NOW + timedelta(hours=10 * 24 + 1))["SavedDollars"] == pytest.approx(2.5, abs=0.01)
    assert calls.count("pricing", "GetProducts") == 1  # the type's price is cached for the month
    # one "money saved" line per closed stop: the dashboard's per-owner table sums them
    saved = [r.__dict__ for r in caplog.records if r.getMessage() == "money saved"]
    assert [(s["owner"], s["hours"], s["dollars"]) for s in saved] == [
        ("alice@example.com", 50.0, pytest.approx(0.52, abs=0.001)),
        ("carol", 240.0, pytest.approx(2.496, abs=0.001)),
    ]

    before = len(mailbox())
    run(datetime(2026, 4, 1, 0, 30, tzinfo=UTC))  # the first run of April
    mails = mailbox()[before:]
    assert len(mails) == 1 and "Money saved in 2026-03: $3.02" in mails[0]["subject"]
    assert "- alice@example.com: 50.0 h stopped, $0.52" in mails[0]["body"]
    assert "- carol: 240.0 h stopped, $2.50" in mails[0]["body"]
    assert "bundled table (us-east-1 list prices)" in mails[0]["body"]
    owner = [m for m in ses_backends[ACCOUNT][REGION].sent_messages if "Money" in m.body]
    assert [m.destinations["ToAddresses"] for m in owner] == [["alice@example.com"]]
    run(datetime(2026, 4, 1, 1, 30, tzinfo=UTC))
    assert len(mailbox()) == before + 1  # mailed once


@pytest.mark.integration
def test_a_dry_run_records_no_stop_and_saves_nothing(
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    clock: Callable[[datetime], None],
    new_event: Callable[[], dict[str, Any]],
    ec2: Any,
) -> None:
    monkeypatch.setenv("DRY_RUN", "true")
    alice = ec2.launch("alice-box", tags={"Owner": "alice@example.com"})[0]
    ec2.write_metrics(alice)
    clock(NOW)
    app.lambda_handler(new_event(), ec2.context("r-1"))
    clock(NOW + timedelta(hours=3))
    result = app.lambda_handler(new_event(), ec2.context("r-2"))
    assert result["SavedDollars"] == 0 and ec2.states()[alice] == "running"
