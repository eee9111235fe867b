"""IAM from observed calls: each function's role grants exactly the actions its code was seen
calling across the whole test suite (tests/reliability/observed.py explains the attribution).

That judgement is not a test here: under pytest-xdist no single test sees every worker's calls.
It runs once at the end of the session, on the calls of all workers (tests/conftest.py
``pytest_sessionfinish``, tests/reliability/figures.py ``judge_iam``): a mismatch is an ERROR of
the session (exit status 1), and the "IAM <name>: ..." figures are printed in the summary. It
judges an automation only when its whole test folder and this folder ran unfiltered. The tests
below check the attribution and the judgement itself.
"""

from __future__ import annotations

import pytest

from reliability import figures, observed

pytestmark = pytest.mark.unit  # pure logic: the judgement, the attribution, no AWS call


def _totals(name: str, seen: set[str], complete: set[str]) -> figures.Totals:
    share = {
        "counters": {},
        "lines": [],
        "observed": {name: sorted(seen)},
        "calls_seen": {name: len(seen)},
        "complete": sorted(complete),
    }
    return figures.add_up([share])


def test_the_judgement_fails_on_a_missing_or_an_unused_grant() -> None:
    name = "idle_stopper"
    allowed = observed.granted(name)
    assert allowed
    full = {name, "reliability"}
    assert figures.judge_iam(_totals(name, allowed, full), None).failures == {}
    one = sorted(allowed)[0]
    unused = figures.judge_iam(_totals(name, allowed - {one}, full), None).failures
    assert set(unused) == {name} and f"grants actions no test saw it call: ['{one}']" in unused[name]
    extra = figures.judge_iam(_totals(name, allowed | {"ec2:TerminateInstances"}, full), None).failures
    assert "called actions its role does not grant: ['ec2:TerminateInstances']" in extra[name]
    # not judged (no failure, a "not judged" line) when the folders did not run in full
    partial = figures.judge_iam(_totals(name, set(), {name}), None)
    assert partial.failures == {} and any(line.startswith("IAM not judged") for line in partial.lines)
    stopped = figures.judge_iam(_totals(name, set(), full), "the session stopped early")
    assert stopped.failures == {} and stopped.lines[-1].endswith("the session stopped early")


def test_shares_of_several_workers_add_up() -> None:
    def part(count: int, line: str, action: str, complete: list[str]) -> dict[str, object]:
        return {
            "counters": {"faults": {"x": count}},
            "lines": [line],
            "observed": {"n": [action]},
            "calls_seen": {"n": count},
            "complete": complete,
        }

    totals = figures.add_up([part(2, "b", "ec2:A", ["n", "reliability"]), part(3, "a", "ec2:B", ["n"])])
    assert totals.counters["faults"]["x"] == 5 and totals.lines == ["a", "b"]
    assert totals.observed["n"] == {"ec2:A", "ec2:B"} and totals.calls_seen["n"] == 5
    assert totals.complete == {"n"}  # complete only where every worker collected it in full


def test_operations_map_to_iam_actions_including_tag_on_create() -> None:
    assert observed.iam_actions("ec2", "StopInstances", {}) == {"ec2:StopInstances"}
    assert observed.iam_actions("ec2", "CreateSnapshots", {"TagSpecifications": [{}]}) == {
        "ec2:CreateSnapshots",
        "ec2:CreateTags",
    }
    assert observed.iam_actions("cloudwatch", "GetMetricData", {}) == {"cloudwatch:GetMetricData"}


def test_calls_are_attributed_to_the_automation_on_the_call_stack() -> None:
    from idle_stopper import service

    seen: list[str | None] = []
    original = service.aws.running_instances

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(observed.automation_on_stack())
        return iter(())

    try:
        service.aws.running_instances = spy  # type: ignore[assignment]
        service.running_instances()  # idle_stopper code -> layer code -> here
    finally:
        service.aws.running_instances = original  # type: ignore[assignment]
    assert seen == ["idle_stopper"]
    assert observed.automation_on_stack() is None  # test code belongs to no automation


def test_granted_reads_every_policy_a_role_gets_and_refuses_one_it_cannot_read() -> None:
    """A grant may live in the role's own Policies or in a policy resource naming the role: both
    count. An AWS managed policy (ManagedPolicyArns) cannot be read from the template, so a role
    that has one cannot be judged: that is an error, never a pass."""
    from template_tools import cloudformation_template, role_statements

    def document(action: str) -> dict[str, object]:
        return {"Statement": [{"Effect": "Allow", "Action": action, "Resource": "*"}]}

    template = {
        "Resources": {
            "FnRole": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "Policies": [{"PolicyName": "own", "PolicyDocument": document("ec2:DescribeTags")}]
                },
            },
            "Extra": {
                "Type": "AWS::IAM::RolePolicy",
                "Properties": {
                    "RoleName": {"Ref": "FnRole"},
                    "PolicyDocument": document("ec2:StopInstances"),
                },
            },
        }
    }
    assert {s["Action"] for s in role_statements("FnRole", template)} == {
        "ec2:DescribeTags",
        "ec2:StopInstances",
    }
    managed = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
    template["Resources"]["FnRole"]["Properties"]["ManagedPolicyArns"] = [managed]  # type: ignore[index]
    with pytest.raises(ValueError, match="cannot judge"):
        role_statements("FnRole", template)
    # the deployed template: every function role is readable, and its log grant is counted
    resources = cloudformation_template()["Resources"]
    for name in sorted(observed.AUTOMATIONS):
        role = f"{''.join(p.capitalize() for p in name.split('_'))}FunctionRole"
        assert "ManagedPolicyArns" not in resources[role]["Properties"], role
        assert "logs:PutLogEvents" in str(role_statements(role)), role
        assert observed.granted(name) and not observed.granted(name) & {
            "logs:PutLogEvents",
            "sqs:SendMessage",
        }
