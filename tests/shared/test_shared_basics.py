"""Configuration, events, AWS helpers, the call recorder, console links, tags."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import boto3
import pytest
from botocore.exceptions import ClientError
from hypothesis import given
from hypothesis import strategies as st

from autopilot import aws, console, runtime, tags
from autopilot.config import CommonConfig, ConfigError, env_bool, env_int
from autopilot.events import (
    MAX_EVENT_AGE,
    MAX_EVENT_AHEAD,
    BadEvent,
    EmptyEvent,
    InstanceStateChange,
    StaleEvent,
    describe,
    parse_scheduled,
    parse_state_change,
    reject,
    require,
    require_fresh,
)
from autopilot.recorder import CallRecorder
from autopilot.runtime import Deadline

GOOD = {
    "STACK_NAME": "ops",
    "AWS_REGION": "eu-west-1",
    "TOPIC_ARN": "arn:aws:sns:eu-west-1:123456789012:t",
    "DRY_RUN": "false",
    "OWNER_TAG_KEY": "Owner",
}


@pytest.mark.unit
def test_common_config_from_env() -> None:
    config = CommonConfig.from_env(GOOD)
    assert config == CommonConfig("ops", "eu-west-1", "arn:aws:sns:eu-west-1:123456789012:t", False, "Owner")
    assert CommonConfig.from_env({**GOOD, "OWNER_TAG_KEY": "CreatedBy"}).owner_tag_key == "CreatedBy"
    with pytest.raises(AttributeError):
        config.dry_run = True  # type: ignore[misc]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"STACK_NAME": ""}, "STACK_NAME is required"),
        ({"TOPIC_ARN": "my-topic"}, "TOPIC_ARN='my-topic' is not an SNS topic ARN"),
        ({"DRY_RUN": "maybe"}, "DRY_RUN='maybe' must be true or false"),
        ({"AWS_REGION": "moon"}, "AWS_REGION='moon' is not a region"),
        ({"OWNER_TAG_KEY": ""}, "OWNER_TAG_KEY is required"),
        ({"OWNER_TAG_KEY": "aws:owner"}, "OWNER_TAG_KEY='aws:owner' is not a valid EC2 tag key"),
        ({"OWNER_TAG_KEY": "own/er!"}, "is not a valid EC2 tag key"),
    ],
)
def test_bad_configuration_names_the_variable(change: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CommonConfig.from_env({**GOOD, **change})


@pytest.mark.unit
def test_env_int_and_bool_bounds() -> None:
    assert env_int("N", {"N": "5"}, minimum=1, maximum=10) == 5
    with pytest.raises(ConfigError, match="N=11 is above the maximum 10"):
        env_int("N", {"N": "11"}, maximum=10)
    with pytest.raises(ConfigError, match="not a whole number"):
        env_int("N", {"N": "five"})
    assert env_int("N", {}, default=3) == 3
    assert env_bool("B", {"B": "TRUE"}) is True and env_bool("B", {}, default=False) is False


@pytest.mark.unit
def test_scheduled_event_parsing(load_event) -> None:  # type: ignore[no-untyped-def]
    run = parse_scheduled(load_event("website_health_check/eventbridge.scheduled", as_delivered_now=False))
    assert run.time == datetime(2026, 11, 23, 10, 5, tzinfo=UTC) and run.region == "eu-west-1"
    with pytest.raises(BadEvent, match="expected a scheduled event"):
        parse_scheduled(load_event("website_health_check/eventbridge.not_a_schedule"))
    with pytest.raises(BadEvent, match="event is list"):
        parse_scheduled([])
    with pytest.raises(BadEvent, match="not an ISO 8601 time"):
        parse_scheduled({**load_event("website_health_check/eventbridge.scheduled"), "time": "yesterday"})


@pytest.mark.unit
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
    )
)
def test_any_json_value_is_either_parsed_or_a_bad_event(event: object) -> None:
    with contextlib.suppress(BadEvent):
        parse_scheduled(event)
    assert isinstance(describe(event), dict)


STATE_CHANGE = {
    "version": "0",
    "id": "7bf73129-1428-4cd3-a780-95db273d1602",
    "detail-type": "EC2 Instance State-change Notification",
    "source": "aws.ec2",
    "account": "123456789012",
    "time": "2026-11-23T10:05:00Z",
    "region": "eu-west-1",
    "resources": ["arn:aws:ec2:eu-west-1:123456789012:instance/i-0abcdef1234567890"],
    "detail": {"instance-id": "i-0abcdef1234567890", "state": "running"},
}


@pytest.mark.unit
def test_state_change_parsing() -> None:
    change = parse_state_change(STATE_CHANGE, {"running", "terminated"})
    assert change == InstanceStateChange(
        "7bf73129-1428-4cd3-a780-95db273d1602",
        datetime(2026, 11, 23, 10, 5, tzinfo=UTC),
        "123456789012",
        "eu-west-1",
        "i-0abcdef1234567890",
        "running",
    )
    bad = {
        "not one of its states": {**STATE_CHANGE, "detail": {**STATE_CHANGE["detail"], "state": "stopped"}},
        "a malformed instance id": {**STATE_CHANGE, "detail": {"instance-id": "i-;", "state": "running"}},
        "no instance id": {**STATE_CHANGE, "detail": {"state": "running"}},
        "another source": {**STATE_CHANGE, "source": "custom.forged"},
        "a CloudTrail record": {**STATE_CHANGE, "detail-type": "AWS API Call via CloudTrail"},
        "a detail that is no object": {**STATE_CHANGE, "detail": "running"},
        "a bad time": {**STATE_CHANGE, "time": "soon"},
    }
    for which, event in bad.items():
        with pytest.raises(BadEvent):
            parse_state_change(event, {"running", "terminated"})
            pytest.fail(which)


@pytest.mark.unit
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
    )
)
def test_any_json_value_is_either_a_state_change_or_a_bad_event(event: object) -> None:
    with contextlib.suppress(BadEvent):
        parse_state_change(event, {"running"})


@pytest.mark.unit
def test_require_checks_types() -> None:
    assert require({"a": 1}, "a", int) == 1
    with pytest.raises(BadEvent, match=r"detail\.a is str, expected int"):
        require({"a": "x"}, "a", int, "detail")


@pytest.mark.unit
def test_chunked() -> None:
    assert list(aws.chunked(range(5), 2)) == [[0, 1], [2, 3], [4]]
    assert list(aws.chunked([], 3)) == []
    with pytest.raises(ValueError):
        list(aws.chunked([1], 0))


@pytest.mark.integration
def test_recorder_counts_calls_by_operation_and_paginate_walks_pages() -> None:
    boto3.client("dynamodb").create_table(
        TableName="t",
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for n in range(7):
        boto3.client("dynamodb").put_item(TableName="t", Item={"k": {"S": str(n)}})
    ids = boto3.client("ec2").run_instances(ImageId="ami-12345678", MinCount=2, MaxCount=2)["Instances"]
    with CallRecorder() as calls:
        items = list(aws.paginate(aws.client("dynamodb"), "scan", "Items", TableName="t", Limit=3))
        aws.client("ec2").create_tags(
            Resources=[i["InstanceId"] for i in ids], Tags=[{"Key": "a", "Value": "b"}]
        )
    assert len(items) == 7
    assert calls.by_operation() == {"dynamodb.Scan": 3, "ec2.CreateTags": 1}
    assert calls.of("ec2", "CreateTags")[0]["Tags"] == [{"Key": "a", "Value": "b"}]
    assert [c.operation for c in calls.mutating()] == ["CreateTags"]
    assert aws.call_hooks == []  # the recorder removed itself


@pytest.mark.unit
def test_error_codes_and_transience() -> None:
    throttled = ClientError(
        {"Error": {"Code": "RequestLimitExceeded", "Message": "slow down"}}, "DescribeInstances"
    )
    missing = ClientError(
        {"Error": {"Code": "InvalidInstanceID.NotFound", "Message": "gone"}}, "StopInstances"
    )
    assert aws.error_code(throttled) == "RequestLimitExceeded" and aws.is_transient(throttled)
    assert not aws.is_transient(missing) and aws.error_code(ValueError()) == "ValueError"
    assert aws.BOTO_CONFIG.retries == {"mode": "standard", "total_max_attempts": 8}


@pytest.mark.unit
def test_console_links_follow_region_and_partition() -> None:
    assert console.ec2_instance("eu-west-1", "i-1") == (
        "https://eu-west-1.console.aws.amazon.com/ec2/home?region=eu-west-1#InstanceDetails:instanceId=i-1"
    )
    assert console.ec2_volume("cn-north-1", "vol-1").startswith(
        "https://console.amazonaws.cn/ec2/home?region=cn-north-1"
    )
    assert console.partition("us-gov-west-1") == "aws-us-gov"


@pytest.mark.unit
@given(st.text(max_size=600))
def test_clean_tag_values_are_always_valid(value: str) -> None:
    cleaned = tags.clean_value(value)
    assert len(cleaned) <= 256 and "\n" not in cleaned
    assert all(ch.isalnum() or ch in " _+-=.:/@" for ch in cleaned)


@pytest.mark.unit
def test_tag_dicts() -> None:
    assert tags.as_dict([{"Key": "Name", "Value": "web"}]) == {"Name": "web"}
    assert tags.as_list({"Owner": "ann"}) == [{"Key": "Owner", "Value": "ann"}]


@pytest.mark.unit
def test_deadline_keeps_a_reserve(monkeypatch: pytest.MonkeyPatch) -> None:
    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 30_000

    deadline = Deadline.from_context(Context(), reserve=20)
    assert (deadline.remaining_at_start, deadline.reserve) == (30.0, 20)
    elapsed = [0.5]  # the monotonic clock, frozen at this many seconds after the deadline began
    monkeypatch.setattr(runtime, "time", SimpleNamespace(monotonic=lambda: deadline._start + elapsed[0]))
    assert deadline.remaining() == 9.5 and not deadline.expired()
    elapsed[0] = 10.0
    assert deadline.remaining() == 0.0 and deadline.expired()
    elapsed[0] = 11.0
    assert deadline.remaining() == 0.0  # never negative
    assert Deadline(remaining_at_start=5, reserve=10).expired()


@pytest.mark.unit
@pytest.mark.parametrize("word", ["false", "no", "never", "off", "False", " NEVER ", "Off"])
def test_every_opt_out_word_opts_out_of_every_opt_out_tag(word: str) -> None:
    for key in ("AutoStop", "AutoPatch", "Backup"):
        assert tags.opted_out({key: word}, key)


@pytest.mark.unit
@pytest.mark.parametrize("value", [None, "", "true", "yes", "snooze-until:2027-01-01", "nope", "0"])
def test_other_values_do_not_opt_out(value: str | None) -> None:
    assert not tags.is_opt_out(value)
    assert not tags.opted_out({} if value is None else {"AutoStop": value}, "AutoStop")


@pytest.mark.unit
@pytest.mark.parametrize(
    ("key", "valid"),
    [("Owner", True), ("CreatedBy", True), ("team:owner", True), ("a" * 128, True), ("a" * 129, False),
     ("", False), ("aws:createdBy", False), ("AWS:x", False), (" Owner", False), ("own!er", False),
     ("Own\ner", False), ("Own\ter", False), ("Owner\n", False)],
)  # fmt: skip
def test_one_tag_key_rule(key: str, valid: bool) -> None:
    assert tags.valid_key(key) is valid


@pytest.mark.unit
def test_an_event_is_fresh_within_a_deliverys_age_and_the_clocks_skew_only() -> None:
    """The bounds themselves: a delivery as late as EventBridge's and Lambda's retries allow, or
    a few minutes ahead of the clock, is accepted; a second beyond either is refused."""
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)

    def at(when: datetime) -> dict[str, str]:
        return {"time": when.strftime("%Y-%m-%dT%H:%M:%SZ")}

    assert require_fresh(at(now - MAX_EVENT_AGE), now) == now - MAX_EVENT_AGE
    assert require_fresh(at(now + MAX_EVENT_AHEAD), now) == now + MAX_EVENT_AHEAD
    with pytest.raises(StaleEvent, match="before the clock"):
        require_fresh(at(now - MAX_EVENT_AGE - timedelta(seconds=1)), now)
    with pytest.raises(StaleEvent, match="ahead of the clock"):
        require_fresh(at(now + MAX_EVENT_AHEAD + timedelta(seconds=1)), now)
    with pytest.raises(BadEvent, match="not an ISO 8601 time"):
        require_fresh({"time": "now"}, now)


@pytest.mark.unit
def test_an_event_with_nothing_to_do_is_counted_apart_from_malformed_ones() -> None:
    lines: list[tuple[str, str]] = []
    counted: list[str] = []
    logger = SimpleNamespace(
        info=lambda message, **_: lines.append(("info", message)),
        error=lambda message, **_: lines.append(("error", message)),
    )
    metrics = SimpleNamespace(add_metric=lambda name, unit, value: counted.append(name))
    assert reject(EmptyEvent("nothing launched"), {}, logger, metrics)["status"] == "ignored"
    assert reject(BadEvent("not an event"), {}, logger, metrics)["reason"] == "not an event"
    assert counted == ["EmptyEvents", "MalformedEvents"]
    assert lines == [("info", "ignored event with nothing to do"), ("error", "ignored malformed event")]
