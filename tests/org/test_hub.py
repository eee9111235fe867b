"""The roll-up hub (org/hub.yaml, org/hub/rollup): member stacks' run summaries in, one daily
mail out. The summaries are Lambda on-success destination events, as a member's RollupForward
rule delivers them; the table and the topic are moto's."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from rollup import collect, mail
from rollup.report import Summary, build

from template.iam_eval import ALLOW, IMPLICIT_DENY, Request, decide
from template_tools import ROOT

ORG = "o-abcdefghij"
ACCOUNTS = {"111111111111": "eu-west-1", "222222222222": "eu-west-1", "333333333333": "us-east-1"}
EXPECTED = ["website_health_check", "patch_sweeper", "snapshot_rotator", "idle_stopper", "instance_recovery"]
DAY = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)


def summary_event(account: str, region: str, automation: str, **counts: int) -> dict[str, Any]:
    """A run's result as Lambda's on-success destination puts it on the member's default bus."""
    payload = {"status": "done", "stack": "ops-autopilot", "automation": automation, "dry_run": False}
    payload.update({"Checked": 0, "Changed": 0, "Skipped": 0, "Failed": 0, **counts})
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Lambda Function Invocation Result - Success",
        "source": "lambda",
        "account": account,
        "time": "2026-12-02T15:00:00Z",
        "region": region,
        "resources": [],
        "detail": {
            "version": "1.0",
            "timestamp": "2026-12-02T15:00:00.000Z",
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": f"arn:aws:lambda:{region}:{account}:function:ops-autopilot-Fn-1:$LATEST",
                "condition": "Success",
                "approximateInvokeCount": 1,
            },
            "requestPayload": {"detail-type": "Scheduled Event"},
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST"},
            "responsePayload": payload,
        },
    }


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[dict[str, str]]]:
    """The hub's table and topic in moto (a queue subscribed: the mailbox), the clock on DAY."""
    dynamodb = boto3.client("dynamodb")
    dynamodb.create_table(
        TableName="summaries",
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("pk", "sk")],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        BillingMode="PAY_PER_REQUEST",
    )
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic = sns.create_topic(Name="rollup")["TopicArn"]
    queue = sqs.create_queue(QueueName="mailbox")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    monkeypatch.setenv("TABLE", "summaries")
    monkeypatch.setenv("TOPIC_ARN", topic)
    monkeypatch.setenv("EXPECTED_AUTOMATIONS", ",".join(EXPECTED))
    monkeypatch.setenv("ORG_NAME", ORG)
    monkeypatch.setattr(collect, "clock", lambda: DAY)
    received: list[dict[str, str]] = []

    def mailbox() -> list[dict[str, str]]:
        for message in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
            body = json.loads(message["Body"])
            received.append({"subject": body.get("Subject", ""), "body": body["Message"]})
        return received

    return mailbox


def day_of_runs() -> list[dict[str, Any]]:
    """Accounts 1 and 2 ran everything (2 ran idle_stopper twice, one stop failed); account 3
    ran all but patch_sweeper."""
    events = []
    for account, region in ACCOUNTS.items():
        for automation in EXPECTED:
            if account == "333333333333" and automation == "patch_sweeper":
                continue
            events.append(summary_event(account, region, automation, Checked=10, Changed=1))
    events.append(summary_event("222222222222", "eu-west-1", "idle_stopper", Checked=10, Changed=2, Failed=1))
    return events


