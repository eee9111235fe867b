"""idle_stopper end to end against moto: instances in moto's EC2, metrics written into moto's
CloudWatch with put_metric_data, the real handler (through the runner) on the real sample
event, the mail read back. The clock is pinned to NOW (tests/idle_stopper/conftest.py)."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from autopilot.config import ConfigError
from autopilot.recorder import CallRecorder
from idle_stopper import app
from idle_stopper.config import Config

pytestmark = pytest.mark.integration

REGION = "eu-west-1"
# The runner's DynamoDB calls of one invocation whose plan has an intent: the claim (PutItem,
# then UpdateItem with the result), the Query for unfinished work, and the outbox entry
# (PutItem before acting, UpdateItem after, DeleteItem once the mail was sent).
RUNNER_CALLS = {"Query": 1, "PutItem": 2, "UpdateItem": 2, "DeleteItem": 1}
# ... and of one whose plan has none: the claim and the Query.
RUNNER_CALLS_NO_INTENT = {"Query": 1, "PutItem": 1, "UpdateItem": 1}


def queries_per_call(calls: Any) -> list[int]:
    return [len(p["MetricDataQueries"]) for p in calls.of("cloudwatch", "GetMetricData")]


def dynamodb_calls(calls: Any) -> dict[str, int]:
    return {op.split(".", 1)[1]: n for op, n in calls.by_operation().items() if op.startswith("dynamodb.")}


def test_stops_idle_and_expired_instances_only_tags_them_and_mails_once(
    env: dict[str, str], event: dict[str, Any], fleet: dict[str, str], mailbox: Any, calls: Any, ec2: Any
) -> None:
    fleet_tags = {kind: ec2.tags_of(instance_id) for kind, instance_id in fleet.items()}
    result = app.lambda_handler(event, ec2.context())

    stopped = {k for k, i in fleet.items() if ec2.states()[i] != "running"}
    assert stopped == {"idle", "idle-burst", "lifetime", "malformed"}
    assert result["Changed"] == 4 and result["Failed"] == 0
    assert result["StoppedIdle"] == 3 and result["StoppedLifetime"] == 1 and result["Idle"] == 4
    assert result["SkippedStopProtected"] == 1 and result["SkippedSpot"] == 1
    assert result["SkippedAutoScaling"] == 1 and result["SkippedKubernetes"] == 1
    assert result["SkippedOptedOut"] == 1 and result["SkippedTooYoung"] == 1
    assert result["SkippedTooLittleData"] == 1 and result["MalformedStopAfter"] == 1
    assert result["Skipped"] == 7 and result["Checked"] == 12

    tags = ec2.tags_of(fleet["idle"])
    assert tags["StoppedBy"] == "ops-autopilot/ops-autopilot-test"
    assert tags["StoppedReason"] == "idle"  # the category: the numbers are in the mail
    assert tags["StoppedAt"] == ec2.now.strftime("%Y-%m-%dT%H:%M:%SZ")  # the clock's time
    assert ec2.tags_of(fleet["idle-burst"])["StoppedReason"] == "idle"
    assert ec2.tags_of(fleet["lifetime"])["StoppedReason"] == "lifetime"
    for kind in fleet.keys() - stopped:
        assert "StoppedBy" not in ec2.tags_of(fleet[kind]), kind
    # it writes the three tags that explain a stop and nothing else: never an opt-in or opt-out
    # tag (AutoStop, StopAfter), never another automation's (PRODUCT.md: tags steer automations)
    written = [tag["Key"] for call in calls.of("ec2", "CreateTags") for tag in call["Tags"]]
    assert set(written) == {"StoppedBy", "StoppedReason", "StoppedAt"}
    for kind in stopped:
        before, after = fleet_tags[kind], ec2.tags_of(fleet[kind])
        assert after.keys() - before.keys() == {"StoppedBy", "StoppedReason", "StoppedAt"}, kind
        assert {k: after[k] for k in before} == before, kind  # no tag of its own changed

    mails = mailbox()
    assert len(mails) == 1
    mail = mails[0]
    assert mail["subject"] == "[ops-autopilot-test] 4 instances stopped (3 idle, 1 past StopAfter)"
    assert mail["attributes"] == {"automation": "idle_stopper", "severity": "info"}
    body = mail["body"]
    for kind in ("idle", "idle-burst", "lifetime", "malformed", "protected"):
        assert fleet[kind] in body, kind
    for kind in ("busy", "asg", "spot", "opted-out", "young", "no-data", "eks"):
        assert fleet[kind] not in body, kind
    assert "dev-box@example.com" in body and "(dev-box)" in body
    # the numbers that decided each stop are in the mail (the tag carries only the category)
    assert "quiet in 24 of the last 24 hours (needs 23); peak CPU 1.5%" in body
    assert "quiet in 23 of the last 24 hours" in body and "StopAfter" in body
    assert "StopAfter='8 hours' is not a whole number" in body
    assert "AutoStop=false" in body and "start-instances" in body
    assert body.startswith("Looked at 12 running instances: stopped 4; left running: ")
    assert (
        f"https://{REGION}.console.aws.amazon.com/ec2/home?region={REGION}#InstanceDetails:instanceId="
        in body
    )

    # the budget: one of each, the attribute looked up for the 4 stops and the protected one
    assert calls.count("ec2", "DescribeInstances") == 1
    assert calls.of("ec2", "DescribeInstances")[0]["Filters"] == [
        {"Name": "instance-state-name", "Values": ["running"]}
    ]
    # the CPU of the 6 judged (idle, idle-burst, busy, malformed, protected, no-data), then the
    # network of the 4 whose CPU was quiet: busy is busy by its CPU, no-data has no CPU data
    assert queries_per_call(calls) == [6, 2 * 4]
    # stop protection is EC2's to judge: no attribute read, the batch refused once for the
    # protected one (named in the refusal), the others sent again
    assert calls.count("ec2", "DescribeInstanceAttribute") == 0
    assert calls.count("ec2", "StopInstances") == 2
    # one call per distinct tag set: every idle stop shares one, the StopAfter stop has its own
    assert calls.count("ec2", "CreateTags") == 2
    assert calls.count("sns", "Publish") == 1
    # the runner's calls, and one PutItem: the memory of the busy instance (not asked next run)
    assert dynamodb_calls(calls) == {**RUNNER_CALLS, "PutItem": RUNNER_CALLS["PutItem"] + 1}
    assert len(calls.calls) == 1 + 2 + 0 + 2 + 2 + 1 + sum(RUNNER_CALLS.values()) + 1


def test_the_next_run_changes_nothing_and_says_nothing(
    env: dict[str, str],
    new_event: Callable[[], dict[str, Any]],
    fleet: dict[str, str],
    mailbox: Any,
    calls: Any,
    ec2: Any,
) -> None:
    app.lambda_handler(new_event(), ec2.context())
    first = len(calls.calls)
    mails = len(mailbox())
    result = app.lambda_handler(new_event(), ec2.context("request-2"))  # the next hour's run
    assert result["status"] == "done"
    assert result["Changed"] == 0 and result["Checked"] == 8  # the 4 stopped are no longer running
    later = calls.calls[first:]
    # the stop-protected idle instance is offered to EC2 again, which refuses it again: one
    # call (as its attribute read was); nothing stopped, tagged or mailed
    ops = [c.operation for c in later if c.operation in ("StopInstances", "CreateTags", "Publish")]
    assert ops == ["StopInstances"]
    assert result["SkippedStopProtected"] == 1 and result["Failed"] == 0
    # Describe, metrics (the CPU of the protected and no-data ones, the network of the protected
    # one: the busy one is remembered, not asked about), the refused stop; the runner's claim and
    # entry; the memory is unchanged, so not written
    assert len(later) == 1 + 2 + 1 + sum(RUNNER_CALLS.values())
    asked = [
        q["MetricStat"]["Metric"]["Dimensions"][0]["Value"]
        for c in later
        if c.operation == "GetMetricData"
        for q in c.params["MetricDataQueries"]
    ]
    assert (
        fleet["busy"] not in asked and result["RememberedBusy"] == 1 and result["MetricsRequested"] == 2 + 2
    )
    assert len(mailbox()) == mails


def test_the_same_event_again_is_a_duplicate_and_does_nothing(
    env: dict[str, str], event: dict[str, Any], fleet: dict[str, str], mailbox: Any, ec2: Any
) -> None:
    app.lambda_handler(event, ec2.context())
    with CallRecorder() as again_calls:
        again = app.lambda_handler(event, ec2.context("request-2"))
    assert again["status"] == "duplicate" and again["Changed"] == 4  # the first delivery's result
    # no EC2 or SNS call at all; one write: the claim attempt that finds the event handled
    # (the runner may also look for held mail of earlier runs: a DynamoDB read)
    assert {c.service for c in again_calls.calls} == {"dynamodb"}
    assert [c.operation for c in again_calls.mutating()] == ["PutItem"]
    assert len(mailbox()) == 1


def test_dry_run_decides_the_same_and_changes_nothing(
    env: dict[str, str],
    event: dict[str, Any],
    fleet: dict[str, str],
    mailbox: Any,
    calls: Any,
    ec2: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DRY_RUN", "true")
    result = app.lambda_handler(event, ec2.context())
    assert set(ec2.states().values()) == {"running"}
    assert all("StoppedBy" not in ec2.tags_of(i) for i in fleet.values())
    # no EC2 change at all; only the runner's claim and outbox writes and the mail
    assert [f"{c.service}.{c.operation}" for c in calls.mutating()] == [
        "dynamodb.PutItem",  # claim
        "dynamodb.PutItem",  # memory: the busy instance (what was seen, not done)
        "dynamodb.PutItem",  # intent recorded
        "dynamodb.UpdateItem",  # acted (nothing) + the mail
        "sns.Publish",
        "dynamodb.DeleteItem",  # mail sent
        "dynamodb.UpdateItem",  # claim completed
    ]
    assert result["Changed"] == 0 and result["WouldStop"] == 4 and result["StoppedIdle"] == 0
    mail = mailbox()[0]
    assert (
        mail["subject"]
        == "[ops-autopilot-test] DRY RUN: 4 instances would be stopped (3 idle, 1 past StopAfter)"
    )
    assert "DRY RUN: nothing was changed" in mail["body"]
    assert "would stop 4" in mail["body"]
    assert fleet["idle"] in mail["body"]


def test_cap_limits_the_stops_and_the_mail_says_so(
    env: dict[str, str],
    event: dict[str, Any],
    fleet: dict[str, str],
    mailbox: Any,
    calls: Any,
    ec2: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAX_STOPS_PER_RUN", "2")
    result = app.lambda_handler(event, ec2.context())
    stopped = {k for k, i in fleet.items() if ec2.states()[i] != "running"}
    # lifetime first, then the longest running idle instance
    assert stopped == {"lifetime", "idle"}
    # the protected one is never even offered: the cap was filled before its turn
    assert result["SkippedOverCap"] == 3
    assert calls.count("ec2", "DescribeInstanceAttribute") == 0
    assert calls.count("ec2", "StopInstances") == 1
    assert "this run's limit of 2 stops was reached" in mailbox()[0]["body"]


def test_a_stop_protected_instance_is_refused_by_ec2_and_the_others_still_stop(
    env: dict[str, str], event: dict[str, Any], mailbox: Any, calls: Any, ec2: Any
) -> None:
    """StopInstances refuses the whole batch with OperationNotPermitted, naming the protected
    instance: it is set aside (never stopped, not a failure) and the others sent again - one
    call more, no attribute read per candidate."""
    idle = ec2.launch("dev", count=2)
    protected = ec2.launch("pet", protected=True)[0]
    for instance_id in [*idle, protected]:
        ec2.write_metrics(instance_id)

    result = app.lambda_handler(event, ec2.context())

    assert result["Failed"] == 0 and result["Changed"] == 2 and result["SkippedStopProtected"] == 1
    assert {i: s for i, s in ec2.states().items() if s == "running"} == {protected: "running"}
    assert "StoppedBy" not in ec2.tags_of(protected)
    assert calls.count("ec2", "StopInstances") == 2  # the batch, then the batch without it
    assert calls.count("ec2", "DescribeInstanceAttribute") == 0
    mail = mailbox()[0]
    assert mail["subject"] == "[ops-autopilot-test] 2 instances stopped (2 idle)"
    assert "Stop protection on, left running although the rule matched (1)" in mail["body"]
    assert protected in mail["body"]


def test_the_place_of_a_refused_stop_goes_to_the_next_candidate(
    env: dict[str, str],
    event: dict[str, Any],
    mailbox: Any,
    calls: Any,
    ec2: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cap 2, the two longest-running idle instances stop-protected: EC2 refuses both, and the
    next two candidates (the reserve) are stopped instead - the cap is filled as when every
    candidate's attribute was read first."""
    monkeypatch.setenv("MAX_STOPS_PER_RUN", "2")
    pets = ec2.launch("pet", count=2, protected=True, age=timedelta(days=9))
    dev = ec2.launch("dev", count=3, age=timedelta(days=3))
    for instance_id in [*pets, *dev]:
        ec2.write_metrics(instance_id)

    result = app.lambda_handler(event, ec2.context())

    stopped = {i for i, s in ec2.states().items() if s != "running"}
    assert stopped <= set(dev) and len(stopped) == 2, "protected stopped, or the cap not filled"
    assert result["Changed"] == 2 and result["SkippedStopProtected"] == 2 and result["SkippedOverCap"] == 1
    assert all("StoppedBy" in ec2.tags_of(i) for i in stopped)
    body = mailbox()[0]["body"]
    assert "1 more instance met the rule but this run's limit of 2 stops was reached" in body
    assert calls.count("ec2", "DescribeInstanceAttribute") == 0


