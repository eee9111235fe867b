"""The template's wiring, checked on the template CloudFormation will see: every automation
has its trigger, failure capture, log retention and alarms to the topic; IAM grants exactly
what each function calls; nothing is hard-coded to one account, region or stack."""

from __future__ import annotations

import importlib
import re
import tomllib
from typing import Any

import pytest

from template_tools import (
    ROOT,
    RUNTIME_ACTIONS,
    TEMPLATE,
    as_list,
    automation_folders,
    camel,
    cloudformation_template,
    expanded_template,
    raw_template,
    role_statements,
    sam_functions,
)

pytestmark = pytest.mark.unit

AUTOMATIONS = automation_folders()
READ_ONLY_PREFIXES = ("Describe", "Get", "List", "Lookup", "Search", "BatchGet", "Scan", "Query")


def test_there_are_automations() -> None:
    assert "website_health_check" in AUTOMATIONS


@pytest.mark.parametrize("name", AUTOMATIONS)
def test_every_automation_has_code_events_tests_demo_and_docs(name: str) -> None:
    assert (ROOT / "functions" / name / "__init__.py").is_file()
    assert list((ROOT / "events" / name).glob("*.json")), f"events/{name}/ has no sample event"
    assert list((ROOT / "tests" / name).glob("test_*.py")), f"tests/{name}/ has no tests"
    assert (ROOT / "demo" / "scenarios" / f"{name}.py").is_file(), f"no demo/scenarios/{name}.py"
    assert (ROOT / "docs" / f"{name}.md").is_file(), f"no docs/{name}.md"


@pytest.mark.parametrize("name", AUTOMATIONS)
def test_every_automation_is_wired_in_the_template(name: str) -> None:
    raw = raw_template()
    logical = camel(name)
    function = raw["Resources"].get(f"{logical}Function")
    assert function, f"template.yaml has no {logical}Function for functions/{name}"
    props = function["Properties"]
    assert props["Handler"] == f"{name}.app.lambda_handler"
    assert props["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"] == name
    assert raw["Mappings"]["Automations"][logical] == {"Service": name}
    assert logical in raw["Resources"]["Fn::ForEach::Automation"][1]
    assert logical in raw["Outputs"]["Fn::ForEach::FunctionNames"][1]
    banner = re.compile(rf"^  # =+\n  # {name}\b", re.MULTILINE)
    assert banner.search(TEMPLATE.read_text()), f"template.yaml has no banner section for {name}"


@pytest.mark.parametrize("name", AUTOMATIONS)
def test_every_function_has_a_trigger_with_failure_capture(name: str) -> None:
    function = sam_functions()[f"{camel(name)}Function"]
    events = function["Properties"].get("Events", {})
    assert events, f"{name} has no trigger"
    for event_name, event in events.items():
        assert event["Type"] in {"Schedule", "EventBridgeRule", "CloudWatchEvent", "ScheduleV2"}, event_name
        config = event["Properties"]
        assert config.get("DeadLetterConfig") == {"Arn": {"Fn::GetAtt": ["FailedEventsQueue", "Arn"]}}, (
            event_name
        )
        assert "RetryPolicy" in config, f"{name}.{event_name} has no RetryPolicy"


