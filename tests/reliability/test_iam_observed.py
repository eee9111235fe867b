"""IAM from observed calls: each function's role grants exactly the actions its code was seen
calling across the whole test suite (tests/reliability/observed.py explains the attribution).

Runs last (tests/conftest.py orders it) and judges an automation only when its whole test
folder and this folder ran unfiltered in the session; otherwise it is skipped, not passed.
"""

from __future__ import annotations

import pytest

from reliability import observed
from template_tools import as_list, automation_folders, camel, cloudformation_template, policy_statements

pytestmark = pytest.mark.integration

# Added by SAM, not called by the code: Lambda itself sends failed async events to the queue.
IMPLICIT_ACTIONS = {"sqs:SendMessage"}


def granted(name: str) -> set[str]:
    role = cloudformation_template()["Resources"][f"{camel(name)}FunctionRole"]
    return {
        a
        for s in policy_statements(role)
        if s["Effect"] == "Allow"
        for a in as_list(s["Action"])
        if a not in IMPLICIT_ACTIONS
    }


@pytest.mark.parametrize("name", automation_folders())
def test_granted_actions_are_exactly_the_observed_calls(
    name: str, complete_suites: set[str], reliability_report: list[str]
) -> None:
    if not {name, "reliability"} <= complete_suites:
        pytest.skip(f"tests/{name}/ did not run in full in this session: nothing to compare")
    seen = observed.observed.get(name, set())
    allowed = granted(name)
    reliability_report.append(
        f"IAM {name}: {len(allowed)} actions granted, {len(seen)} observed "
        f"({observed.calls_seen.get(name, 0)} calls): {', '.join(sorted(seen))}"
    )
    assert not seen - allowed, f"{name} called actions its role does not grant: {sorted(seen - allowed)}"
    assert not allowed - seen, (
        f"{name}'s role grants actions no test saw it call: {sorted(allowed - seen)} - "
        "exercise them in a test (or drop the grant)"
    )


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