def test_instance_store_root_is_never_stopped(
    env: dict[str, str], event: dict[str, Any], mailbox: Any, ec2: Any
) -> None:
    instance_id = ec2.launch("old-school")[0]
    ec2.backend_instance(instance_id).root_device_type = "instance-store"  # moto launches EBS roots only
    ec2.write_metrics(instance_id)
    result = app.lambda_handler(event, ec2.context())
    assert ec2.states()[instance_id] == "running"
    assert result["SkippedInstanceStore"] == 1
    assert mailbox() == []


@pytest.mark.parametrize("word", ["false", "no", "Never", "OFF"])
def test_every_opt_out_word_keeps_an_instance_running(
    env: dict[str, str], event: dict[str, Any], mailbox: Any, ec2: Any, word: str
) -> None:
    instance_id = ec2.launch("kept", tags={"AutoStop": word, "StopAfter": "1h"})[0]
    result = app.lambda_handler(event, ec2.context())
    assert ec2.states()[instance_id] == "running"
    assert result["SkippedOptedOut"] == 1 and result["Changed"] == 0
    assert mailbox() == []


def test_a_forged_event_time_does_not_stop_anything_early(
    env: dict[str, str], event: dict[str, Any], mailbox: Any, ec2: Any
) -> None:
    """An event claiming to be a month in the future is refused outright (it is no delivery
    EventBridge makes): a StopAfter=8h instance running 3 hours keeps running, nothing is
    tagged or mailed, and the refusal is counted (PRODUCT.md safety rule 7)."""
    instance_id = ec2.launch("workshop", tags={"StopAfter": "8h"}, age=timedelta(hours=3))[0]
    event["time"] = (ec2.now + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    result = app.lambda_handler(event, ec2.context())
    assert result["status"] == "ignored" and "ahead of the clock" in result["reason"]
    assert ec2.states()[instance_id] == "running"
    assert "StoppedBy" not in ec2.tags_of(instance_id)
    assert mailbox() == []


def test_now_is_the_clocks_even_for_an_accepted_event_time(
    env: dict[str, str], event: dict[str, Any], mailbox: Any, ec2: Any
) -> None:
    """Within the accepted skew the event's time still decides nothing: a StopAfter=8h instance
    that has run 7 h 58 min is not expired by an event dated 4 minutes ahead of the clock."""
    instance_id = ec2.launch("workshop", tags={"StopAfter": "8h"}, age=timedelta(hours=7, minutes=58))[0]
    event["time"] = (ec2.now + timedelta(minutes=4)).strftime("%Y-%m-%dT%H:%M:%SZ")
    result = app.lambda_handler(event, ec2.context())
    assert result["status"] == "done"
    assert ec2.states()[instance_id] == "running"
    assert result["Changed"] == 0 and result["SkippedTooYoung"] == 1
    assert "StoppedBy" not in ec2.tags_of(instance_id)
    assert mailbox() == []


def test_the_owner_tag_key_is_the_stacks(
    env: dict[str, str], event: dict[str, Any], mailbox: Any, ec2: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OWNER_TAG_KEY=CreatedBy (template Globals): the mail names the CreatedBy value as owner,
    not the Owner tag's, and says which tag is missing when there is none."""
    monkeypatch.setenv("OWNER_TAG_KEY", "CreatedBy")
    ci = ec2.launch("ci", tags={"StopAfter": "1h", "Owner": "not-this@example.com"}, owner_key="CreatedBy")[0]
    orphan = ec2.launch("orphan", tags={"StopAfter": "1h"}, owner_key="Team")[0]
    app.lambda_handler(event, ec2.context())
    assert ec2.states()[ci] == "stopped" and ec2.states()[orphan] == "stopped"
    body = mailbox()[0]["body"]
    assert f"{ci} (ci), owner ci@example.com" in body
    assert "not-this@example.com" not in body
    assert f"{orphan} (orphan), owner unknown (no CreatedBy tag)" in body


def test_malformed_event_changes_nothing(
    env: dict[str, str], load_event: Callable[[str], dict[str, Any]], calls: Any, ec2: Any
) -> None:
    ec2.launch("dev")
    result = app.lambda_handler(load_event("idle_stopper/eventbridge.not_scheduled"), ec2.context())
    assert result["status"] == "ignored" and "expected a scheduled event" in result["reason"]
    assert calls.calls == []


def test_malformed_stop_after_alone_mails_once_a_day(
    env: dict[str, str],
    new_event: Callable[[], dict[str, Any]],
    mailbox: Any,
    ec2: Any,
    clock: Callable[[Any], None],
) -> None:
    ec2.launch("odd", tags={"StopAfter": "1.5h"}, age=timedelta(hours=5))
    result = app.lambda_handler(new_event(), ec2.context())
    assert mailbox() == []  # not the daily report hour (NOW is never in it)
    assert result["MalformedStopAfter"] == 1
    clock(ec2.now.replace(hour=7))  # the clock decides the hour, not the event
    app.lambda_handler(new_event(), ec2.context("request-2"))
    mails = mailbox()
    assert [m["subject"] for m in mails] == ["[ops-autopilot-test] 1 instance with a malformed StopAfter tag"]
    assert "StopAfter='1.5h' is not a whole number" in mails[0]["body"]


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PERIODS_REQUIRED", "25", "above LOOKBACK_HOURS"),
        ("LOOKBACK_HOURS", "0", "below the minimum"),
        ("MAX_STOPS_PER_RUN", "1001", "above the maximum"),
        ("CPU_PERCENT", "ten", "not a number"),
        ("NETWORK_MB", "", "NETWORK_MB is required"),
    ],
)
def test_bad_configuration_fails_loudly(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=message):
        Config.from_env()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [("OWNER_TAG_KEY", "", "OWNER_TAG_KEY is required"), ("LOOKBACK_HOURS", "x", "not a whole number")],
)
def test_the_handler_fails_loudly_on_bad_configuration_before_any_call(
    env: dict[str, str],
    event: dict[str, Any],
    calls: Any,
    ec2: Any,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    message: str,
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=message):
        app.lambda_handler(event, ec2.context())
    assert calls.calls == []


