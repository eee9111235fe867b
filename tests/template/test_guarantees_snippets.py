"""docs/guarantees.md "Who can make it act": its SCP and permissions-boundary snippets are valid
policies that name the suite's real tag keys, parameters and resources, and deny what the
section says they deny - asked of the IAM evaluator the template tests use, on the template as
deployed (the stack's own roles keep working)."""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

import pytest

from idle_stopper import decide as idle_decide
from snapshot_rotator.decide import selection
from template.iam_eval import ALLOW, DENY, Request, decide
from template_tools import (
    ACCOUNT,
    REGION,
    ROOT,
    STACK_NAME,
    cloudformation_template,
    parameter_defaults,
    raw_template,
    render,
    rendered_ref,
)

pytestmark = pytest.mark.unit

TITLE = "## Who can make it act"
DOCUMENTED_STACK = "ops-autopilot"  # the snippets' placeholder (samconfig.toml's stack_name)
PLATFORM = f"arn:aws:iam::{ACCOUNT}:role/ops-platform"
DEVELOPER = f"arn:aws:iam::{ACCOUNT}:role/developer"
INSTANCE = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-0123456789abcdef0"


def section() -> str:
    text = (ROOT / "docs" / "guarantees.md").read_text()
    assert TITLE in text
    body = text.split(TITLE, 1)[1]
    return body.split("\n## ", 1)[0]


