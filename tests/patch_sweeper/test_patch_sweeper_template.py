"""The template section: IAM grants exactly what the code calls, triggers, parameters."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from patch_sweeper.app import PERMISSIONS
from patch_sweeper.config import Config
from template_tools import RUNTIME_ACTIONS, role_statements

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


class _CfnLoader(yaml.SafeLoader):
    pass


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {suffix: value}


_CfnLoader.add_multi_constructor("!", _tag)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    data: dict[str, Any] = yaml.load((ROOT / "template.yaml").read_text(), Loader=_CfnLoader)  # noqa: S506
    return data


def _function(template: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = template["Resources"]["PatchSweeperFunction"]["Properties"]
    return props


def _statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    """The statements of the function's own role (template: PatchSweeperFunctionRole)."""
    role: dict[str, Any] = template["Resources"]["PatchSweeperFunctionRole"]["Properties"]
    found: list[dict[str, Any]] = []
    for policy in role["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            branches = statement.get("If", statement.get("Fn::If"))
            if branches is None:
                found.append(statement)
            else:  # a statement granted under a condition (both branches; AWS::NoValue is no statement)
                found += [b for b in branches[1:] if isinstance(b, dict) and "Effect" in b]
    return found


def _actions(statement: dict[str, Any]) -> set[str]:
    action = statement["Action"]
    return {action} if isinstance(action, str) else set(action)


def test_policy_allows_exactly_the_actions_the_code_calls() -> None:
    """Every policy the role gets: its own and the shared OwnerMailPolicy (owner digests)."""
    statements = role_statements("PatchSweeperFunctionRole")
    allowed = set().union(*(_actions(s) for s in statements if s["Effect"] == "Allow"))
    # sqs:SendMessage: Lambda's on-failure destination sends the failed event with the role
    assert allowed - RUNTIME_ACTIONS == PERMISSIONS


def test_send_command_is_scoped_to_the_patch_document_and_instances(template: dict[str, Any]) -> None:
    (send,) = [
        s for s in _statements(template) if s["Effect"] == "Allow" and "ssm:SendCommand" in _actions(s)
    ]
    resources = [r["Sub"] for r in send["Resource"]]
    assert resources == [
        "arn:${AWS::Partition}:ssm:${AWS::Region}::document/AWS-RunPatchBaseline",
        "arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:instance/*",
    ]
    (deny,) = [s for s in _statements(template) if s["Effect"] == "Deny"]
    assert deny["Condition"]["StringEqualsIgnoreCase"]["ssm:resourceTag/AutoPatch"][0] == "false"
    star = [s for s in _statements(template) if s.get("Resource") == "*"]
    assert all(a.split(":")[1].startswith(("Describe", "List", "Get")) for s in star for a in _actions(s))


def test_triggers_have_retry_and_dead_letter_queue(template: dict[str, Any]) -> None:
    events = _function(template)["Events"]
    assert events["Schedule"]["Properties"]["Schedule"] == {"Ref": "PatchSweeperSchedule"}
    pattern = events["CommandFinished"]["Properties"]["Pattern"]
    assert pattern["detail-type"] == ["EC2 Command Status-change Notification"]
    assert pattern["detail"]["document-name"] == ["AWS-RunPatchBaseline"]
    assert set(pattern["detail"]["status"]) == {"Success", "Failed", "TimedOut", "Cancelled"}
    for event in events.values():
        assert "RetryPolicy" in event["Properties"]
        assert event["Properties"]["DeadLetterConfig"] == {"Arn": {"GetAtt": "FailedEventsQueue.Arn"}}


def test_defaults_are_valid_config_and_match_samconfig(template: dict[str, Any]) -> None:
    params = template["Parameters"]
    env = {
        "PATCH_OPERATION": params["PatchSweeperOperation"]["Default"],
        "PATCH_REBOOT_OPTION": params["PatchSweeperRebootOption"]["Default"],
        "PATCH_MAX_CONCURRENCY": params["PatchSweeperMaxConcurrency"]["Default"],
        "PATCH_MAX_ERRORS": params["PatchSweeperMaxErrors"]["Default"],
        "OUTPUT_LOG_GROUP": "/ops/patch-sweeper/commands",
        "STATE_TABLE": "t",
        "SCHEDULE": params["PatchSweeperSchedule"]["Default"],
    }
    config = Config.from_env(env)
    assert (config.operation, config.reboot_option) == ("Install", "NoReboot")
    overrides = tomllib.loads((ROOT / "samconfig.toml").read_text())["default"]["deploy"]["parameters"][
        "parameter_overrides"
    ]
    pairs: dict[str, str] = {}
    for override in overrides:
        key, _, value = override.partition("=")
        pairs[key] = value.strip('"')
    for name in (
        "PatchSweeperSchedule",
        "PatchSweeperOperation",
        "PatchSweeperRebootOption",
        "PatchSweeperMaxConcurrency",
        "PatchSweeperMaxErrors",
    ):
        assert pairs[name] == str(params[name]["Default"])
    groups = template["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
    assert any(g["Label"]["default"] == "Patch sweeper" for g in groups)
    assert "PatchSweeper" in template["Mappings"]["Automations"]