@pytest.mark.integration
def test_three_accounts_make_one_roll_up_mail_with_what_failed_and_what_did_not_run(
    hub: Callable[[], list[dict[str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    events = day_of_runs()
    assert all(collect.handler(e, None)["status"] == "counted" for e in events)
    assert collect.handler(events[0], None)["status"] == "duplicate"  # a redelivery counts once
    monkeypatch.setattr(collect, "clock", lambda: DAY + timedelta(days=1))  # the next morning
    first = mail.handler({}, None)
    assert first == {"status": "mailed", "day": "2026-12-02", "failed": 1, "missing": 1, "silent": 0}
    (rollup,) = hub()
    assert (
        rollup["subject"] == "[ops-autopilot roll-up] 2026-12-02: FAILURES - 3 accounts, 1 failed, 1 not run"
    )
    body = rollup["body"]
    for account in ACCOUNTS:
        assert f"Account {account}" in body
    assert "- 333333333333 us-east-1 patch_sweeper" in body and "patch_sweeper: DID NOT RUN" in body
    assert "idle_stopper: 2 runs, 20 checked, 3 changed, 0 skipped, 1 failed  <- FAILED" in body
    assert "website_health_check: 1 run, 10 checked, 1 changed, 0 skipped, 0 failed" in body
    assert mail.handler({}, None)["status"] == "mailed-already" and len(hub()) == 1  # once a day


@pytest.mark.integration
def test_an_account_that_went_quiet_is_named_and_a_refused_mail_is_sent_by_the_retry(
    hub: Callable[[], list[dict[str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(collect, "clock", lambda: DAY - timedelta(days=1))
    collect.handler(summary_event("333333333333", "us-east-1", "idle_stopper"), None)  # the day before
    monkeypatch.setattr(collect, "clock", lambda: DAY)
    for automation in EXPECTED:
        collect.handler(summary_event("111111111111", "eu-west-1", automation), None)
    monkeypatch.setattr(collect, "clock", lambda: DAY + timedelta(days=1))
    real_client = boto3.client

    def refused(**_: Any) -> Any:
        raise ClientError({"Error": {"Code": "InternalError", "Message": "SNS is down"}}, "Publish")

    def client(name: str, **kwargs: Any) -> Any:
        return _Refusing(refused) if name == "sns" else real_client(name, **kwargs)

    monkeypatch.setattr(boto3, "client", client)
    with pytest.raises(ClientError):
        mail.handler({}, None)
    monkeypatch.setattr(boto3, "client", real_client)
    assert hub() == []  # nothing sent, and not marked sent: the retry mails
    assert mail.handler({}, None)["silent"] == 1
    (rollup,) = hub()
    assert "Sent nothing on this day" in rollup["body"] and "- 333333333333" in rollup["body"]
    assert "GAPS" in rollup["subject"]


class _Refusing:
    def __init__(self, publish: Callable[..., Any]) -> None:
        self.publish = publish


@pytest.mark.unit
@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda e: e.update({"source": "aws.events"}), "not a Lambda on-success"),
        (
            lambda e: e["detail"]["requestContext"].update(
                {
                    "functionArn": e["detail"]["requestContext"]["functionArn"].replace(
                        "111111111111", "999999999999"
                    )
                }
            ),
            "another account",
        ),
        (lambda e: e["detail"]["responsePayload"].update({"status": "duplicate"}), "not a finished run"),
        (lambda e: e["detail"]["responsePayload"].update({"Failed": "1; DROP"}), "not a whole number"),
        (lambda e: e["detail"]["responsePayload"].update({"automation": "../x"}), "not a finished run"),
        (lambda e: e.update({"account": "me"}), "no account"),
    ],
)
def test_what_is_not_a_members_run_summary_is_refused(
    change: Callable[[dict[str, Any]], None], why: str
) -> None:
    event = summary_event("111111111111", "eu-west-1", "idle_stopper", Failed=1)
    change(event)
    with pytest.raises(collect.Refused, match=why):
        collect.parse(event)


@pytest.mark.unit
def test_the_day_is_the_clocks_not_the_events() -> None:
    """A stale or forged event time moves nothing: parse ignores it, add files under the clock's day."""
    event = summary_event("111111111111", "eu-west-1", "idle_stopper")
    event["time"] = "2020-01-01T00:00:00Z"
    event["detail"]["timestamp"] = "2020-01-01T00:00:00.000Z"
    assert "time" not in collect.parse(event) and "day" not in collect.parse(event)


@pytest.mark.unit
def test_a_roll_up_of_a_quiet_organisation_says_ok() -> None:
    summaries = [Summary("111111111111", "eu-west-1", name, 1) for name in EXPECTED]
    rollup = build("2026-12-02", summaries, EXPECTED, ["111111111111"])
    assert rollup.subject.startswith("[ops-autopilot roll-up] 2026-12-02: OK")
    assert (rollup.failed, rollup.missing, rollup.silent) == (0, 0, [])


@pytest.mark.integration
def test_the_hub_template_lets_only_the_organisation_put_and_the_members_forward_only_their_runs() -> None:
    import subprocess
    import sys
    from pathlib import Path

    from samcli.yamlhelper import yaml_parse

    from template_tools import cloudformation_template, parameter_defaults, render

    hub_path = ROOT / "org" / "hub.yaml"
    lint = subprocess.run(
        [str(Path(sys.executable).with_name("cfn-lint")), str(hub_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    statement = yaml_parse(hub_path.read_text())["Resources"]["RollupBusPolicy"]["Properties"]["Statement"]
    statement = {
        **statement,
        "Resource": "arn:aws:events:eu-west-1:123456789012:event-bus/ops-autopilot-rollup",
    }
    bus = statement["Resource"]
    member = {"AWS": "arn:aws:iam::111111111111:role/RollupForwardRole"}
    statement["Condition"] = {"StringEquals": {"aws:PrincipalOrgID": ORG}}
    inside = Request("events:PutEvents", bus, {"aws:PrincipalOrgID": ORG}, member)
    outside = Request("events:PutEvents", bus, {"aws:PrincipalOrgID": "o-zzzzzzzzzz"}, member)
    assert decide([statement], inside) == ALLOW and decide([statement], outside) == IMPLICIT_DENY
    # the member side: no forwarding without a hub; with one, this stack's finished runs only
    template = cloudformation_template()
    defaults = parameter_defaults(template)
    assert "RollupForward" not in render(template, defaults)["Resources"]
    hub_arn = "arn:aws:events:eu-west-1:123456789012:event-bus/ops-autopilot-rollup"
    rendered = render(template, {**defaults, "OrgRollupBusArn": hub_arn})["Resources"]
    rule = rendered["RollupForward"]["Properties"]
    assert rule["EventPattern"]["detail"]["responsePayload"]["status"] == ["done"]
    assert rule["Targets"][0]["Arn"] == hub_arn
    (allowed,) = rendered["RollupForwardRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    assert (allowed["Action"], allowed["Resource"]) == ("events:PutEvents", hub_arn)
