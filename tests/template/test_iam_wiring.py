"""How the template wires IAM, in every rendering (template_tools.renderings): each function has
a role of its own with no managed policy the tests cannot read, every ForAllValues condition
has its Null check, every event rule listens to this account only, the idle stopper's IAM
Denies are exactly the code's exclusion tags, and no role outgrows IAM's inline policy quota."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from typing import Any

import pytest

from idle_stopper import decide as idle_decide
from template_tools import (
    automation_folders,
    camel,
    cloudformation_template,
    policy_statements_of,
    render,
    renderings,
    role_statements,
)

pytestmark = pytest.mark.unit

RENDERINGS = ("defaults", "features-on")
# IAM: the inline policies of a role add up to at most 10,240 characters (whitespace not counted).
INLINE_POLICY_QUOTA = 10_240


@cache
def rendering(name: str, resolve: bool) -> dict[str, Any]:
    template = cloudformation_template()
    return render(template, renderings(template)[name], resolve=resolve)


@pytest.fixture(params=RENDERINGS)
def deployed(request: pytest.FixtureRequest) -> dict[str, Any]:
    """A rendering with its conditions applied (intrinsic functions kept, so that references
    between resources stay readable)."""
    return rendering(request.param, resolve=False)


def roles(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == "AWS::IAM::Role"}


def test_no_role_has_a_managed_policy_whose_content_the_tests_do_not_judge(deployed: dict[str, Any]) -> None:
    """SAM's own function roles get AWSLambdaBasicExecutionRole (logs on every log group) and,
    with any VpcConfig, AWSLambdaVPCAccessExecutionRole: no test reads what an AWS managed
    policy holds, so none may be attached. Policies of the template itself are read."""
    assert roles(deployed)
    for name, role in roles(deployed).items():
        arns = role["Properties"].get("ManagedPolicyArns", [])
        judged = [
            a for a in arns if deployed["Resources"].get(a.get("Ref", "") if isinstance(a, dict) else "")
        ]
        assert arns == judged, f"{name} has managed policies no test judges: {arns}"
        role_statements(name, deployed)  # raises on any policy it cannot read


@pytest.mark.parametrize("name", automation_folders())
def test_every_function_has_a_role_of_its_own_that_only_lambda_assumes(
    deployed: dict[str, Any], name: str
) -> None:
    resources = deployed["Resources"]
    function = resources[f"{camel(name)}Function"]["Properties"]
    role = f"{camel(name)}FunctionRole"
    assert function["Role"] == {"Fn::GetAtt": [role, "Arn"]}
    users = [
        k
        for k, v in resources.items()
        if v["Type"] == "AWS::Lambda::Function" and role in str(v["Properties"]["Role"])
    ]
    assert users == [f"{camel(name)}Function"], users
    trust = resources[role]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust == [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ]
    logs = resources[f"{camel(name)}FunctionLogs"]["Properties"]
    assert logs["RoleName"] == {"Fn::Sub": "${" + role + "}"}


def _all_statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, statement) of every policy in the template: roles' own and attached policies,
    and every resource policy (key, topic, queue, bucket policies)."""
    for name in roles(template):
        for statement in role_statements(name, template):
            yield name, statement
    for name, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        for key in ("KeyPolicy", "PolicyDocument"):
            if key in props and resource["Type"] not in ("AWS::IAM::RolePolicy", "AWS::IAM::Policy"):
                for statement in policy_statements_of(props[key]):
                    yield name, statement


def test_every_for_all_values_condition_has_its_null_check(deployed: dict[str, Any]) -> None:
    """ForAllValues holds when the request has no value at all (no tag keys, no leading keys):
    a Null check that the key is present must close that hole, in the same statement."""
    found = 0
    for where, statement in _all_statements(deployed):
        for operator, keys in statement.get("Condition", {}).items():
            if operator.startswith("ForAllValues:"):
                for key in keys:
                    found += 1
                    null = statement["Condition"].get("Null", {})
                    assert null.get(key) == "false", (
                        f"{where} {statement.get('Sid')}: {key} has no Null check"
                    )
    assert found >= len(automation_folders())


def test_every_event_rule_listens_to_this_account_only(deployed: dict[str, Any]) -> None:
    patterns = [
        (name, r["Properties"]["EventPattern"])
        for name, r in deployed["Resources"].items()
        if r["Type"] == "AWS::Events::Rule" and "EventPattern" in r["Properties"]
    ]
    assert len(patterns) >= 2
    for name, pattern in patterns:
        assert pattern.get("account") == [{"Ref": "AWS::AccountId"}], name


def test_the_failed_events_queue_policy_names_every_rule_that_dead_letters_to_it(
    deployed: dict[str, Any],
) -> None:
    queue = {"Fn::GetAtt": ["FailedEventsQueue", "Arn"]}
    rules = sorted(
        name
        for name, r in deployed["Resources"].items()
        if r["Type"] == "AWS::Events::Rule"
        and any(t.get("DeadLetterConfig", {}).get("Arn") == queue for t in r["Properties"]["Targets"])
    )
    (allow,) = [
        s
        for s in deployed["Resources"]["FailedEventsQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
        if s["Effect"] == "Allow"
    ]
    named = sorted(arn["Fn::GetAtt"][0] for arn in allow["Condition"]["ArnEquals"]["aws:SourceArn"])
    assert named == rules


def test_the_idle_stoppers_denies_are_exactly_the_codes_exclusion_tags() -> None:
    """functions/idle_stopper/decide.py's exact-key tuples and the role's Null Denies cannot
    drift apart (its KUBERNETES_TAG_PREFIXES cannot be IAM: resource tag keys take no wildcard)."""
    code = {*idle_decide.AUTO_SCALING_TAGS, *idle_decide.KUBERNETES_TAGS, *idle_decide.OTHER_MANAGED_TAGS}
    denied = set()
    for statement in role_statements("IdleStopperFunctionRole"):
        null = statement.get("Condition", {}).get("Null")
        if statement["Effect"] == "Deny" and null:
            assert set(statement["Action"]) == {"ec2:StopInstances", "ec2:CreateTags"}, statement["Sid"]
            assert len(null) == 1 and len(statement["Condition"]) == 1, statement["Sid"]  # one key: an OR
            denied |= {
                key.removeprefix("ec2:ResourceTag/") for key, value in null.items() if value == "false"
            }
    assert denied == code
    assert idle_decide.KUBERNETES_TAG_PREFIXES and not any("*" in key for key in denied)


@pytest.mark.parametrize("rendered", RENDERINGS)
def test_no_role_outgrows_the_inline_policy_quota(rendered: str) -> None:
    resolved = rendering(rendered, resolve=True)
    for name, role in roles(resolved).items():
        documents = [p["PolicyDocument"] for p in role["Properties"].get("Policies", [])]
        documents += [
            r["Properties"]["PolicyDocument"]
            for r in resolved["Resources"].values()
            if r["Type"] == "AWS::IAM::RolePolicy"
            and r["Properties"]["RoleName"].endswith(f"-{name}-ABCDEF012345")
        ]
        size = sum(len(json.dumps(d, separators=(",", ":"))) for d in documents)
        assert 0 < size < INLINE_POLICY_QUOTA, (name, size)
