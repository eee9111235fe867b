"""SnapshotRotatorRounds (template.yaml) and the function agree: the event the machine sends is
one the runner accepts as a continuation, its result field is the one the runner returns, and the
machine's name is the one the function starts and its role may start."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from autopilot.events import MAX_ROUNDS, parse_continuation
from template_tools import raw_template

pytestmark = pytest.mark.unit

ARN = "arn:aws:lambda:eu-west-1:123456789012:function:rotator"


def machine() -> dict[str, Any]:
    props = raw_template()["Resources"]["SnapshotRotatorRounds"]["Properties"]
    text = (
        props["DefinitionString"]["Fn::Sub"]
        if isinstance(props["DefinitionString"], dict)
        else props["DefinitionString"]
    )
    text = text.replace("${AWS::Partition}", "aws").replace("${SnapshotRotatorFunction.Arn}", ARN)
    assert "${" not in text, "an unresolved substitution in the definition"
    return dict(json.loads(text))


def _evaluate(template: Any, state: dict[str, Any], execution: str, entered: str) -> Any:
    """Step Functions' Parameters: keys ending in .$ are paths or intrinsic functions."""
    if isinstance(template, dict):
        out = {}
        for key, value in template.items():
            if key.endswith(".$"):
                out[key[:-2]] = _path(value, state, execution, entered)
            else:
                out[key] = _evaluate(value, state, execution, entered)
        return out
    return template


def _path(expression: str, state: dict[str, Any], execution: str, entered: str) -> Any:
    if expression == "$$.State.EnteredTime":
        return entered
    if expression == "$$.Execution.Name":
        return execution
    formatted = re.fullmatch(r"States\.Format\('([^']*)', (.+)\)", expression)
    if formatted:
        values = [str(_path(arg.strip(), state, execution, entered)) for arg in formatted.group(2).split(",")]
        text = formatted.group(1)
        for value in values:
            text = text.replace("{}", value, 1)
        return text
    added = re.fullmatch(r"States\.MathAdd\((\$\.\w+), (\d+)\)", expression)
    if added:
        return state[added.group(1)[2:]] + int(added.group(2))
    assert expression.startswith("$."), expression
    return state[expression[2:]]


def test_the_machine_sends_a_continuation_the_runner_accepts_and_counts_the_rounds() -> None:
    states = machine()["States"]
    task = states["Round"]
    assert task["Parameters"]["FunctionName"] == ARN
    start = {"automation": "snapshot_rotator", "account": "123456789012", "region": "eu-west-1", "round": 1}
    entered = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    event = _evaluate(task["Parameters"]["Payload"], start, "snapshot_rotator-abc", entered)
    parsed = parse_continuation(event, "snapshot_rotator")
    assert parsed.round == 1 and parsed.id == "snapshot_rotator-abc-round-1"
    assert task["ResultSelector"] == {"more.$": "$.Payload.more"}  # the runner's "more"
    following = _evaluate(states["Next round"]["Parameters"], start, "x", entered)
    assert following == {**start, "round": 2}
    (choice,) = states["More?"]["Choices"]
    (bound,) = [c for c in choice["And"] if c["Variable"] == "$.round"]
    limit = bound["NumericLessThan"]
    assert limit == MAX_ROUNDS, "the machine would send a round the runner refuses"


def test_the_function_starts_the_machine_its_role_may_start() -> None:
    resources = raw_template()["Resources"]
    name = resources["SnapshotRotatorRounds"]["Properties"]["StateMachineName"]
    env = resources["SnapshotRotatorFunction"]["Properties"]["Environment"]["Variables"]
    assert env["CONTINUATION_STATE_MACHINE"]["Fn::Sub"][1]["Name"] == name
    statements = resources["SnapshotRotatorFunctionRole"]["Properties"]["Policies"][0]["PolicyDocument"][
        "Statement"
    ]
    (start,) = [s for s in statements if s.get("Action") == "states:StartExecution"]
    assert start["Resource"]["Fn::Sub"][1]["Name"] == name
    role = resources["SnapshotRotatorRoundsRole"]["Properties"]
    (invoke,) = role["Policies"][0]["PolicyDocument"]["Statement"]
    assert invoke["Action"] == "lambda:InvokeFunction"
    assert invoke["Resource"] == {"Fn::GetAtt": ["SnapshotRotatorFunction", "Arn"]}
