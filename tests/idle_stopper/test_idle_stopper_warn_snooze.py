"""Warn, then act; a snooze that expires; owners hear about their own instances first (issue 17).

- the rules, pure: snooze parsing, its maximum from first sight, the warning step (and, as a
  property, "nothing is stopped before the planned time the stack itself recorded");
- the handler in moto over SIMULATED hours (the runner's clock moved, metrics written for each
  run's window): a warning, no stop before the planned time, a stop at it; an instance busy
  again unmarked; a snooze keeping one running until its date and not a minute after; two
  owners each getting one digest about only their instances through SES while the operators'
  digest lists every instance; an SES refusal keeping the owner digest for the next attempt
  without sending the operators' twice.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autopilot.outbox import OutboxError
from conftest import ROUTING_PARAMETER, SENDER, OwnerMail
from idle_stopper import app
from idle_stopper.decide import (
    PLANNED_TAG,
    STAMP,
    WARN,
    WARN_DRY,
    Assessment,
    BadSnooze,
    Instance,
    Outcome,
    Policy,
    parse_snooze,
    snooze_state,
    warn_first,
)
from tests.idle_stopper.conftest import NOW, REGION

DAY = timedelta(days=1)
POLICY = Policy(warning=timedelta(hours=24), max_snooze=timedelta(days=14))


# -- the rules, pure -------------------------------------------------------------------------


def box(instance_id: str = "i-0a", **tags: str) -> Instance:
    return Instance(instance_id, NOW - timedelta(days=3), tags=tags)


def candidate(instance_id: str = "i-0a") -> Assessment:
    return Assessment(box(instance_id), Outcome.STOP_IDLE, "quiet in 24 of the last 24 hours")


@pytest.mark.unit
def test_a_snooze_reads_a_date_or_a_zoned_time_and_nothing_else() -> None:
    assert parse_snooze("2026-12-24") == datetime(2026, 12, 24, tzinfo=UTC)
    assert parse_snooze("2026-12-24T18:00Z") == datetime(2026, 12, 24, 18, 0, tzinfo=UTC)
    assert parse_snooze("2026-12-24T19:00+01:00") == datetime(2026, 12, 24, 18, 0, tzinfo=UTC)
    for bad in ("next friday", "2026-12-24T18:00", "24/12/2026", ""):
        with pytest.raises(BadSnooze):
            parse_snooze(bad)


@pytest.mark.unit
def test_a_snooze_holds_until_its_date_never_past_the_maximum_from_first_sight() -> None:
    tag = {"AutoStop": "snooze-until:2026-03-15"}
    active = snooze_state(box(**tag), None, POLICY, NOW)
    assert (
        active is not None and active.state == "active" and active.until == datetime(2026, 3, 15, tzinfo=UTC)
    )
    ended = snooze_state(box(**tag), active.memory, POLICY, datetime(2026, 3, 15, tzinfo=UTC))
    assert ended is not None and ended.state == "expired" and ended.news
    told = snooze_state(box(**tag), ended.memory, POLICY, datetime(2026, 3, 16, tzinfo=UTC))
    assert told is not None and told.state == "expired" and not told.news  # reported once
    # 30 days ahead with a 14-day maximum: not honoured - and not later either, when the date
    # comes within 14 days of a later run (the maximum counts from when it was first seen).
    far = {"AutoStop": "snooze-until:2026-04-09"}
    first = snooze_state(box(**far), None, POLICY, NOW)
    assert first is not None and first.state == "invalid" and "beyond the maximum of 14 days" in first.why
    later = snooze_state(box(**far), first.memory, POLICY, NOW + timedelta(days=20))
    assert later is not None and later.state == "invalid" and not later.news
    # a new value is a new snooze, judged from now
    moved = snooze_state(
        box(AutoStop="snooze-until:2026-04-09"), "snooze-until:2026-04-01|x|", POLICY, NOW + 20 * DAY
    )
    assert moved is not None and moved.state == "active"
    garbled = snooze_state(box(AutoStop="snooze-until:soon"), None, POLICY, NOW)
    assert garbled is not None and garbled.state == "invalid" and garbled.news


@pytest.mark.unit
def test_the_warning_step_warns_waits_stops_when_due_and_unmarks() -> None:
    first = warn_first([candidate()], {}, POLICY, NOW, dry_run=False)
    (a,) = first.concluded
    assert a.outcome is Outcome.WARNED and not a.stops
    planned = (NOW + timedelta(hours=24)).replace(second=0, microsecond=0)
    assert [(w.instance.instance_id, at) for w, at in first.new] == [("i-0a", planned)]
    assert first.memory == {WARN + "i-0a": planned.strftime(STAMP)}
    early = warn_first([candidate()], first.memory, POLICY, planned - timedelta(minutes=1), dry_run=False)
    assert not early.concluded[0].stops and early.new == [] and len(early.waiting) == 1
    due = warn_first([candidate()], first.memory, POLICY, planned, dry_run=False)
    assert due.concluded[0].stops
    busy = Assessment(box(), Outcome.BUSY, "CPU at or above 10% in 5 of the last 24 hours")
    gone = warn_first([busy], first.memory, POLICY, NOW + timedelta(hours=3), dry_run=False)
    assert [(a.instance.instance_id, why) for a, why in gone.unmark] == [("i-0a", busy.reason)]
    assert gone.memory == {}
    # a dry run's warnings are its own: they never make a real run's stop come sooner
    dry = warn_first([candidate()], {}, POLICY, NOW, dry_run=True)
    assert set(dry.memory) == {WARN_DRY + "i-0a"}
    assert not warn_first([candidate()], dry.memory, POLICY, planned, dry_run=False).concluded[0].stops
    # warning 0: today's behaviour
    assert warn_first([candidate()], {}, Policy(), NOW, dry_run=False).concluded[0].stops


@pytest.mark.unit
@settings(max_examples=300, deadline=None)
@given(
    planned_minutes=st.one_of(st.none(), st.integers(min_value=-3000, max_value=3000)),
    outcome=st.sampled_from([Outcome.STOP_IDLE, Outcome.STOP_LIFETIME, Outcome.BUSY, Outcome.SNOOZED]),
    forged_tag=st.booleans(),
)
def test_nothing_is_stopped_before_the_planned_time_the_stack_recorded(
    planned_minutes: int | None, outcome: Outcome, forged_tag: bool
) -> None:
    """Whatever the memory says and whatever a tagger wrote on the instance (a planned-stop
    tag in the past), a candidate stays a stop only when the stack's own record of its warning
    is due; and every candidate still to stop has such a record."""
    tags = {PLANNED_TAG: "2000-01-01T00:00:00Z"} if forged_tag else {}
    a = Assessment(Instance("i-0a", NOW - 3 * DAY, tags=tags), outcome, "why")
    memory = (
        {}
        if planned_minutes is None
        else {WARN + "i-0a": (NOW + timedelta(minutes=planned_minutes)).strftime(STAMP)}
    )
    result = warn_first([a], memory, POLICY, NOW, dry_run=False)
    for after in result.concluded:
        if after.stops:
            assert planned_minutes is not None and planned_minutes <= 0
            assert result.memory[WARN + "i-0a"] <= NOW.strftime(STAMP)
    if outcome.value.startswith("Stop") and (planned_minutes is None or planned_minutes > 0):
        assert not result.concluded[0].stops


# -- the handler, over simulated hours -------------------------------------------------------


Sent = OwnerMail  # the mails SES accepted in moto, as (to, subject, body)


@pytest.fixture
def routed_env(env: dict[str, str], owner_mail: OwnerMail, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Routing on (conftest's owner_mail: the map by team), and a 24 h warning."""
    monkeypatch.setenv("WARNING_HOURS", "24")
    return {**env, "WARNING_HOURS": "24", "MAIL_FROM": SENDER, "MAIL_ROUTING_PARAMETER": ROUTING_PARAMETER}


