"""The resource policies (the notification key, the alarm topic, the trail bucket), asked as
IAM decides them on the deployed template: the right principals may, the wrong ones - another
account, another trail, another service, no TLS - may not. (The failed-events queue's policy
and the key's service statements: tests/template/test_iam_semantics.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from template.iam_eval import ALLOW, DENY, Request, decide, decide_with_resource_policy
from template.test_iam_semantics import (
    OTHER_ACCOUNT,
    QUEUE_CONTEXT,
    RENDERINGS,
    key_decision,
    policy,
    queue_arn,
    rendering,
    role,
    topic_arn,
)
from template_tools import ACCOUNT, REGION, automation_folders

pytestmark = pytest.mark.unit

KEY_ADMIN_ACTIONS = (
    "kms:PutKeyPolicy",
    "kms:DescribeKey",
    "kms:ScheduleKeyDeletion",
    "kms:EnableKeyRotation",
)


@pytest.fixture(params=RENDERINGS)
def deployed(request: pytest.FixtureRequest) -> dict[str, Any]:
    return rendering(request.param)


# -- the notification key -------------------------------------------------------------------------


def _key(deployed: dict[str, Any]) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = deployed["Resources"]["NotificationKey"]["Properties"]["KeyPolicy"][
        "Statement"
    ]
    return statements


KEY_ARN = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


@pytest.mark.parametrize("action", KEY_ADMIN_ACTIONS)
def test_the_account_administers_the_key_through_its_own_iam_policies(
    deployed: dict[str, Any], action: str
) -> None:
    """The key policy lets the account decide (its root, and its administrators' IAM policies):
    without that nobody could change or delete the key. Another account cannot, nor a function
    role (it has no kms grant)."""
    admin_policy = [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]
    admin = Request(action, KEY_ARN, {}, {"AWS": f"arn:aws:iam::{ACCOUNT}:role/Admin"})
    assert decide_with_resource_policy(_key(deployed), admin_policy, admin, kms=True) == ALLOW
    root = Request(action, KEY_ARN, {}, {"AWS": f"arn:aws:iam::{ACCOUNT}:root"})
    assert decide_with_resource_policy(_key(deployed), [], root, kms=True) == ALLOW
    stranger = Request(action, KEY_ARN, {}, {"AWS": f"arn:aws:iam::{OTHER_ACCOUNT}:role/Admin"})
    assert decide_with_resource_policy(_key(deployed), [], stranger, kms=True) != ALLOW
    for name in automation_folders():
        assert key_decision(deployed, action, {"AWS": f"arn:aws:iam::{ACCOUNT}:role/{name}"}, {}) != ALLOW


@pytest.mark.parametrize("action", ["kms:GenerateDataKey", "kms:Decrypt"])
def test_eventbridge_of_another_account_may_not_use_the_key_even_for_the_queue(
    deployed: dict[str, Any], action: str
) -> None:
    events = {"Service": "events.amazonaws.com"}
    theirs = {"aws:SourceAccount": OTHER_ACCOUNT, QUEUE_CONTEXT: queue_arn(deployed)}
    assert key_decision(deployed, action, events, theirs) != ALLOW


@pytest.mark.parametrize("action", ["kms:GenerateDataKey", "kms:Decrypt"])
def test_the_key_serves_the_queue_only_through_sqs_and_only_for_this_account(
    deployed: dict[str, Any], action: str
) -> None:
    queue = {QUEUE_CONTEXT: queue_arn(deployed)}
    via_sqs = f"sqs.{REGION}.amazonaws.com"
    me = {"AWS": f"arn:aws:iam::{ACCOUNT}:role/{automation_folders()[0]}"}
    assert (
        key_decision(deployed, action, me, {**queue, "kms:CallerAccount": ACCOUNT, "kms:ViaService": via_sqs})
        == ALLOW
    )
    direct = {**queue, "kms:CallerAccount": ACCOUNT}  # a direct kms call, not through SQS
    assert key_decision(deployed, action, me, direct) != ALLOW
    other_service = {**direct, "kms:ViaService": f"s3.{REGION}.amazonaws.com"}
    assert key_decision(deployed, action, me, other_service) != ALLOW
    stranger = {"AWS": f"arn:aws:iam::{OTHER_ACCOUNT}:role/x"}
    across = {**queue, "kms:CallerAccount": OTHER_ACCOUNT, "kms:ViaService": via_sqs}
    assert key_decision(deployed, action, stranger, across) != ALLOW


# -- the alarm topic ------------------------------------------------------------------------------


def test_nobody_publishes_to_the_topic_without_tls(deployed: dict[str, Any]) -> None:
    statements = policy(deployed, "AlarmTopicPolicy")
    cloudwatch = {"Service": "cloudwatch.amazonaws.com"}
    plain = {"aws:SourceAccount": ACCOUNT, "aws:SecureTransport": False}
    assert decide(statements, Request("sns:Publish", topic_arn(deployed), plain, cloudwatch)) == DENY
    for name in automation_folders():
        me = {"AWS": f"arn:aws:iam::{ACCOUNT}:role/{name}"}
        publish = Request("sns:Publish", topic_arn(deployed), {"aws:SecureTransport": False}, me)
        assert decide_with_resource_policy(statements, role(deployed, name), publish) == DENY, name
    anyone = {"AWS": f"arn:aws:iam::{OTHER_ACCOUNT}:root"}
    assert (
        decide(
            statements, Request("sns:Publish", topic_arn(deployed), {"aws:SecureTransport": False}, anyone)
        )
        != ALLOW
    )
    other_service = {"Service": "events.amazonaws.com"}
    ok = {"aws:SourceAccount": ACCOUNT, "aws:SecureTransport": True}
    assert decide(statements, Request("sns:Publish", topic_arn(deployed), ok, other_service)) != ALLOW


# -- the owner_tagger trail's bucket (only when the stack creates the trail) -----------------------

CLOUDTRAIL = {"Service": "cloudtrail.amazonaws.com"}
FULL_CONTROL = {"s3:x-amz-acl": "bucket-owner-full-control"}


@pytest.fixture
def trail() -> dict[str, Any]:
    deployed = rendering("features-on")
    resources = deployed["Resources"]
    bucket = resources["OwnerTaggerTrailBucketPolicy"]["Properties"]["Bucket"]
    assert resources["OwnerTaggerTrail"]["Properties"]["S3BucketName"] == bucket
    name = resources["OwnerTaggerTrail"]["Properties"]["TrailName"]
    return {
        "policy": policy(deployed, "OwnerTaggerTrailBucketPolicy"),
        "bucket": f"arn:aws:s3:::{bucket}",
        "trail": f"arn:aws:cloudtrail:{REGION}:{ACCOUNT}:trail/{name}",
    }


def _log_object(trail: dict[str, Any], account: str = ACCOUNT) -> str:
    return f"{trail['bucket']}/AWSLogs/{account}/CloudTrail/{REGION}/2026/01/01/log.json.gz"


def test_cloudtrail_checks_the_acl_and_writes_the_logs_of_this_stacks_trail(trail: dict[str, Any]) -> None:
    """CloudTrail's two calls when it delivers (else the trail stops logging and owner_tagger
    sees no creation event), over TLS, for this stack's trail."""
    ours = {"aws:SourceArn": trail["trail"], "aws:SecureTransport": True}
    statements = trail["policy"]
    assert decide(statements, Request("s3:GetBucketAcl", trail["bucket"], ours, CLOUDTRAIL)) == ALLOW
    write = Request("s3:PutObject", _log_object(trail), {**ours, **FULL_CONTROL}, CLOUDTRAIL)
    assert decide(statements, write) == ALLOW