def test_budget_for_300_instances(
    env: dict[str, str], event: dict[str, Any], mailbox: Any, calls: Any, ec2: Any
) -> None:
    """N = 300 running instances: ceil(N/500) GetMetricData calls for the CPU, ceil(2Q/500)
    for the network of the Q with a quiet CPU, one DescribeInstances page, one StopInstances,
    CreateTags bounded by the stops, and the runner's six DynamoDB calls."""
    ids = ec2.launch("fleet", count=290)
    expiring = ec2.launch("short-lived", count=5, tags={"StopAfter": "1d"}, age=timedelta(days=2))
    ec2.launch("asg", count=5, tags={"aws:autoscaling:groupName": "web"})
    for instance_id in ids[:2]:  # moto's GetMetricData scans every datapoint per query: keep it small
        ec2.write_metrics(instance_id)

    result = app.lambda_handler(event, ec2.context())

    judged = 290  # the expiring ones need no metrics, the ASG ones are excluded first
    assert result["Checked"] == 300
    # no datapoints (too little data) needs no network: only the 2 quiet ones are asked for it
    assert calls.count("cloudwatch", "GetMetricData") == math.ceil(judged / 500) + 1 == 2
    assert queries_per_call(calls) == [judged, 2 * 2]
    assert result["MetricsRequested"] == judged + 4
    assert calls.count("ec2", "DescribeInstances") == math.ceil(300 / 1000)
    assert calls.of("ec2", "DescribeInstances")[0]["MaxResults"] == 1000
    assert calls.count("ec2", "DescribeInstanceAttribute") == 0
    assert calls.count("ec2", "StopInstances") == 1
    # the 5 lifetime stops share one tag set; the 2 idle ones have the same numbers: one more
    assert calls.count("ec2", "CreateTags") == 2
    assert calls.count("sns", "Publish") == 1
    # the runner's six, and one PutItem: the run's memory of its stops (money saved, later)
    assert dynamodb_calls(calls) == {**RUNNER_CALLS, "PutItem": RUNNER_CALLS["PutItem"] + 1}
    assert len(calls.calls) == 2 + 1 + 0 + 1 + 2 + 1 + 6 + 1
    assert result["Changed"] == 7
    assert {i for i, s in ec2.states().items() if s != "running"} == {*ids[:2], *expiring}
