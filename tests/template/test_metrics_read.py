"""A custom metric is billed for every hour in which it is sent ($0.30 a metric-month at list
price): the suite sends only metrics something reads. Every metric a run can send (the
runner's four, the automation's ``Automation.metrics``) is read by the template's dashboard
or by an alarm on that automation's service; every alarm on the OpsAutopilot namespace reads
a metric its automation sends. The automations' other numbers are in the run's log line and
result only (tests/shared/test_metrics_emitted.py holds the runs to it)."""

from __future__ import annotations

import importlib
import json
import re
from typing import Any

import pytest

from autopilot.runner import COMPLETED_METRIC, STANDARD_METRICS, Automation
from template_tools import automation_folders, expanded_template

pytestmark = pytest.mark.unit

# Sent only by the invocation that turns an event down (autopilot.events.reject), never by a
# run: MalformedEvents has owner_tagger's alarm; the others are the log line's, counted.
REJECTIONS = frozenset({"MalformedEvents", "StaleEvents", "EmptyEvents"})


def _service(value: Any, template: dict[str, Any]) -> str:
    if isinstance(value, dict):  # !FindInMap [Automations, X, Service]
        table, key, field = value["Fn::FindInMap"]
        return str(template["Mappings"][table][key][field])
    return str(value)


def alarm_reads(template: dict[str, Any]) -> dict[tuple[str, str], list[str]]:
    """(service, metric) -> the alarms of the OpsAutopilot namespace that read it."""
    reads: dict[tuple[str, str], list[str]] = {}
    for logical, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        if resource["Type"] != "AWS::CloudWatch::Alarm" or props.get("Namespace") != "OpsAutopilot":
            continue
        (dimension,) = props["Dimensions"]
        assert dimension["Name"] == "service", logical
        key = (_service(dimension["Value"], template), props["MetricName"])
        reads.setdefault(key, []).append(logical)
    return reads


def dashboard_reads(template: dict[str, Any]) -> set[str]:
    """The OpsAutopilot metric names the dashboard's SEARCH expressions read (every service)."""
    body = json.dumps(template["Resources"]["Dashboard"]["Properties"]["DashboardBody"])
    return set(re.findall(r"\{OpsAutopilot,service\} MetricName=\\+\"(\w+)\\+\"", body))


def sendable(name: str) -> frozenset[str]:
    automation = importlib.import_module(f"{name}.app").AUTOMATION
    return frozenset(STANDARD_METRICS) | automation.metrics


def test_the_dashboard_reads_the_runners_four_for_every_automation() -> None:
    # ... and idle_stopper's money saved
    assert dashboard_reads(expanded_template()) == {*STANDARD_METRICS, "SavedDollars"}


@pytest.mark.parametrize("name", automation_folders())
def test_every_metric_a_run_can_send_is_read_by_the_dashboard_or_an_alarm(name: str) -> None:
    template = expanded_template()
    read = dashboard_reads(template) | {m for (service, m) in alarm_reads(template) if service == name}
    unread = sendable(name) - read
    assert not unread, f"{name} sends {sorted(unread)}, which nothing reads: log them, or alarm on them"


def test_every_alarm_on_an_automations_metric_reads_one_it_sends() -> None:
    template = expanded_template()
    names = set(automation_folders())
    reads = alarm_reads(template)
    assert reads  # the Failed alarms at least
    for (service, metric), alarms in reads.items():
        assert service in names, (alarms, service)
        assert metric in sendable(service) | REJECTIONS, (alarms, f"{service} never sends {metric}")


def test_the_health_checks_alarms_read_its_aggregates_not_per_site_metrics() -> None:
    reads = alarm_reads(expanded_template())
    own = {m for (service, m) in reads if service == "website_health_check"}
    assert own == {
        "Failed",
        COMPLETED_METRIC,
        "SitesDown",
        "SitesNotChecked",
        "CertificatesExpiring",
        "RegionsSilent",
    }


def _automation(metrics: frozenset[str], always: frozenset[str] = frozenset()) -> Automation[Any, Any]:
    def nothing(*_: Any) -> Any:
        raise AssertionError("not run")

    return Automation(
        "toy", nothing, nothing, nothing, nothing, nothing, nothing, metrics=metrics, always_sent=always
    )


def test_an_automation_naming_the_runners_own_or_an_unsent_always_is_refused() -> None:
    with pytest.raises(ValueError, match="itself"):
        _automation(frozenset({"Checked"}))
    with pytest.raises(ValueError, match="always_sent"):
        _automation(frozenset(), frozenset({"Kept"}))