def test_no_other_trail_principal_prefix_or_acl_may_use_the_trail_bucket(trail: dict[str, Any]) -> None:
    statements = trail["policy"]
    ours = {"aws:SourceArn": trail["trail"], "aws:SecureTransport": True}
    other_trail = {**ours, "aws:SourceArn": trail["trail"].rsplit("/", 1)[0] + "/someone-elses"}
    foreign_trail = {**ours, "aws:SourceArn": trail["trail"].replace(ACCOUNT, OTHER_ACCOUNT)}
    for context in (other_trail, foreign_trail, {"aws:SecureTransport": True}):
        acl = Request("s3:GetBucketAcl", trail["bucket"], context, CLOUDTRAIL)
        assert decide(statements, acl) != ALLOW, context
        put = Request("s3:PutObject", _log_object(trail), {**context, **FULL_CONTROL}, CLOUDTRAIL)
        assert decide(statements, put) != ALLOW, context
    # the bucket owner must own every log object: no write without the full-control ACL
    assert decide(statements, Request("s3:PutObject", _log_object(trail), ours, CLOUDTRAIL)) != ALLOW
    for key in (
        _log_object(trail, OTHER_ACCOUNT),
        f"{trail['bucket']}/anything.html",
        f"{trail['bucket']}/AWSLogs/x",
    ):
        put = Request("s3:PutObject", key, {**ours, **FULL_CONTROL}, CLOUDTRAIL)
        assert decide(statements, put) != ALLOW, key
    for service in ("config.amazonaws.com", "logging.s3.amazonaws.com"):
        put = Request("s3:PutObject", _log_object(trail), {**ours, **FULL_CONTROL}, {"Service": service})
        assert decide(statements, put) != ALLOW, service
    plain = {**ours, **FULL_CONTROL, "aws:SecureTransport": False}
    assert decide(statements, Request("s3:PutObject", _log_object(trail), plain, CLOUDTRAIL)) == DENY
    anyone = {"AWS": f"arn:aws:iam::{ACCOUNT}:role/any"}
    assert (
        decide(
            statements, Request("s3:GetObject", _log_object(trail), {"aws:SecureTransport": False}, anyone)
        )
        == DENY
    )