def run_at(
    when: datetime,
    clock: Callable[[datetime], None],
    new_event: Callable[[], dict[str, Any]],
    ec2: Any,
    idle: list[str],
    busy: list[str] = (),  # type: ignore[assignment]
) -> dict[str, Any]:
    """One hourly run at ``when`` (SIMULATED): each instance's metrics for that run's window."""
    clock(when)
    for instance_id in idle:
        ec2.write_metrics(instance_id, now=when)
    for instance_id in busy:
        ec2.write_metrics(instance_id, now=when, cpu=60.0)
    result: dict[str, Any] = app.lambda_handler(new_event(), ec2.context(f"r-{when:%d%H%M}"))
    return result


@pytest.mark.integration
def test_warned_then_stopped_at_the_planned_time_and_each_owner_gets_one_digest_of_their_own(
    routed_env: dict[str, str],
    clock: Callable[[datetime], None],
    new_event: Callable[[], dict[str, Any]],
    ec2: Any,
    mailbox: Callable[[], list[dict[str, Any]]],
) -> None:
    alice = ec2.launch("alice-box", tags={"Owner": "alice@example.com"})[0]
    alice2 = ec2.launch("alice-box-2", tags={"Owner": "alice@example.com"})[0]
    bob = ec2.launch("bob-box", tags={"Owner": "bob", "Team": "payments"})[0]  # the map, by team
    carol = ec2.launch("carol-box", tags={"Owner": "carol"})[0]  # nobody to route to: operators only
    boxes, sent = [alice, alice2, bob, carol], Sent()

    run_at(NOW, clock, new_event, ec2, boxes)
    assert set(ec2.states().values()) == {"running"}  # warned, not stopped
    planned = (NOW + timedelta(hours=24)).replace(second=0, microsecond=0).strftime(STAMP)
    assert {ec2.tags_of(i)[PLANNED_TAG] for i in boxes} == {planned}
    (operators,) = mailbox()
    assert "4 instances warned: stop planned" in operators["subject"]
    assert all(i in operators["body"] for i in boxes)  # the operators' digest lists everyone's
    to = [m[0] for m in sent()]
    assert sorted(to) == ["alice@example.com", "payments-oncall@example.com"]  # one digest each
    mails = {m[0]: m for m in sent()}
    assert alice in mails["alice@example.com"][2] and alice2 in mails["alice@example.com"][2]
    assert bob not in mails["alice@example.com"][2] and carol not in mails["alice@example.com"][2]
    assert (
        bob in mails["payments-oncall@example.com"][2]
        and alice not in mails["payments-oncall@example.com"][2]
    )
    assert "AutoStop=snooze-until:<date>" in mails["alice@example.com"][2]
    assert mails["alice@example.com"][1].endswith("Your instances: 2 instances to be stopped")

    # 12 h later bob's box is busy again: unmarked and told; nothing stops; no repeat warning
    run_at(NOW + timedelta(hours=12), clock, new_event, ec2, [alice, alice2, carol], busy=[bob])
    assert PLANNED_TAG not in ec2.tags_of(bob) and set(ec2.states().values()) == {"running"}
    assert [m[0] for m in sent()][2:] == ["payments-oncall@example.com"]
    assert "No longer to be stopped" in sent()[2][2]
    # a minute before the planned time: still nothing stops
    run_at(
        NOW + timedelta(hours=24) - timedelta(minutes=1) - timedelta(seconds=NOW.second),
        clock,
        new_event,
        ec2,
        [alice, alice2, carol],
        busy=[bob],
    )
    assert set(ec2.states().values()) == {"running"}
    # at the planned time the ones still idle stop, and the planned-stop tag is gone
    run_at(NOW + timedelta(hours=24), clock, new_event, ec2, [alice, alice2, carol], busy=[bob])
    states = ec2.states()
    assert {i for i in boxes if states[i] != "running"} == {alice, alice2, carol}
    assert PLANNED_TAG not in ec2.tags_of(alice) and ec2.tags_of(alice)["StoppedReason"] == "idle"
    assert sent()[-1][0] == "alice@example.com" and "Stopped" in sent()[-1][2]
    assert "3 instances stopped" in mailbox()[-1]["subject"]


