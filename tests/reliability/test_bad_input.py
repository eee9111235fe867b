"""Bad input: hand-written and hypothesis-generated malformed events for every handler. Each
one is turned down with one clear log line, changes nothing in AWS (no mutating call at all)
and returns normally - a raise would make Lambda retry the event. The numbers of cases tried
are printed in the run's summary."""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autopilot.events import BadEvent, require_own_account
from autopilot.recorder import CallRecorder
from conftest import EVENTS, REGION, FakeContext, at_clock
from reliability import figures as session_figures
from reliability.scenarios import NAMES, module

pytestmark = pytest.mark.integration


def parser(name: str) -> Callable[[Any], Any]:
    """The automation's own event parser, as its handler uses it (app.AUTOMATION.parse)."""
    app = __import__(f"{name}.app", fromlist=["AUTOMATION"])
    parse: Callable[[Any], Any] = app.AUTOMATION.parse
    return parse


# Cases tried per automation, summed over the session's xdist workers; the summary line is
# made from the sum at the end of the session (tests/reliability/figures.py summary()).
TRIED = session_figures.counter("bad input tried")
MUTATIONS = session_figures.counter("bad input mutations")  # mutating calls malformed events made
RAISES = session_figures.counter("bad input raises")  # malformed events the handler raised on
HUGE = "x" * 1_000_000
OTHER_ACCOUNT = "999988887777"


def samples(name: str) -> list[dict[str, Any]]:
    return [at_clock(json.loads(p.read_text())) for p in sorted((EVENTS / name).glob("*.json"))]


def valid_sample(name: str) -> dict[str, Any]:
    preferred = module(name).VALID_SAMPLE
    data: dict[str, Any] = json.loads((EVENTS / name / f"{preferred}.json").read_text())
    return at_clock(data)


def accepted(name: str, event: Any) -> bool:
    """Would the handler act on this event (a well-formed one of this account)?"""
    try:
        require_own_account(event, FakeContext())
        parser(name)(event)
    except BadEvent:
        return False
    return True


