"""The IAM evaluator of the semantic template tests (tests/template/iam_eval.py) follows the
documented evaluation rules: each case below is one rule of the IAM User Guide."""

from __future__ import annotations

from typing import Any

import pytest

from template.iam_eval import (
    ALLOW,
    DENY,
    IMPLICIT_DENY,
    Request,
    decide,
    decide_all,
    decide_with_resource_policy,
)

pytestmark = pytest.mark.unit

INSTANCE = "arn:aws:ec2:eu-west-1:123456789012:instance/i-0123456789abcdef0"
OTHER_REGION = "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0"


def allow(action: Any, resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def deny(action: Any, resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Deny", "Action": action, "Resource": resource, **extra}


def test_nothing_allowed_is_an_implicit_deny_and_an_explicit_deny_wins() -> None:
    assert decide([], Request("ec2:StopInstances", INSTANCE)) == IMPLICIT_DENY
    assert decide([allow("ec2:StopInstances")], Request("ec2:StopInstances", INSTANCE)) == ALLOW
    both = [allow("ec2:*"), deny("ec2:StopInstances", INSTANCE)]
    assert decide(both, Request("ec2:StopInstances", INSTANCE)) == DENY
    assert decide(both, Request("ec2:StartInstances", INSTANCE)) == ALLOW


def test_action_and_resource_wildcards_and_their_case() -> None:
    statements = [allow(["ec2:Describe*", "ssm:Get?ommandInvocation"], "arn:aws:ec2:eu-west-1:*:instance/*")]
    assert decide(statements, Request("EC2:describeinstances", INSTANCE)) == ALLOW  # actions: any case
    assert decide(statements, Request("ssm:GetCommandInvocation", INSTANCE)) == ALLOW
    assert decide(statements, Request("ec2:StopInstances", INSTANCE)) == IMPLICIT_DENY
    assert decide(statements, Request("ec2:DescribeInstances", OTHER_REGION)) == IMPLICIT_DENY
    assert decide(statements, Request("ec2:DescribeInstances", INSTANCE.upper())) == IMPLICIT_DENY


def test_not_action_and_not_resource() -> None:
    statements = [{"Effect": "Allow", "NotAction": "ec2:Stop*", "NotResource": OTHER_REGION}]
    assert decide(statements, Request("ec2:StartInstances", INSTANCE)) == ALLOW
    assert decide(statements, Request("ec2:StopInstances", INSTANCE)) == IMPLICIT_DENY
    assert decide(statements, Request("ec2:StartInstances", OTHER_REGION)) == IMPLICIT_DENY


def test_keys_of_a_condition_and_its_operators_all_hold_one_value_of_a_key_is_enough() -> None:
    statement = allow(
        "ec2:StopInstances",
        Condition={
            "StringEquals": {"ec2:RootDeviceType": "ebs", "aws:RequestedRegion": ["eu-west-1", "eu-west-2"]},
            "Bool": {"aws:SecureTransport": "true"},
        },
    )
    good = {"ec2:RootDeviceType": "ebs", "aws:RequestedRegion": "eu-west-2", "aws:SecureTransport": True}
    assert decide([statement], Request("ec2:StopInstances", INSTANCE, good)) == ALLOW
    for key, value in (("ec2:RootDeviceType", "instance-store"), ("aws:SecureTransport", False)):
        assert (
            decide([statement], Request("ec2:StopInstances", INSTANCE, {**good, key: value})) == IMPLICIT_DENY
        )
    missing = {k: v for k, v in good.items() if k != "aws:RequestedRegion"}
    assert decide([statement], Request("ec2:StopInstances", INSTANCE, missing)) == IMPLICIT_DENY


def test_condition_key_names_are_case_insensitive_values_are_not_unless_ignore_case() -> None:
    equals = allow("x:Y", Condition={"StringEquals": {"ec2:ResourceTag/AutoStop": "false"}})
    assert decide([equals], Request("x:Y", "*", {"EC2:resourcetag/autostop": "false"})) == ALLOW
    assert decide([equals], Request("x:Y", "*", {"ec2:ResourceTag/AutoStop": "FALSE"})) == IMPLICIT_DENY
    ignore_case = deny(
        "x:Y", Condition={"StringEqualsIgnoreCase": {"ec2:ResourceTag/AutoStop": ["false", "no"]}}
    )
    assert (
        decide([allow("x:Y"), ignore_case], Request("x:Y", "*", {"ec2:ResourceTag/AutoStop": "No"})) == DENY
    )


def test_like_and_arn_operators_take_wildcards_per_arn_segment() -> None:
    like = allow("x:Y", Condition={"StringLike": {"k": "snooze-until:*"}})
    assert decide([like], Request("x:Y", "*", {"k": "snooze-until:2030-01-01"})) == ALLOW
    assert decide([like], Request("x:Y", "*", {"k": "snooze"})) == IMPLICIT_DENY
    for operator in ("ArnLike", "ArnEquals"):
        arn = allow(
            "x:Y", Condition={operator: {"aws:SourceArn": "arn:aws:events:*:123456789012:rule/stack-*"}}
        )
        ok = {"aws:SourceArn": "arn:aws:events:eu-west-1:123456789012:rule/stack-Schedule-1"}
        other = {"aws:SourceArn": "arn:aws:events:eu-west-1:210987654321:rule/stack-Schedule-1"}
        assert decide([arn], Request("x:Y", "*", ok)) == ALLOW
        assert decide([arn], Request("x:Y", "*", other)) == IMPLICIT_DENY
        assert decide([arn], Request("x:Y", "*", {"aws:SourceArn": "not-an-arn"})) == IMPLICIT_DENY


def test_null_tests_presence_and_an_empty_list_is_no_value() -> None:
    present = deny("x:Y", Condition={"Null": {"ec2:ResourceTag/eks:cluster-name": "false"}})
    absent = allow("x:Y", Condition={"Null": {"aws:TagKeys": "true"}})
    assert (
        decide([allow("x:Y"), present], Request("x:Y", "*", {"ec2:ResourceTag/eks:cluster-name": ""})) == DENY
    )
    assert decide([allow("x:Y"), present], Request("x:Y", "*", {})) == ALLOW
    assert decide([absent], Request("x:Y", "*", {"aws:TagKeys": []})) == ALLOW
    assert decide([absent], Request("x:Y", "*", {"aws:TagKeys": ["a"]})) == IMPLICIT_DENY


def test_for_all_values_holds_for_no_value_which_a_null_check_closes() -> None:
    keys = {"ForAllValues:StringEquals": {"aws:TagKeys": ["StoppedBy", "StoppedAt"]}}
    open_ = allow("ec2:CreateTags", Condition=keys)
    closed = allow("ec2:CreateTags", Condition={**keys, "Null": {"aws:TagKeys": "false"}})
    for statement in (open_, closed):
        assert (
            decide([statement], Request("ec2:CreateTags", INSTANCE, {"aws:TagKeys": ["StoppedBy"]})) == ALLOW
        )
        wrong = {"aws:TagKeys": ["StoppedBy", "AutoStop"]}
        assert decide([statement], Request("ec2:CreateTags", INSTANCE, wrong)) == IMPLICIT_DENY
    assert decide([open_], Request("ec2:CreateTags", INSTANCE, {})) == ALLOW  # the hole
    assert decide([closed], Request("ec2:CreateTags", INSTANCE, {})) == IMPLICIT_DENY


def test_for_any_value_needs_one_matching_value() -> None:
    statement = allow("x:Y", Condition={"ForAnyValue:StringEquals": {"aws:TagKeys": ["a", "b"]}})
    assert decide([statement], Request("x:Y", "*", {"aws:TagKeys": ["z", "b"]})) == ALLOW
    assert decide([statement], Request("x:Y", "*", {"aws:TagKeys": ["z"]})) == IMPLICIT_DENY
    assert decide([statement], Request("x:Y", "*", {})) == IMPLICIT_DENY


def test_negated_operators_hold_when_the_key_is_absent_if_exists_too() -> None:
    not_equals = deny("x:Y", Condition={"StringNotEquals": {"aws:SourceAccount": "123456789012"}})
    assert decide([allow("x:Y"), not_equals], Request("x:Y", "*", {})) == DENY
    assert (
        decide([allow("x:Y"), not_equals], Request("x:Y", "*", {"aws:SourceAccount": "123456789012"}))
        == ALLOW
    )
    if_exists = allow("x:Y", Condition={"StringEqualsIfExists": {"ec2:ResourceTag/Backup": "true"}})
    assert decide([if_exists], Request("x:Y", "*", {})) == ALLOW
    assert decide([if_exists], Request("x:Y", "*", {"ec2:ResourceTag/Backup": "no"})) == IMPLICIT_DENY


def test_numeric_operators() -> None:
    statement = allow("x:Y", Condition={"NumericLessThan": {"n": "10"}, "NumericGreaterThanEquals": {"n": 2}})
    assert [decide([statement], Request("x:Y", "*", {"n": n})) for n in (1, 2, 9, 10)] == [
        IMPLICIT_DENY,
        ALLOW,
        ALLOW,
        IMPLICIT_DENY,
    ]


def test_an_operator_it_does_not_know_is_an_error_not_a_guess() -> None:
    statement = allow("x:Y", Condition={"DateLessThan": {"aws:CurrentTime": "2030-01-01T00:00:00Z"}})
    with pytest.raises(ValueError, match="DateLessThan"):
        decide([statement], Request("x:Y", "*", {"aws:CurrentTime": "2029-01-01T00:00:00Z"}))


def test_a_call_on_several_resources_needs_every_one() -> None:
    document = "arn:aws:ssm:eu-west-1::document/AWS-RunPatchBaseline"
    statements = [
        allow("ssm:SendCommand", [document, "arn:aws:ec2:eu-west-1:123456789012:instance/*"]),
        deny(
            "ssm:SendCommand",
            "arn:aws:ec2:eu-west-1:123456789012:instance/*",
            Condition={"StringEqualsIgnoreCase": {"ssm:resourceTag/AutoPatch": "false"}},
        ),
    ]
    assert decide_all(statements, "ssm:SendCommand", {document: {}, INSTANCE: {}}) == ALLOW
    opted_out = {document: {}, INSTANCE: {"ssm:resourceTag/AutoPatch": "False"}}
    assert decide_all(statements, "ssm:SendCommand", opted_out) == DENY
    other_document = {"arn:aws:ssm:eu-west-1:123456789012:document/Evil": {}, INSTANCE: {}}
    assert decide_all(statements, "ssm:SendCommand", other_document) == IMPLICIT_DENY
    # a resource's tags are that resource's: the document is not "tagged" by the instance
    assert (
        decide_all(statements, "ssm:SendCommand", {document: {"ssm:resourceTag/AutoPatch": "false"}}) == ALLOW
    )


def test_resource_policies_match_principals_and_a_key_policy_delegates_only_through_the_account() -> None:
    role = {"AWS": "arn:aws:iam::123456789012:role/fn"}
    key_policy = [
        {
            "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
            "Action": "kms:*",
            "Resource": "*",
        },
        {
            "Effect": "Allow",
            "Principal": {"Service": "cloudwatch.amazonaws.com"},
            "Action": "kms:Decrypt",
            "Resource": "*",
        },
    ]
    key = "arn:aws:kms:eu-west-1:123456789012:key/k"
    from_role = Request("kms:Decrypt", key, {}, role)
    assert decide_with_resource_policy(key_policy, [], from_role, kms=True) == IMPLICIT_DENY
    assert decide_with_resource_policy(key_policy, [allow("kms:Decrypt")], from_role, kms=True) == ALLOW
    no_delegation = key_policy[1:]
    assert (
        decide_with_resource_policy(no_delegation, [allow("kms:Decrypt")], from_role, kms=True)
        == IMPLICIT_DENY
    )
    service = Request("kms:Decrypt", key, {}, {"Service": "cloudwatch.amazonaws.com"})
    assert decide_with_resource_policy(key_policy, [], service, kms=True) == ALLOW
    other = Request("kms:Decrypt", key, {}, {"Service": "events.amazonaws.com"})
    assert decide_with_resource_policy(key_policy, [], other, kms=True) == IMPLICIT_DENY
    # an identity policy's Deny, or the resource policy's, wins over either Allow
    assert decide_with_resource_policy(key_policy, [deny("kms:*")], service, kms=True) == DENY
    tls = [*key_policy, {"Effect": "Deny", "Principal": "*", "Action": "kms:*", "Resource": "*"}]
    assert decide_with_resource_policy(tls, [], service, kms=True) == DENY
    # not a key: a same-account identity policy is enough
    queue = "arn:aws:sqs:eu-west-1:123456789012:q"
    send = Request("sqs:SendMessage", queue, {}, role)
    assert decide_with_resource_policy([], [allow("sqs:SendMessage", queue)], send) == ALLOW