@pytest.mark.integration
def test_a_snooze_keeps_an_idle_instance_running_until_its_date_and_not_a_minute_after(
    env: dict[str, str],
    clock: Callable[[datetime], None],
    new_event: Callable[[], dict[str, Any]],
    ec2: Any,
    mailbox: Callable[[], list[dict[str, Any]]],
) -> None:
    until = (NOW + timedelta(hours=30)).replace(minute=0, second=0, microsecond=0)
    snoozed = ec2.launch("snoozed-box", tags={"AutoStop": f"snooze-until:{until:%Y-%m-%dT%H:%MZ}"})[0]
    for hours in (0, 10, 29):
        run_at(NOW + timedelta(hours=hours), clock, new_event, ec2, [snoozed])
        assert ec2.states()[snoozed] == "running", hours
    run_at(until - timedelta(minutes=1), clock, new_event, ec2, [snoozed])
    assert ec2.states()[snoozed] == "running"
    run_at(until, clock, new_event, ec2, [snoozed])  # warning off here: stopped at once
    assert ec2.states()[snoozed] != "running"
    body = mailbox()[-1]["body"]
    assert "snooze ended" in body and snoozed in body


@pytest.mark.integration
def test_an_owner_digest_ses_refused_is_kept_and_sent_later_without_repeating_the_operators(
    routed_env: dict[str, str],
    clock: Callable[[datetime], None],
    new_event: Callable[[], dict[str, Any]],
    ec2: Any,
    mailbox: Callable[[], list[dict[str, Any]]],
) -> None:
    box_id = ec2.launch("alice-box", tags={"Owner": "alice@example.com"})[0]
    boto3.client("ses", region_name=REGION).delete_identity(Identity=SENDER)  # SES refuses
    sent = Sent()
    with pytest.raises(OutboxError, match="not accepted"):  # the run fails loudly (Errors alarm)
        run_at(NOW, clock, new_event, ec2, [box_id])
    assert sent() == [] and len(mailbox()) == 1  # the operators' digest went; the owner's is kept
    boto3.client("ses", region_name=REGION).verify_email_identity(EmailAddress=SENDER)
    run_at(NOW + timedelta(minutes=5), clock, new_event, ec2, [box_id])  # the next run finishes it
    assert [m[0] for m in sent()] == ["alice@example.com"]
    assert len(mailbox()) == 1  # the operators' digest was not sent a second time