@pytest.fixture
def handler(name: str, stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The automation's handler with its environment, and a record of its log lines."""
    env: dict[str, str] = module(name).BAD_INPUT_ENV
    for key, value in {**env, "POWERTOOLS_SERVICE_NAME": name}.items():
        monkeypatch.setenv(key, value)
    boto3.client("dynamodb", region_name=REGION).create_table(
        TableName="state",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    app = __import__(f"{name}.app", fromlist=["lambda_handler"])
    lines: list[tuple[str, str, dict[str, Any]]] = []
    for level in ("info", "warning", "error"):
        original = getattr(app.logger, level)

        def log(msg: str, *args: Any, _level: str = level, _original: Any = original, **kwargs: Any) -> Any:
            lines.append((_level, str(msg), dict(kwargs.get("extra") or {})))
            return _original(msg, *args, **kwargs)

        monkeypatch.setattr(app.logger, level, log)
    app.log_lines = lines
    yield app


def check_rejected(name: str, app: Any, event: Any) -> None:
    """The contract for one malformed event."""
    app.log_lines.clear()
    TRIED[name] += 1
    with CallRecorder() as calls:
        try:
            result = app.lambda_handler(event, FakeContext())  # must not raise
        except Exception:
            RAISES[name] += 1
            raise
        finally:
            MUTATIONS[name] += len(calls.mutating())
    assert not calls.mutating(), f"malformed event changed something: {calls.by_operation()}"
    assert isinstance(result, dict)
    if result.get("status") == "ignored":
        errors = [line for line in app.log_lines if line[1] == "ignored malformed event"]
        assert len(errors) == 1 and errors[0][0] == "error", app.log_lines
        assert errors[0][2]["reason"] == result["reason"] and result["reason"]
    elif accepted(name, event):  # well-formed, naming resources this account does not have
        assert result.get("status") in {"done", "skipped", "not-ours"}, result
    else:  # accepted shapes that need no action (owner_tagger: a failed call; patch: not ours)
        assert result.get("status") in {"skipped", "not-ours"}, result
        assert app.log_lines, "no log line"


def _without(event: dict[str, Any], *path: str) -> dict[str, Any]:
    event = copy.deepcopy(event)
    node = event
    for key in path[:-1]:
        node = node[key]
    node.pop(path[-1], None)
    return event


def _with(event: dict[str, Any], value: Any, *path: str) -> dict[str, Any]:
    event = copy.deepcopy(event)
    node = event
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return event


def hand_written(name: str) -> list[Any]:
    base = valid_sample(name)
    cases: list[Any] = [None, [], "Scheduled Event", 42, 3.5, True, {}, {"detail": {}}, [base]]
    for key in ("source", "detail-type", "time", "account", "id", "region"):
        if key in base and not (name == "owner_tagger" and key in {"id", "region", "account"}):
            cases.append(_without(base, key))
    for key in ("source", "detail-type", "time"):
        for wrong in (None, 7, [], {"a": 1}, HUGE):
            cases.append(_with(base, wrong, key))
    cases += [
        _with(base, OTHER_ACCOUNT, "account"),  # another account's event
        _with(base, "aws.ec2" if base.get("source") == "aws.events" else "aws.events", "source"),
        _with(base, "Unknown Event", "detail-type"),
        _with(base, "yesterday", "time"),
        _with(base, "x" * 100_000, "detail-type"),
    ]
    if name == "owner_tagger":
        detail = base["detail"]
        cases += [
            _with(base, "TerminateInstances", "detail", "eventName"),  # unknown event name
            _with(base, "DeleteVolume", "detail", "eventName"),
            _with(base, "s3.amazonaws.com", "detail", "eventSource"),
            _with(base, None, "detail", "responseElements"),
            _with(base, "not-a-dict", "detail"),
            _with(base, "Client.UnauthorizedOperation", "detail", "errorCode"),  # a failed API call
            _without(base, "detail", "eventName"),
            _with(base, {"instancesSet": {"items": [{"instanceId": "i-zz"}]}}, "detail", "responseElements"),
            _with(base, {"instancesSet": {"items": [{"instanceId": HUGE}]}}, "detail", "responseElements"),
            _with(
                base,
                {"instancesSet": {"items": [{"instanceId": i} for i in range(5000)]}},
                "detail",
                "responseElements",
            ),
            _with(_with(base, OTHER_ACCOUNT, "account"), OTHER_ACCOUNT, "detail", "recipientAccountId"),
        ]
        cases += [e for e in samples(name) if e.get("detail", {}).get("errorCode")]  # failed API calls
        assert detail
    if name == "patch_sweeper":
        status = next(e for e in samples(name) if e["detail-type"].startswith("EC2 Command Status"))
        cases += [
            _with(status, "not-a-command-id", "detail", "command-id"),
            _with(status, HUGE, "detail", "command-id"),
            _with(status, "InProgress", "detail", "status"),
            _with(status, "AWS-RunShellScript", "detail", "document-name"),
            _with(status, "not-a-list", "resources"),
            _with(status, OTHER_ACCOUNT, "account"),
            _without(status, "detail"),
        ]
        cases += [e for e in samples(name) if e.get("detail", {}).get("status") in {"InProgress"}]
    return cases


@pytest.mark.parametrize("name", NAMES)
def test_hand_written_malformed_events_change_nothing(name: str, handler: Any) -> None:
    cases = hand_written(name)
    for event in cases:
        assert not accepted(name, event) or name == "owner_tagger", event
        check_rejected(name, handler, event)


# -- generated: the sample events with one part removed, retyped or blown up, and arbitrary JSON


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found: list[tuple[Any, ...]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            found.append((*prefix, key))
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node[:3]):
            found.append((*prefix, index))
            found += _paths(value, (*prefix, index))
    return found


@st.composite
def mutated(draw: st.DrawFn, name: str) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    event = copy.deepcopy(draw(st.sampled_from(samples(name))))
    path = draw(st.sampled_from(_paths(event)))
    parent = event
    for key in path[:-1]:
        parent = parent[key]
    how = draw(st.sampled_from(["delete", "retype", "huge"]))
    if how == "delete":
        parent.pop(path[-1])
    elif how == "retype":
        parent[path[-1]] = draw(json_values)
    else:
        parent[path[-1]] = draw(st.sampled_from([HUGE, 10**30, -1, [None] * 2000, {"k" * 1000: "v"}]))
    return event


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_generated_malformed_events_change_nothing(name: str, handler: Any) -> None:
    skipped_valid = Counter[str]()

    @settings(
        max_examples=40,
        deadline=None,
        derandomize=True,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )
    @given(mutated(name))
    def run(event: Any) -> None:
        if accepted(name, event):  # a mutation that left a well-formed event: not bad input
            skipped_valid[name] += 1
            return
        check_rejected(name, handler, event)

    run()
