"""owner_tagger's template section: the rule matches the lookup table, CreateTags is limited to
the owner tag key, the optional trail is secured and off by default."""

from __future__ import annotations

from typing import Any

import pytest

from owner_tagger.app import PERMISSIONS
from owner_tagger.event import CREATION_CALLS, DETAIL_TYPE, EVENT_SOURCE, SOURCE
from template_tools import cloudformation_template, expanded_template, raw_template
from tests.owner_tagger import test_owner_tagger_never_overwrite as never_overwrite

pytestmark = pytest.mark.unit


def _function() -> dict[str, Any]:
    return dict(raw_template()["Resources"]["OwnerTaggerFunction"]["Properties"])


def test_rule_matches_exactly_the_lookup_table() -> None:
    pattern = _function()["Events"]["CreationCalls"]["Properties"]["Pattern"]
    assert pattern["source"] == [SOURCE]
    assert pattern["detail-type"] == [DETAIL_TYPE]
    assert pattern["detail"]["eventSource"] == [EVENT_SOURCE]
    assert sorted(pattern["detail"]["eventName"]) == sorted(CREATION_CALLS)
    assert pattern["detail"]["errorCode"] == [{"exists": False}]


def test_owner_tag_key_and_outbox_reach_the_function_from_globals() -> None:
    """Product-wide: every function gets OWNER_TAG_KEY and OUTBOX_TABLE from Globals; a copy in
    the function's own section could only drift from them."""
    shared = raw_template()["Globals"]["Function"]["Environment"]["Variables"]
    assert shared["OWNER_TAG_KEY"] == {"Ref": "OwnerTagKey"}
    assert shared["OUTBOX_TABLE"] == {"Ref": "OutboxTable"}
    assert raw_template()["Parameters"]["OwnerTagKey"]["Default"] == "Owner"
    own = _function()["Environment"]["Variables"]
    assert own == {"POWERTOOLS_SERVICE_NAME": "owner_tagger"}


def test_claims_and_outbox_only_in_its_own_partitions() -> None:
    (statement,) = [s for s in _statements() if s.get("Sid") == "OwnClaimsAndOutbox"]
    assert statement["Resource"] == {"Fn::GetAtt": ["OutboxTable", "Arn"]}
    assert statement["Condition"]["ForAllValues:StringEquals"] == {
        "dynamodb:LeadingKeys": ["claim#owner_tagger", "outbox#owner_tagger"]
    }


def _statements() -> list[dict[str, Any]]:
    role = cloudformation_template()["Resources"]["OwnerTaggerFunctionRole"]
    found: list[dict[str, Any]] = []
    for policy in role["Properties"]["Policies"]:
        found += policy["PolicyDocument"]["Statement"]
    return found


def test_create_tags_only_for_the_owner_key_on_scoped_arns() -> None:
    (statement,) = [s for s in _statements() if "ec2:CreateTags" in str(s["Action"])]
    assert statement["Action"] == "ec2:CreateTags"
    assert statement["Condition"]["ForAllValues:StringEquals"] == {"aws:TagKeys": [{"Ref": "OwnerTagKey"}]}
    assert statement["Condition"]["Null"] == {"aws:TagKeys": "false"}
    resources = [r["Fn::Sub"] for r in statement["Resource"]]
    assert all(r.startswith("arn:${AWS::Partition}:ec2:${AWS::Region}:") for r in resources)
    assert {r.rsplit(":", 1)[1] for r in resources} == {
        "instance/*",
        "volume/*",
        "network-interface/*",
        "snapshot/*",
        "image/*",
    }


def test_unscoped_statements_are_read_only() -> None:
    for statement in _statements():
        if statement.get("Resource") == "*":
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert all(a.split(":")[1].startswith("Describe") for a in actions), statement
    granted = {
        a for s in _statements() for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    }
    # Lambda itself: SQS for the on-failure destination, EventBridge for the on-success one
    assert granted - {"sqs:SendMessage", "events:PutEvents"} == set(PERMISSIONS)


def test_trail_is_optional_and_secured() -> None:
    template = expanded_template()
    assert template["Parameters"]["OwnerTaggerCreateCloudTrail"]["Default"] == "false"
    assert template["Conditions"]["OwnerTaggerCreatesTrail"] == {
        "Fn::Equals": [{"Ref": "OwnerTaggerCreateCloudTrail"}, "true"]
    }
    resources = template["Resources"]
    for name in ("OwnerTaggerTrailBucket", "OwnerTaggerTrailBucketPolicy", "OwnerTaggerTrail"):
        assert resources[name]["Condition"] == "OwnerTaggerCreatesTrail", name
    bucket = resources["OwnerTaggerTrailBucket"]["Properties"]
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert (
        all(bucket["PublicAccessBlockConfiguration"].values())
        and len(bucket["PublicAccessBlockConfiguration"]) == 4
    )
    assert bucket["LifecycleConfiguration"]["Rules"][0]["ExpirationInDays"] == {
        "Ref": "OwnerTaggerTrailLogRetentionDays"
    }
    statements = resources["OwnerTaggerTrailBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    deny = [s for s in statements if s["Effect"] == "Deny"]
    assert deny and deny[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    trail = resources["OwnerTaggerTrail"]["Properties"]
    assert trail["EnableLogFileValidation"] is True and trail["IsLogging"] is True


def test_the_deny_names_the_parameter_key_not_a_fixed_one() -> None:
    """OwnerTagKey=CostCenter: a CostCenter tag blocks the write, an Owner tag does not."""
    arn = never_overwrite._arn("vol-0123456789abcdef0")
    request = {"aws:TagKeys": ["CostCenter"], "aws:RequestTag/CostCenter": "x"}
    statements = never_overwrite._statements("CostCenter")
    assert (
        never_overwrite.decide_all(
            statements, "ec2:CreateTags", {arn: {"ec2:ResourceTag/CostCenter": "y"}}, request
        )
        != never_overwrite.ALLOW
    )
    assert (
        never_overwrite.decide_all(
            statements, "ec2:CreateTags", {arn: {"ec2:ResourceTag/Owner": "y"}}, request
        )
        == never_overwrite.ALLOW
    )
    assert (
        never_overwrite.decide_all(statements, "ec2:CreateTags", {arn: {}}, request) == never_overwrite.ALLOW
    )