@pytest.mark.integration
def test_a_malformed_routing_map_is_reported_and_owners_with_an_address_still_hear(
    routed_env: dict[str, str],
    clock: Callable[[datetime], None],
    new_event: Callable[[], dict[str, Any]],
    ec2: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    caplog.set_level(logging.INFO)
    boto3.client("ssm", region_name=REGION).put_parameter(
        Name=routed_env["MAIL_ROUTING_PARAMETER"],
        Type="String",
        Value='{"payments": "not-an-address"}',
        Overwrite=True,
    )
    alice = ec2.launch("alice-box", tags={"Owner": "alice@example.com"})[0]
    bob = ec2.launch("bob-box", tags={"Owner": "bob", "Team": "payments"})[0]
    run_at(NOW, clock, new_event, ec2, [alice, bob])
    assert [m[0] for m in Sent()()] == ["alice@example.com"]  # no map entry guessed
    assert "routing map unusable: owner digests only for owner tags that are addresses" in [
        r.getMessage() for r in caplog.records
    ]


@pytest.mark.integration
def test_sns_refusing_the_operators_digest_resends_it_but_not_the_owner_digest_ses_took(
    routed_env: dict[str, str],
    clock: Callable[[datetime], None],
    new_event: Callable[[], dict[str, Any]],
    ec2: Any,
    mailbox: Callable[[], list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from autopilot import runner

    box_id = ec2.launch("alice-box", tags={"Owner": "alice@example.com"})[0]
    real = runner.publish

    def refused(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("SNS is down")

    monkeypatch.setattr(runner, "publish", refused)
    with pytest.raises(OutboxError):
        run_at(NOW, clock, new_event, ec2, [box_id])
    assert [m[0] for m in Sent()()] == ["alice@example.com"] and mailbox() == []
    monkeypatch.setattr(runner, "publish", real)
    run_at(NOW + timedelta(minutes=5), clock, new_event, ec2, [box_id])
    assert [m[0] for m in Sent()()] == ["alice@example.com"]  # not a second time
    assert len(mailbox()) == 1  # the operators' digest, now


@pytest.mark.integration
def test_a_dry_run_warns_only_the_operators_and_tags_nothing(
    routed_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    clock: Callable[[datetime], None],
    new_event: Callable[[], dict[str, Any]],
    ec2: Any,
    mailbox: Callable[[], list[dict[str, Any]]],
    calls: Any,
) -> None:
    """PRODUCT.md rule 3 on the new paths: with a warning, owner mail and a due stop, a dry run
    writes no planned-stop tag, removes none, stops nothing and mails no owner; the operators'
    digest says what it would do."""
    monkeypatch.setenv("DRY_RUN", "true")
    box_id = ec2.launch("alice-box", tags={"Owner": "alice@example.com"})[0]
    for hours in (0, 25):  # the warning, then its planned time
        run_at(NOW + timedelta(hours=hours), clock, new_event, ec2, [box_id])
    assert [c.operation for c in calls.mutating() if c.service == "ec2"] == []
    assert ec2.states()[box_id] == "running" and PLANNED_TAG not in ec2.tags_of(box_id)
    assert Sent()() == []  # owners hear nothing from a dry run
    assert "Would warn" in mailbox()[0]["body"]


@pytest.mark.integration
def test_an_instance_opted_out_after_its_warning_is_unmarked_and_never_stopped(
    routed_env: dict[str, str],
    clock: Callable[[datetime], None],
    new_event: Callable[[], dict[str, Any]],
    ec2: Any,
    mailbox: Callable[[], list[dict[str, Any]]],
) -> None:
    box_id = ec2.launch("alice-box", tags={"Owner": "alice@example.com"})[0]
    run_at(NOW, clock, new_event, ec2, [box_id])
    assert PLANNED_TAG in ec2.tags_of(box_id)
    ec2.tag(box_id, AutoStop="false")  # the owner opts out after the warning
    for hours in (1, 24, 30):
        run_at(NOW + timedelta(hours=hours), clock, new_event, ec2, [box_id])
    assert ec2.states()[box_id] == "running" and PLANNED_TAG not in ec2.tags_of(box_id)
    assert "No longer to be stopped" in mailbox()[1]["body"] and len(mailbox()) == 2
