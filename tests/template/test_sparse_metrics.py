"""Metrics are sent only when not zero (autopilot.runner._emit: a custom metric is billed for
every hour it is sent), so an alarm on one of them must read no data as "nothing wrong" - or
the metric must be one its automation always sends. Otherwise the alarm would never go back to
OK (TreatMissingData ignore), or sit in INSUFFICIENT_DATA instead of OK (missing)."""

from __future__ import annotations

import importlib

import pytest

from autopilot.runner import COMPLETED_METRIC
from template_tools import automation_folders, expanded_template

pytestmark = pytest.mark.unit


def always_sent() -> dict[str, frozenset[str]]:
    return {
        name: importlib.import_module(f"{name}.app").AUTOMATION.always_sent for name in automation_folders()
    }


def test_every_alarm_on_a_metric_sent_only_when_not_zero_reads_no_data_as_not_breaching() -> None:
    always = always_sent()
    checked = 0
    template = expanded_template()
    for logical, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        if resource["Type"] != "AWS::CloudWatch::Alarm" or props.get("Namespace") != "OpsAutopilot":
            continue
        metric = props["MetricName"]
        if metric == COMPLETED_METRIC:
            assert props["TreatMissingData"] == "breaching", logical  # silence: no run is the alarm
            continue
        service = next(d["Value"] for d in props["Dimensions"] if d["Name"] == "service")
        if isinstance(service, dict):  # !FindInMap [Automations, X, Service]
            table, key, field = service["Fn::FindInMap"]
            service = template["Mappings"][table][key][field]
        if metric in always.get(str(service), frozenset()):
            continue  # sent every run, zeros included
        assert props.get("TreatMissingData") == "notBreaching", (
            logical,
            metric,
            props.get("TreatMissingData"),
        )
        checked += 1
    assert checked >= 10, checked  # the Failed alarms of every automation and the health check's