def test_globals_runtime_architecture_and_async_failure_destination() -> None:
    fn = raw_template()["Globals"]["Function"]
    major, minor = (int(x) for x in fn["Runtime"].removeprefix("python").split("."))
    assert (major, minor) >= (3, 12)
    assert fn["Architectures"] == ["arm64"]
    on_failure = fn["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]
    assert on_failure["Destination"] == {"Fn::GetAtt": ["FailedEventsQueue", "Arn"]}
    assert fn["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"] == "OpsAutopilot"
    assert {"Ref": "SharedLayer"} in fn["Layers"]


@pytest.mark.parametrize("name", AUTOMATIONS)
def test_every_function_has_log_retention_and_alarms_to_the_topic(name: str) -> None:
    resources = expanded_template()["Resources"]
    logical = camel(name)
    log_group = resources[f"{logical}LogGroup"]["Properties"]
    assert log_group["RetentionInDays"] == {"Ref": "LogRetentionInDays"}
    assert log_group["LogGroupName"] == {"Fn::Sub": f"/aws/lambda/${{{logical}Function}}"}
    for alarm, metric in (("Errors", "Errors"), ("Throttles", "Throttles"), ("Failed", "Failed")):
        props = resources[f"{logical}{alarm}Alarm"]["Properties"]
        assert props["MetricName"] == metric
        assert props["AlarmActions"] == [{"Ref": "AlarmTopic"}] == props["OKActions"]


def test_every_alarm_reaches_the_topic_on_alarm_and_ok() -> None:
    for name, resource in cloudformation_template()["Resources"].items():
        if resource["Type"] == "AWS::CloudWatch::Alarm":
            props = resource["Properties"]
            assert {"Ref": "AlarmTopic"} in props["AlarmActions"], name
            assert {"Ref": "AlarmTopic"} in props["OKActions"], name


@pytest.mark.parametrize("name", AUTOMATIONS)
def test_the_dashboard_shows_every_automations_failed_alarm(name: str) -> None:
    body = str(raw_template()["Resources"]["Dashboard"]["Properties"]["DashboardBody"])
    assert f"${{{camel(name)}FailedAlarm.Arn}}" in body


def test_failed_events_queue_has_an_alarm() -> None:
    props = expanded_template()["Resources"]["FailedEventsAlarm"]["Properties"]
    assert props["Dimensions"][0]["Value"] == {"Fn::GetAtt": ["FailedEventsQueue", "QueueName"]}


def test_email_subscription_only_when_an_address_is_given() -> None:
    raw = raw_template()
    assert raw["Resources"]["AlarmEmailSubscription"]["Condition"] == "HasAlarmEmail"
    assert raw["Parameters"]["AlarmEmail"]["Default"] == ""


def _mutating(action: str) -> bool:
    return not action.split(":", 1)[1].startswith(READ_ONLY_PREFIXES)


def _roles() -> dict[str, dict[str, Any]]:
    resources = cloudformation_template()["Resources"]
    return {k: v for k, v in resources.items() if v["Type"] == "AWS::IAM::Role"}


def test_no_role_allows_every_action_or_mutates_everything_unconditionally() -> None:
    for role_name in _roles():
        for statement in role_statements(role_name):
            actions = as_list(statement["Action"])
            assert "*" not in actions and not any(a.endswith(":*") for a in actions), role_name
            if "*" in as_list(statement.get("Resource")) and "Condition" not in statement:
                mutating = [a for a in actions if _mutating(a)]
                assert not mutating, f"{role_name} allows {mutating} on every resource without a condition"


@pytest.mark.parametrize("name", AUTOMATIONS)
def test_each_function_is_granted_exactly_the_actions_it_calls(name: str) -> None:
    declared = set(importlib.import_module(f"{name}.app").PERMISSIONS)
    role = f"{camel(name)}FunctionRole"
    granted = {a for s in role_statements(role) if s["Effect"] == "Allow" for a in as_list(s["Action"])}
    assert granted - RUNTIME_ACTIONS == declared, (
        f"granted but not called: {sorted(granted - RUNTIME_ACTIONS - declared)}; "
        f"called but not granted: {sorted(declared - granted)}"
    )


def test_nothing_is_hard_coded_to_an_account_region_partition_or_name() -> None:
    text = TEMPLATE.read_text()
    assert "arn:aws:" not in text, "use arn:${AWS::Partition}:"
    assert not re.search(r"\b\d{12}\b", text), "no account ids"
    assert not re.search(
        r"\b(us|eu|ap|sa|ca|me|af|il|mx)-(east|west|north|south|central|northeast|southeast)-\d\b", text
    )
    fixed_names = (
        "FunctionName",
        "TopicName",
        "QueueName",
        "TableName",
        "RoleName",
        "DashboardName",
        "LayerName",
    )
    for name, resource in raw_template()["Resources"].items():
        if isinstance(resource, dict) and "Properties" in resource:
            for key in fixed_names:
                given = resource["Properties"].get(key, "AWS::StackName")
                if isinstance(given, dict) and set(given) == {"Ref"}:
                    continue  # names another resource of the stack (a RolePolicy's role)
                if isinstance(given, dict) and given.get("Fn::FindInMap", [None])[0] == "SharedNames":
                    continue  # a name every region's stack must agree on (Mappings SharedNames)
                value = str(given)
                assert "AWS::StackName" in value or "AWS::StackId" in value, (
                    f"{name} has a fixed physical name ({key}): derive it from the stack"
                )


def _samconfig_overrides() -> dict[str, str]:
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    pairs = config["default"]["deploy"]["parameters"]["parameter_overrides"]
    return dict(p.split("=", 1) for p in pairs)


def test_every_parameter_is_documented_constrained_and_defaulted_in_samconfig() -> None:
    parameters = raw_template()["Parameters"]
    overrides = _samconfig_overrides()
    grouped = {
        p
        for group in raw_template()["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
        for p in group["Parameters"]
    }
    for name, spec in parameters.items():
        assert spec.get("Description"), f"{name} has no Description"
        assert "Default" in spec, f"{name} has no Default"
        constrained = {"AllowedValues", "AllowedPattern", "MinValue", "MaxValue", "MaxLength"} & set(spec)
        assert constrained or spec["Type"] == "CommaDelimitedList" or spec["Type"].startswith("AWS::"), (
            f"{name} accepts anything"
        )
        assert name in overrides, f"samconfig.toml has no default for {name}"
        assert overrides[name].strip('"') == str(spec["Default"]), f"samconfig default of {name} differs"
        assert name in grouped, f"{name} is in no ParameterGroup"


def test_outputs_give_topic_dashboard_and_every_function() -> None:
    outputs = expanded_template()["Outputs"]
    assert {"AlarmTopicArn", "DashboardUrl"} <= set(outputs)
    for name in AUTOMATIONS:
        assert f"{camel(name)}FunctionName" in outputs


def test_the_outbox_table_is_shared_keyed_and_expires() -> None:
    table = raw_template()["Resources"]["OutboxTable"]["Properties"]
    assert [k["AttributeName"] for k in table["KeySchema"]] == ["pk", "sk"]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    variables = raw_template()["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["OUTBOX_TABLE"] == {"Ref": "OutboxTable"}
    assert variables["OWNER_TAG_KEY"] == {"Ref": "OwnerTagKey"}  # product-wide, for every function


@pytest.mark.parametrize("name", AUTOMATIONS)
def test_each_function_touches_only_its_own_claims_and_outbox(name: str) -> None:
    on_table = [
        s
        for s in role_statements(f"{camel(name)}FunctionRole")
        if s.get("Resource") == {"Fn::GetAtt": ["OutboxTable", "Arn"]}
    ]
    assert len(on_table) == 1, on_table
    (statement,) = on_table
    assert set(as_list(statement["Action"])) == {
        f"dynamodb:{a}" for a in ("PutItem", "UpdateItem", "DeleteItem", "Query")
    }
    assert statement["Condition"] == {
        "ForAllValues:StringEquals": {"dynamodb:LeadingKeys": [f"claim#{name}", f"outbox#{name}"]},
        "Null": {"dynamodb:LeadingKeys": "false"},
    }


@pytest.mark.parametrize("name", AUTOMATIONS)
def test_parameters_take_the_automations_own_name(name: str) -> None:
    """An automation's parameters are <CamelName>*: the section a parameter belongs to is
    visible from its name (the product-wide ones are in the Everyone group)."""
    groups = raw_template()["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
    everyone = next(g for g in groups if g["Label"]["default"] == "Everyone")["Parameters"]
    section = re.search(
        rf"^  # ---- {name}\n(.*?)(?=^  # ---- |^Conditions:)", TEMPLATE.read_text(), re.MULTILINE | re.DOTALL
    )
    assert section, f"no '# ---- {name}' parameter section"
    own = re.findall(r"^  (\w+):\n    Type:", section.group(1), re.MULTILINE)
    assert own, f"{name} has no parameters of its own"
    for parameter in own:
        assert parameter.startswith(camel(name)) and parameter not in everyone, parameter


@pytest.mark.parametrize("name", AUTOMATIONS)
def test_a_scheduled_function_knows_its_own_schedule(name: str) -> None:
    """The runner refuses a scheduled event at a time the function's cron does not name, and
    snapshot_rotator derives its retry guard from it: SCHEDULE is the schedule its rule uses."""
    props = sam_functions()[f"{camel(name)}Function"]["Properties"]
    schedules = [e["Properties"]["Schedule"] for e in props["Events"].values() if e["Type"] == "Schedule"]
    variables = props["Environment"]["Variables"]
    if schedules:
        assert variables.get("SCHEDULE") == schedules[0], name
    else:
        assert "SCHEDULE" not in variables, name
