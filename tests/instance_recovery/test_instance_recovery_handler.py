"""instance_recovery end to end on moto.

Through the real lambda_handler and the shared runner: the alarms made for opted-in eligible
instances and none for the others (the reasons in the digest), a second run that changes
nothing (calls counted), alarms deleted on termination and opt-out and put again when they
drifted, alarms of others never touched, a forged state change, dry run, AWS Health's
recoveries mailed once, events it must turn down, a refused alarm, and a run killed between
two steps."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from autopilot import outbox
from autopilot.config import CommonConfig
from autopilot.recorder import CallRecorder
from autopilot.runner import Context
from autopilot.runtime import Deadline
from conftest import REGION, STACK, FakeContext
from instance_recovery import app, report, run
from instance_recovery.config import Config
from instance_recovery.decide import AlarmSpec
from reliability.faults import FaultInjector, ResourceFault, names

pytestmark = pytest.mark.integration

Mailbox = Callable[[], list[dict[str, Any]]]
Load = Callable[[str], dict[str, Any]]
PREFIX = f"{STACK}-recover-"
RECOVER = f"arn:aws:automate:{REGION}:ec2:recover"
# A scheduled run that changes nothing: the claim, the look for unfinished work (and memory),
# the three reads of the facts.
QUIET = {
    "dynamodb.PutItem": 1,
    "dynamodb.Query": 1,
    "dynamodb.UpdateItem": 1,
    "ec2.DescribeInstances": 1,
    "ec2.DescribeInstanceTypes": 1,
    "cloudwatch.DescribeAlarms": 1,
}


@pytest.fixture
def env(stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "instance_recovery")
    for key, value in {"RECOVERY_FOR_ALL": "false", "ALARM_PERIOD": "60", "ALARM_DATAPOINTS": "2"}.items():
        monkeypatch.setenv(key, value)
    return stack_env


def ec2() -> Any:
    return boto3.client("ec2", region_name=REGION)


def cloudwatch() -> Any:
    return boto3.client("cloudwatch", region_name=REGION)


def launch(tags: dict[str, str] | None = None, instance_type: str = "t3.micro", spot: bool = False) -> str:
    kwargs: dict[str, Any] = {
        "ImageId": "ami-12c6146b",
        "MinCount": 1,
        "MaxCount": 1,
        "InstanceType": instance_type,
    }
    if tags:
        kwargs["TagSpecifications"] = [
            {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
        ]
    if spot:
        kwargs["InstanceMarketOptions"] = {"MarketType": "spot"}
    instance_id: str = ec2().run_instances(**kwargs)["Instances"][0]["InstanceId"]
    return instance_id


def alarms() -> dict[str, dict[str, Any]]:
    """Every alarm of the account, by name."""
    return {a["AlarmName"]: a for a in cloudwatch().describe_alarms()["MetricAlarms"]}


def scheduled(load_event: Load) -> dict[str, Any]:
    return {**load_event("instance_recovery/eventbridge.scheduled"), "id": str(uuid.uuid4())}


def state_change(load_event: Load, instance_id: str, state: str) -> dict[str, Any]:
    sample = load_event(f"instance_recovery/ec2.state_change.{state}")
    return {**sample, "id": str(uuid.uuid4()), "detail": {"instance-id": instance_id, "state": state}}


def health(load_event: Load, which: str, instance_id: str, event_id: str | None = None) -> dict[str, Any]:
    sample = load_event(f"instance_recovery/health.{which}")
    detail = {**sample["detail"], "affectedEntities": [{"entityValue": instance_id}]}
    return {**sample, "id": event_id or str(uuid.uuid4()), "resources": [instance_id], "detail": detail}


def invoke(event: Any, request: str = "r1") -> dict[str, Any]:
    context = FakeContext()
    context.aws_request_id = request  # type: ignore[misc]
    result: dict[str, Any] = app.lambda_handler(event, context)
    return result


def outbox_items() -> list[dict[str, Any]]:
    table = boto3.client("dynamodb", region_name=REGION).scan(TableName=os.environ["OUTBOX_TABLE"])
    # the outbox's entries, not the memory it keeps beside them (status "memo")
    return [
        i for i in table["Items"] if i["pk"]["S"] == "outbox#instance_recovery" and i["status"]["S"] != "memo"
    ]


def test_the_schedule_gives_each_opted_in_eligible_instance_an_alarm_and_says_why_not_the_others(
    env: dict[str, str], load_event: Load, mailbox: Mailbox, calls: CallRecorder, topic_arn: str
) -> None:
    web = launch({"AutoRecover": "true", "Name": "web", "Owner": "alice@example.com"})
    db = launch({"AutoRecover": "yes"}, instance_type="c5.large")
    spot = launch({"AutoRecover": "true"}, spot=True)
    store = launch({"AutoRecover": "true"}, instance_type="m5d.large")  # no AutoRecoverySupported
    kept_out, plain = launch({"AutoRecover": "false"}), launch()
    result = invoke(scheduled(load_event))
    assert (result["status"], result["Checked"], result["Changed"], result["Failed"]) == ("done", 6, 2, 0)
    assert (result["Watched"], result["Ineligible"], result["AlarmsCreated"]) == (2, 2, 2)
    made = alarms()
    assert set(made) == {PREFIX + web, PREFIX + db}
    alarm = made[PREFIX + web]
    assert (alarm["Namespace"], alarm["MetricName"], alarm["Statistic"]) == (
        "AWS/EC2",
        "StatusCheckFailed_System",
        "Maximum",
    )
    assert alarm["Dimensions"] == [{"Name": "InstanceId", "Value": web}]
    assert (alarm["Period"], alarm["EvaluationPeriods"], alarm["Threshold"]) == (60, 2, 1.0)
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["AlarmActions"] == [RECOVER, topic_arn]
    (mail,) = mailbox()
    assert mail["subject"] == f"[{STACK}] recovery alarms 2 created; 2 opted-in instances EC2 cannot recover"
    body = mail["body"]
    assert f"{web} (web)" in body and "Owner: alice@example.com" in body
    assert f"{spot}" in body and "Spot instance: EC2 does not recover Spot instances" in body
    assert f"{store}" in body and "m5d.large does not support the recover action" in body
    assert kept_out not in body and plain not in body
    # one page of each read, one PutMetricAlarm per alarm (the API takes one), one Publish
    assert calls.count("ec2", "DescribeInstances") == 1 and calls.count("ec2", "DescribeInstanceTypes") == 1
    assert (
        calls.count("cloudwatch", "DescribeAlarms") == 1 and calls.count("cloudwatch", "PutMetricAlarm") == 2
    )
    assert calls.count("sns", "Publish") == 1
    assert outbox_items() == []


def test_a_second_run_changes_nothing_and_mails_nothing(
    env: dict[str, str], load_event: Load, mailbox: Mailbox
) -> None:
    launch({"AutoRecover": "true"}), launch({"AutoRecover": "true"}, spot=True)
    invoke(scheduled(load_event))
    assert len(mailbox()) == 1
    with CallRecorder() as again:
        result = invoke(scheduled(load_event), "r2")
    assert (result["Changed"], result["Watched"], result["Ineligible"]) == (0, 1, 1)
    assert again.by_operation() == QUIET  # three reads; no write but the runner's claim
    assert len(mailbox()) == 1  # the Spot instance was mailed once


def test_for_all_covers_every_eligible_instance_but_the_opted_out(
    env: dict[str, str], load_event: Load, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECOVERY_FOR_ALL", "true")
    plain, kept_out, spot = launch(), launch({"AutoRecover": "never"}), launch(spot=True)
    result = invoke(scheduled(load_event))
    assert set(alarms()) == {PREFIX + plain}
    assert PREFIX + kept_out not in alarms()
    # a Spot instance nobody tagged: counted, not mailed (nobody asked for its recovery)
    assert result["Ineligible"] == 1
    (mail,) = mailbox()
    assert mail["subject"] == f"[{STACK}] recovery alarms 1 created" and spot not in mail["body"]


def test_termination_deletes_the_alarm_on_its_state_change_without_a_mail(
    env: dict[str, str], load_event: Load, mailbox: Mailbox, calls: CallRecorder
) -> None:
    web = launch({"AutoRecover": "true"})
    invoke(state_change(load_event, web, "running"))
    assert PREFIX + web in alarms() and mailbox() == []  # routine: counted, not mailed
    ec2().terminate_instances(InstanceIds=[web])
    result = invoke(state_change(load_event, web, "terminated"), "r2")
    assert (result["Changed"], result["AlarmsDeleted"]) == (1, 1)
    assert PREFIX + web not in alarms() and mailbox() == []
    assert [c["AlarmNames"] for c in calls.of("cloudwatch", "DeleteAlarms")] == [[PREFIX + web]]


def test_a_forged_terminated_event_for_a_running_instance_deletes_nothing(
    env: dict[str, str], load_event: Load, calls: CallRecorder
) -> None:
    web = launch({"AutoRecover": "true"})
    invoke(scheduled(load_event))
    result = invoke(state_change(load_event, web, "terminated"), "r2")  # EC2 says it runs
    assert result["Changed"] == 0 and PREFIX + web in alarms()
    assert calls.count("cloudwatch", "DeleteAlarms") == 0


def test_opting_out_or_becoming_ineligible_removes_the_alarm_on_the_next_schedule(
    env: dict[str, str], load_event: Load, mailbox: Mailbox
) -> None:
    leaving, gone = launch({"AutoRecover": "true"}), launch({"AutoRecover": "true"})
    invoke(scheduled(load_event))
    assert len(mailbox()) == 1
    ec2().create_tags(Resources=[leaving], Tags=[{"Key": "AutoRecover", "Value": "false"}])
    ec2().terminate_instances(InstanceIds=[gone])
    result = invoke(scheduled(load_event), "r2")
    assert result["AlarmsDeleted"] == 2 and alarms() == {}
    _, mail = mailbox()
    assert mail["subject"] == f"[{STACK}] recovery alarms 2 deleted"
    assert (
        "no longer opted in (AutoRecover)" in mail["body"] and "the instance no longer exists" in mail["body"]
    )


def test_a_drifted_alarm_is_put_again_with_the_stacks_settings(
    env: dict[str, str], load_event: Load, monkeypatch: pytest.MonkeyPatch
) -> None:
    web = launch({"AutoRecover": "true"})
    invoke(scheduled(load_event))
    monkeypatch.setenv("ALARM_DATAPOINTS", "3")
    result = invoke(scheduled(load_event), "r2")
    assert result["AlarmsUpdated"] == 1 and alarms()[PREFIX + web]["EvaluationPeriods"] == 3


def test_alarms_that_are_not_this_stacks_are_never_touched(
    env: dict[str, str], load_event: Load, calls: CallRecorder
) -> None:
    web = launch({"AutoRecover": "true"})
    ec2().terminate_instances(InstanceIds=[web])  # gone: its alarms would go, if they were ours
    others = [f"other-stack-recover-{web}", f"{PREFIX}{web}-mine", f"{PREFIX}i-zzzz", f"cpu-{web}"]
    for name in others:
        cloudwatch().put_metric_alarm(
            AlarmName=name, Namespace="AWS/EC2", MetricName="CPUUtilization", Statistic="Average",
            Period=300, EvaluationPeriods=1, Threshold=90.0, ComparisonOperator="GreaterThanThreshold",
            Dimensions=[{"Name": "InstanceId", "Value": web}],
        )  # fmt: skip
    invoke(scheduled(load_event))
    assert set(alarms()) == set(others)
    assert calls.count("cloudwatch", "DeleteAlarms") == calls.count("cloudwatch", "PutMetricAlarm") == 0


def test_dry_run_changes_nothing_and_says_what_would_happen(
    env: dict[str, str],
    load_event: Load,
    mailbox: Mailbox,
    calls: CallRecorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DRY_RUN", "true")
    web = launch({"AutoRecover": "true"})
    invoke(scheduled(load_event))
    assert alarms() == {}
    assert [c.operation for c in calls.mutating() if c.service != "dynamodb"] == ["Publish"]
    (mail,) = mailbox()
    assert mail["subject"].startswith(f"[{STACK}] DRY RUN: recovery alarms 1 created")
    assert "Recovery alarms would be created (1)" in mail["body"] and web in mail["body"]


@pytest.mark.parametrize(
    ("which", "subject", "severity"),
    [
        ("simplified_recovery.success", "1 instance recovered by EC2 from a host failure", "info"),
        ("alarm_recovery.success", "1 instance recovered by EC2 from a host failure", "info"),
        (
            "simplified_recovery.failure",
            "EC2 could not recover 1 instance from a host failure: act now",
            "warning",
        ),
        (
            "alarm_recovery.failure",
            "EC2 could not recover 1 instance from a host failure: act now",
            "warning",
        ),
    ],
)
def test_a_recovery_aws_health_reports_is_mailed_once(
    env: dict[str, str],
    load_event: Load,
    mailbox: Mailbox,
    calls: CallRecorder,
    which: str,
    subject: str,
    severity: str,
) -> None:
    web = launch({"Name": "web", "Owner": "alice@example.com"})  # simplified recovery: no opt-in needed
    event = health(load_event, which, web)
    result = invoke(event)
    assert result["Recovered" if severity == "info" else "RecoveryFailed"] == 1
    (mail,) = mailbox()
    assert mail["subject"] == f"[{STACK}] {subject}" and mail["attributes"]["severity"] == severity
    assert f"{web} (web)" in mail["body"] and "Owner: alice@example.com" in mail["body"]
    assert "AWS Health: AWS_EC2_" in mail["body"]
    assert [c.operation for c in calls.mutating() if c.service not in ("dynamodb", "sns")] == []
    # Health sends the event again when it updates it (a new event id, the same event ARN)
    assert invoke(health(load_event, which, web), "r2")["status"] == "done"
    assert invoke(event, "r3")["status"] == "duplicate"
    assert len(mailbox()) == 1


def test_events_it_does_not_handle_change_nothing(
    env: dict[str, str], load_event: Load, mailbox: Mailbox, calls: CallRecorder
) -> None:
    good = scheduled(load_event)
    events: dict[str, Any] = {
        "not the schedule": load_event("instance_recovery/eventbridge.not_scheduled"),
        "a state it does not handle": load_event("instance_recovery/ec2.state_change.not_handled"),
        "another Health event": load_event("instance_recovery/health.not_handled"),
        "a Health event naming no instance": {
            **load_event("instance_recovery/health.simplified_recovery.success"),
            "resources": [],
            "detail": {"service": "EC2", "eventTypeCode": "AWS_EC2_SIMPLIFIED_AUTO_RECOVERY_SUCCESS"},
        },
        "a malformed one": {**good, "time": "yesterday"},
        "an empty one": {},
        "another account's": {**good, "account": "999988887777"},
    }
    for which, event in events.items():
        result = invoke(event)
        assert result["status"] == "ignored" and result["reason"], which
    assert calls.calls == [] and mailbox() == []  # turned down before any AWS call


def test_a_refused_alarm_is_reported_and_the_others_are_made(
    env: dict[str, str], load_event: Load, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused, fine = launch({"AutoRecover": "true"}), launch({"AutoRecover": "true"})
    fault = ResourceFault("cloudwatch", "PutMetricAlarm", "LimitExceeded", names(refused))
    FaultInjector(resource_faults=[fault]).install(monkeypatch)
    result = invoke(scheduled(load_event))
    assert (result["Changed"], result["Failed"]) == (1, 1)
    assert set(alarms()) == {PREFIX + fine}
    (mail,) = mailbox()
    assert mail["attributes"]["severity"] == "warning"
    assert f"Could not put {PREFIX}{refused}: LimitExceeded" in mail["body"]


def test_a_run_killed_between_two_steps_is_finished_and_mailed_by_the_retry(
    env: dict[str, str], load_event: Load, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    web = launch({"AutoRecover": "true"})
    event = scheduled(load_event)
    real_acted = outbox.Outbox.acted

    def killed(self: outbox.Outbox, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("killed")  # the alarm is put, the result is not recorded

    monkeypatch.setattr(outbox.Outbox, "acted", killed)
    with pytest.raises(RuntimeError, match="killed"):
        invoke(event, "r1")
    assert PREFIX + web in alarms() and mailbox() == []
    assert [i["status"]["S"] for i in outbox_items()] == ["acting"]  # the intent was recorded first
    monkeypatch.setattr(outbox.Outbox, "acted", real_acted)
    with CallRecorder() as retry:
        invoke(event, "r2")  # Lambda's retry of the same event
    assert retry.count("cloudwatch", "PutMetricAlarm") == 1  # the recorded intent, carried out again
    (mail,) = mailbox()
    assert "recovery alarms 1 created" in mail["subject"] and web in mail["body"]
    assert len(alarms()) == 1 and outbox_items() == []


def test_alarms_the_time_did_not_reach_are_left_for_the_next_run_and_said_so(
    env: dict[str, str], calls: CallRecorder
) -> None:
    specs = [AlarmSpec(f"{PREFIX}{i}", i, 60, 2, (RECOVER,)).as_dict() for i in ("i-01234567", "i-01234568")]
    intent = {"trigger": "schedule", "dry_run": False, "checked": 2, "watched": 2, "create": specs}
    intent |= {"update": [], "delete": [], "ineligible": [], "instances": {}}
    common = CommonConfig.from_env()
    out_of_time = Context("instance_recovery", Config.from_env(), common, datetime.now(UTC), Deadline(0.0))
    result = run.act(out_of_time, intent)
    assert result == {"put": [], "deleted": [], "failures": [], "not_reached": 2}
    assert calls.calls == []  # nothing to delete, no time to put: the next run plans them again
    mail = report.mail(out_of_time, intent, result)
    assert mail is not None and mail.subject == f"[{STACK}] 2 left for the next run"
    assert "2 more alarms to put" in mail.body
