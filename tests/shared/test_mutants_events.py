"""autopilot.events (safety rules 5 and 7: a malformed, foreign or stale event changes nothing;
time is the clock's, not the event's), where `make mutate` (tools/mutate.py) found behaviour no
test pinned down: each test names the mutants it kills (mutmut's names; docs/mutation-survivors.md
lists the survivors explained instead). Pure logic: the functions themselves, no AWS, no handler."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from autopilot.events import (
    BadEvent,
    StaleEvent,
    describe,
    parse_scheduled,
    parse_time,
    require,
    require_fresh,
    require_own_account,
)
from template_tools import ACCOUNT

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
OWN = ACCOUNT  # the account the test stack runs in
FOREIGN = {"account": "210987654321"}


def _at(when: datetime) -> dict[str, str]:
    return {"time": when.strftime("%Y-%m-%dT%H:%M:%SZ")}


def _function(arn: Any) -> SimpleNamespace:
    return SimpleNamespace(invoked_function_arn=arn)


def test_a_value_of_neither_kind_is_refused_naming_both_kinds() -> None:
    # x__kind_name__mutmut_1 (no kind named: TypeError instead of BadEvent), _2, _3 (" or "
    # written "XX or XX", " OR ").
    with pytest.raises(BadEvent) as caught:
        require({"a": 1.5}, "a", (str, int), "event.detail")
    assert str(caught.value) == "event.detail.a is float, expected str or int"
    assert require({"a": 7}, "a", (str, int)) == 7


def test_an_event_time_that_is_no_time_is_refused_naming_event_time() -> None:
    # x_parse_time__mutmut_1, _2 (the default place named "XXevent.timeXX", "EVENT.TIME").
    event = {
        "source": "aws.events",
        "detail-type": "Scheduled Event",
        "id": "run-1",
        "time": "yesterday",
        "account": OWN,
        "region": "eu-west-1",
    }
    with pytest.raises(BadEvent) as caught:
        parse_scheduled(event)
    assert str(caught.value) == "event.time='yesterday' is not an ISO 8601 time"


@pytest.mark.parametrize("value", ["2026-12-02T12:00:00z", "2026-12-02T12:00:00XXZXX"])
def test_only_an_upper_case_z_reads_as_utc(value: str) -> None:
    # x_parse_time__mutmut_9 ("XXZXX" replaced by +00:00 instead of "Z": a time followed by it
    # read as UTC), _10 ("z": a lower-case z, which is no ISO 8601 zone, read as UTC); also _1,
    # _2 (the place the message names).
    with pytest.raises(BadEvent) as caught:
        parse_time(value)
    assert str(caught.value) == f"event.time={value!r} is not an ISO 8601 time"
    assert parse_time("2026-12-02T12:00:00Z") == NOW


def test_a_time_without_a_zone_is_utc_and_compared_with_the_clock() -> None:
    # x_parse_time__mutmut_13 (left naive: it equals no aware time, and comparing it with the
    # clock's aware now raises TypeError instead of deciding freshness).
    parsed = parse_time("2026-12-02T12:00:00")
    assert parsed == NOW and parsed.tzinfo is UTC
    assert require_fresh({"time": "2026-12-02T11:00:00"}, NOW) == NOW - timedelta(hours=1)
    with pytest.raises(StaleEvent):
        require_fresh({"time": "2026-12-02T09:00:00"}, NOW)


def test_without_a_function_arn_no_event_is_refused_for_its_account() -> None:
    # x_require_own_account__mutmut_6 (getattr without its default: a context without the ARN
    # raises AttributeError), _16 (the unknown own account "XXXX": every event refused).
    for context in (SimpleNamespace(), _function(None), _function("")):
        assert require_own_account({"account": OWN}, context) is None
        assert require_own_account(FOREIGN, context) is None


def test_the_own_account_is_the_fifth_field_of_the_function_arn() -> None:
    # x_require_own_account__mutmut_14 (`>= 4`: an ARN of four fields raises IndexError),
    # _15 (`> 5`: an ARN of five fields, its account the fifth, names no own account, so a
    # foreign event passes); also _16 (the own account of a short ARN "XXXX").
    assert require_own_account(FOREIGN, _function("arn:aws:lambda:eu-west-1")) is None
    with pytest.raises(BadEvent) as caught:
        require_own_account(FOREIGN, _function(f"arn:aws:lambda:eu-west-1:{OWN}"))
    assert str(caught.value) == f"event of account '210987654321'; this function runs in account {OWN}"
    assert require_own_account({"account": OWN}, _function(f"arn:aws:lambda:eu-west-1:{OWN}")) is None


def test_a_foreign_account_is_named_in_at_most_20_characters() -> None:
    # x_require_own_account__mutmut_25 (21 characters of it).
    arn = f"arn:aws:lambda:eu-west-1:{OWN}:function:f"
    with pytest.raises(BadEvent) as caught:
        require_own_account({"account": "9" * 30}, _function(arn))
    assert str(caught.value) == f"event of account {'9' * 20!r}; this function runs in account {OWN}"


@pytest.mark.parametrize(
    ("late", "said"),
    [
        (timedelta(hours=3), "3 h 0 min"),
        (timedelta(hours=2, minutes=59, seconds=59), "2 h 59 min"),
        (timedelta(days=1, minutes=7), "24 h 7 min"),
    ],
)
def test_a_stale_event_says_how_late_it_is_in_hours_and_minutes(late: timedelta, said: str) -> None:
    # x__ago__mutmut_4 (minutes of 61 seconds), _5 (hours divided, not floored: "3.0 h"), _6
    # (hours of 61 minutes), _7 (the minutes divided: "3.0 min"), _8 (minutes modulo 61).
    when = NOW - late
    with pytest.raises(StaleEvent) as caught:
        require_fresh(_at(when), NOW)
    assert str(caught.value) == (
        f"event time {when.isoformat()} is {said} before the clock's {NOW.isoformat()} "
        "(at most 2 h 15 min is accepted): replayed, or retried for too long"
    )


@pytest.mark.parametrize(
    ("ahead", "said"),
    [(timedelta(hours=1), "1 h 0 min"), (timedelta(minutes=59, seconds=59), "59 min")],
)
def test_an_event_an_hour_ahead_says_1_h_not_60_min(ahead: timedelta, said: str) -> None:
    # x__ago__mutmut_9 (`> 60`), _10 (`>= 61`): exactly an hour said as "60 min".
    when = NOW + ahead
    with pytest.raises(StaleEvent) as caught:
        require_fresh(_at(when), NOW)
    assert str(caught.value) == (
        f"event time {when.isoformat()} is {said} ahead of the clock's {NOW.isoformat()} "
        "(at most 5 min is accepted): not a real delivery"
    )


def test_what_is_not_an_object_is_described_by_its_type_only() -> None:
    # x_describe__mutmut_2, _3 (the "type" entry renamed), _4 (the type of None named).
    assert describe(["not", "an", "event"]) == {"type": "list"}
    assert describe("text") == {"type": "str"}


def test_an_event_is_described_by_its_first_keys_and_its_fields_cut_to_200_characters() -> None:
    # x_describe__mutmut_6, _7 (the "keys" entry renamed), _9 (every key named "None"), _10 (21
    # keys), _11 to _22 (one of id, source, detail-type, account, region, time renamed: missing
    # from the log line), _23 (their values None), _24 (201 characters), _25 to _28 (the detail
    # not read: its fields missing), _29 to _41 (one of eventName, eventSource, errorCode,
    # status, command-id renamed: missing), _42 (their values None), _43 (201 characters).
    long = "x" * 300
    event = {
        "id": "id-" + long,
        "source": "aws.ec2",
        "detail-type": "AWS API Call via CloudTrail",
        "account": OWN,
        "region": "eu-west-1",
        "time": "2026-12-02T12:00:00Z",
        "detail": {
            "eventName": "RunInstances",
            "eventSource": "ec2.amazonaws.com",
            "errorCode": "Client.UnauthorizedOperation",
            "status": "Failed",
            "command-id": "c-" + long,
            "userIdentity": {"arn": "not in the line"},
        },
        **{f"k{i:02}": i for i in range(20)},
        "version": "0",
    }
    assert describe(event) == {
        "keys": ["account", "detail", "detail-type", "id", *(f"k{i:02}" for i in range(16))],
        "id": "id-" + "x" * 197,
        "source": "aws.ec2",
        "detail-type": "AWS API Call via CloudTrail",
        "account": OWN,
        "region": "eu-west-1",
        "time": "2026-12-02T12:00:00Z",
        "detail.eventName": "RunInstances",
        "detail.eventSource": "ec2.amazonaws.com",
        "detail.errorCode": "Client.UnauthorizedOperation",
        "detail.status": "Failed",
        "detail.command-id": "c-" + "x" * 198,
    }