def snippets() -> list[dict[str, Any]]:
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)\n```", section(), re.DOTALL)]


def for_this_stack(policy: dict[str, Any]) -> list[dict[str, Any]]:
    """The snippet's statements with its placeholder stack name replaced by the rendered one."""
    statements: list[dict[str, Any]] = json.loads(
        json.dumps(policy["Statement"]).replace(DOCUMENTED_STACK, STACK_NAME)
    )
    return statements


@cache
def deployed() -> dict[str, Any]:
    template = cloudformation_template()
    return render(template, parameter_defaults(template))


def suite_tag_keys() -> set[str]:
    parameters = raw_template()["Parameters"]
    patch_opt_out = raw_template()["Resources"]["PatchSweeperFunction"]["Properties"]["Environment"][
        "Variables"
    ]
    return {
        idle_decide.AUTOSTOP_TAG,
        idle_decide.STOP_AFTER_TAG,
        str(patch_opt_out["OPT_OUT_TAG"]),
        selection.OPT_IN_TAG,
        "ManagedBy",
        str(parameters["OwnerTagKey"]["Default"]),
    }


def test_the_section_has_an_scp_and_a_boundary_that_are_valid_policies() -> None:
    policies = snippets()
    assert len(policies) == 2
    for policy in policies:
        assert policy["Version"] == "2012-10-17"
        sids = [s["Sid"] for s in policy["Statement"]]
        assert len(sids) == len(set(sids))
        for statement in policy["Statement"]:
            assert statement["Effect"] in ("Allow", "Deny") and "Principal" not in statement
            assert statement["Action"] and statement["Resource"]
    scp = policies[0]
    assert {s["Effect"] for s in scp["Statement"]} == {"Deny"}  # an SCP here only takes away
    assert len(json.dumps(scp, separators=(",", ":"))) <= 5120  # the SCP size quota


def test_the_snippets_name_exactly_the_tags_the_suite_reads_as_opt_in_opt_out_or_owner() -> None:
    for policy in snippets():
        named = {
            key
            for s in policy["Statement"]
            for values in s.get("Condition", {}).get("ForAnyValue:StringEquals", {}).values()
            for key in values
        }
        assert named == suite_tag_keys()
    # ManagedBy: the label snapshot_rotator's role requires on every snapshot it creates
    assert "aws:RequestTag/ManagedBy" in str(raw_template()["Resources"]["SnapshotRotatorFunctionRole"])


def test_the_parameters_and_the_site_list_the_section_names_exist() -> None:
    parameters = raw_template()["Parameters"]
    named = set(re.findall(r"`([A-Z][A-Za-z]+)(?:=[^`]*)?`", section()))
    for name in named:
        if any(
            name.startswith(p)
            for p in ("WebsiteHealthCheck", "PatchSweeper", "IdleStopper", "OwnerTag", "DryRun")
        ):
            assert name in parameters, name
    assert {"IdleStopperMaxStopsPerRun", "PatchSweeperSchedule", "OwnerTagKey", "DryRun"} <= named
    sites = raw_template()["Resources"]["WebsiteHealthCheckSitesParameter"]["Properties"]["Name"]
    assert sites == {"Fn::Sub": "/${AWS::StackName}/website-health-check/sites"}
    assert "`/<stack>/website-health-check/sites`" in section()


def scp_denies(principal: str, action: str, resource: str, **context: Any) -> bool:
    (scp, _) = snippets()
    request = Request(action, resource, {"aws:PrincipalArn": principal, **context})
    return decide(for_this_stack(scp), request) == DENY


def stack_arns(kind: str) -> list[str]:
    found = []
    for logical, resource in deployed()["Resources"].items():
        if resource["Type"] == kind:
            ref = str(rendered_ref(deployed(), logical))
            found.append(
                {
                    "AWS::Lambda::Function": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{ref}",
                    "AWS::DynamoDB::Table": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{ref}",
                    "AWS::Events::Rule": f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{ref}",
                    "AWS::SSM::Parameter": f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{ref}",
                    "AWS::IAM::Role": f"arn:aws:iam::{ACCOUNT}:role/{ref}",
                }[kind]
            )
    assert found, kind
    return found


def test_the_scp_keeps_the_suites_tags_to_the_platform_and_the_stacks_roles() -> None:
    for key in suite_tag_keys():
        assert scp_denies(DEVELOPER, "ec2:CreateTags", INSTANCE, **{"aws:TagKeys": [key, "Name"]}), key
        assert scp_denies(DEVELOPER, "ec2:DeleteTags", INSTANCE, **{"aws:TagKeys": [key]}), key
        assert not scp_denies(PLATFORM, "ec2:CreateTags", INSTANCE, **{"aws:TagKeys": [key]}), key
    for role in stack_arns("AWS::IAM::Role"):  # owner_tagger's owner tag, snapshot_rotator's ManagedBy
        assert not scp_denies(role, "ec2:CreateTags", INSTANCE, **{"aws:TagKeys": ["Owner"]}), role
    assert not scp_denies(DEVELOPER, "ec2:CreateTags", INSTANCE, **{"aws:TagKeys": ["Name"]})
    assert scp_denies(DEVELOPER, "ec2:DeleteTags", INSTANCE)  # no key list: every tag at once


def test_the_scp_keeps_the_stacks_functions_parameter_rules_trail_and_tables_to_the_platform() -> None:
    for action, kind in (
        ("lambda:InvokeFunction", "AWS::Lambda::Function"),
        ("lambda:UpdateFunctionConfiguration", "AWS::Lambda::Function"),
        ("ssm:PutParameter", "AWS::SSM::Parameter"),
        ("events:DisableRule", "AWS::Events::Rule"),
        ("events:PutTargets", "AWS::Events::Rule"),
        ("dynamodb:DeleteItem", "AWS::DynamoDB::Table"),
    ):
        for arn in stack_arns(kind):
            assert scp_denies(DEVELOPER, action, arn), (action, arn)
            assert not scp_denies(PLATFORM, action, arn), (action, arn)
    trail = f"arn:aws:cloudtrail:{REGION}:{ACCOUNT}:trail/management-events"
    assert scp_denies(DEVELOPER, "cloudtrail:StopLogging", trail)
    for table in stack_arns("AWS::DynamoDB::Table"):  # the functions keep writing their tables
        for role in stack_arns("AWS::IAM::Role"):
            assert not scp_denies(role, "dynamodb:PutItem", table)
    other = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:someone-else"
    assert not scp_denies(DEVELOPER, "lambda:InvokeFunction", other)


def test_the_boundary_denies_the_same_and_allows_the_rest() -> None:
    (_, boundary) = snippets()
    statements = for_this_stack(boundary)
    for key in suite_tag_keys():
        assert decide(statements, Request("ec2:CreateTags", INSTANCE, {"aws:TagKeys": [key]})) == DENY
    assert decide(statements, Request("ec2:CreateTags", INSTANCE, {"aws:TagKeys": ["Name"]})) == ALLOW
    assert decide(statements, Request("ec2:DeleteTags", INSTANCE)) == DENY
    for kind, action in (
        ("AWS::Lambda::Function", "lambda:InvokeFunction"),
        ("AWS::DynamoDB::Table", "dynamodb:PutItem"),
    ):
        for arn in stack_arns(kind):
            assert decide(statements, Request(action, arn)) == DENY
    assert decide(statements, Request("s3:GetObject", "arn:aws:s3:::bucket/key")) == ALLOW
