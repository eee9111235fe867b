"""PRODUCT.md safety rule 8 - nothing the suite is trusted with goes quiet: every scheduled
automation (found from its triggers, the scaffold's too) has one alarm on the samples of the
runner's Checked metric (one per completed run, zero included) that fires when no run
completed within its schedule's period plus a grace, breaching when there is no data at all,
and valid for CloudWatch at every value its <Name>SilenceAlarmHours parameter allows (0: no
alarm)."""

from __future__ import annotations

import bisect
import itertools
import json
import re
from typing import Any

import pytest

from autopilot import runner
from template_tools import (
    camel,
    cloudformation_template,
    parameter_defaults,
    raw_template,
    render,
    rendered_ref,
    sam_functions,
)

pytestmark = pytest.mark.unit

DAY, WEEK = 86_400, 7 * 86_400
UNITS = {"minute": 60, "hour": 3600, "day": DAY}


def scheduled() -> list[str]:
    """The automations with a Schedule trigger (their folder names)."""
    found = []
    for props in (f["Properties"] for f in sam_functions().values()):
        if any(e["Type"] in ("Schedule", "ScheduleV2") for e in props.get("Events", {}).values()):
            found.append(props["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"])
    return sorted(found)


SCHEDULED = scheduled()


def test_the_scheduled_automations_are_found_from_their_triggers() -> None:
    assert {"website_health_check", "patch_sweeper", "snapshot_rotator", "idle_stopper"} <= set(SCHEDULED)
    assert "owner_tagger" not in SCHEDULED  # CloudTrail events: no period to miss
    assert runner.COMPLETED_METRIC == "Checked"  # every completed run sends it, zero included


def silence_alarms(template: dict[str, Any], name: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for logical, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        if (
            resource["Type"] == "AWS::CloudWatch::Alarm"
            and props.get("MetricName") == runner.COMPLETED_METRIC
        ):
            dimensions = props["Dimensions"]
            if dimensions == [{"Name": "service", "Value": name}]:
                found.append((logical, props))
    return found


def switched_on(template: dict[str, Any]) -> dict[str, str]:
    """An opt-in automation (a parameter named after it, false or true: OwnerBackfill) has no
    run due while it is off, so no silence alarm: these judge it switched on."""
    parameters = template["Parameters"]
    return {
        camel(name): "true"
        for name in SCHEDULED
        if parameters.get(camel(name), {}).get("AllowedValues") == ["false", "true"]
    }


def rendered(hours: dict[str, str]) -> dict[str, Any]:
    template = cloudformation_template()
    values = {**parameter_defaults(template), **switched_on(template), **hours}
    return render(template, values)


def test_an_opt_in_automation_switched_off_has_a_disabled_schedule_and_no_silence_alarm() -> None:
    template = cloudformation_template()
    flags = switched_on(template)
    assert flags, "owner_backfill is opt-in (OwnerBackfill)"
    for flag in flags:
        off = render(template, {**parameter_defaults(template), flag: "false"})
        name = next(n for n in SCHEDULED if camel(n) == flag)
        assert silence_alarms(off, name) == []
        rules = [
            r["Properties"]
            for r in off["Resources"].values()
            if r["Type"] == "AWS::Events::Rule"
            and r["Properties"].get("Description") == f"ops-autopilot {name}"
        ]
        assert [r["State"] for r in rules] == ["DISABLED"]
        on = render(template, {**parameter_defaults(template), flag: "true"})
        assert len(silence_alarms(on, name)) == 1


@pytest.mark.parametrize("name", SCHEDULED)
def test_one_alarm_breaching_when_no_run_completed_to_the_topic(name: str) -> None:
    alarms = silence_alarms(rendered({}), name)
    assert len(alarms) == 1, alarms
    ((logical, props),) = alarms
    assert logical == f"{camel(name)}SilenceAlarm"
    assert props["Namespace"] == "OpsAutopilot"
    # The runs completed: one sample per completed run, whatever it counted (zero included).
    assert (props["Statistic"], props["Threshold"], props["ComparisonOperator"]) == (
        "SampleCount",
        1,
        "LessThanThreshold",
    )
    assert props["TreatMissingData"] == "breaching"  # a function that never runs emits nothing
    assert props.get("DatapointsToAlarm", props["EvaluationPeriods"]) == props["EvaluationPeriods"]
    topic = rendered_ref(rendered({}), "AlarmTopic")
    assert props["AlarmActions"] == [topic] == props["OKActions"]


@pytest.mark.parametrize("name", SCHEDULED)
def test_every_allowed_value_makes_a_valid_alarm_of_that_many_hours_or_none(name: str) -> None:
    parameter = f"{camel(name)}SilenceAlarmHours"
    spec = raw_template()["Parameters"][parameter]
    assert "0" in spec["AllowedValues"]
    for hours in spec["AllowedValues"]:
        alarms = silence_alarms(rendered({parameter: hours}), name)
        if hours == "0":
            assert alarms == [], "0 means no silence alarm"
            continue
        ((_, props),) = alarms
        period, periods = int(props["Period"]), int(props["EvaluationPeriods"])
        assert period % 60 == 0 and periods >= 1
        assert period * periods == int(hours) * 3600, (hours, period, periods)
        # CloudWatch PutMetricAlarm: Period x EvaluationPeriods at most 7 days, 1 day under 1 hour
        assert period * periods <= (WEEK if period >= 3600 else DAY), hours


def schedule_runs(expression: str, until: int, phase: int = 0) -> list[int]:
    """The times (seconds from a Monday 00:00 UTC) a default schedule fires until ``until``:
    rate(N unit) from ``phase``, or the cron(M H ? * DOW *) / cron(M H * * ? *) forms."""
    rate = re.fullmatch(r"rate\((\d+) (minute|hour|day)s?\)", expression)
    if rate:
        return list(range(phase, until, int(rate.group(1)) * UNITS[rate.group(2)]))
    cron = re.fullmatch(r"cron\((\d+) (\d+) [?*] \* ([?*]|[A-Z]{3}) \*\)", expression)
    assert cron, f"a schedule this test cannot read: {expression}"
    minute, hour, weekday = cron.groups()
    days = ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"]
    step, first = (WEEK, days.index(weekday) * DAY) if weekday in days else (DAY, 0)
    return list(range(first + int(hour) * 3600 + int(minute) * 60, until, step))


def alarm_times(completions: list[int], period: int, periods: int, until: int) -> list[int]:
    """When the alarm is in ALARM, evaluated at every period's end (periods aligned to UTC, as
    CloudWatch aligns them): none of the last ``periods`` periods has a completed run."""
    done = sorted(completions)
    ends = range(period * periods, until, period)
    return [
        end
        for end in ends
        if bisect.bisect_left(done, end) == bisect.bisect_left(done, end - period * periods)
    ]


@pytest.mark.parametrize("name", SCHEDULED)
def test_the_default_alarm_is_quiet_while_runs_complete_and_fires_soon_after_they_stop(name: str) -> None:
    """The default <Name>SilenceAlarmHours against the default schedule: no alarm while every
    run completes - each one as late as the function's Timeout allows, or on time, in any mix -
    and an alarm within the schedule's period plus the alarm's window once they stop."""
    template = rendered({})
    ((_, alarm),) = silence_alarms(template, name)
    period, periods = int(alarm["Period"]), int(alarm["EvaluationPeriods"])
    expression = str(raw_template()["Parameters"][f"{camel(name)}Schedule"]["Default"])
    timeout = int(template["Resources"][f"{camel(name)}Function"]["Properties"]["Timeout"])
    horizon = 5 * WEEK
    for phase in range(0, 3600, 600):
        runs = schedule_runs(expression, horizon, phase)
        gap = max(b - a for a, b in itertools.pairwise(runs)) if len(runs) > 1 else horizon
        for lateness in ((0,), (timeout,), (0, timeout), (timeout, 0)):
            completions = [run + lateness[i % len(lateness)] for i, run in enumerate(runs)]
            quiet = [t for t in alarm_times(completions, period, periods, horizon) if t > completions[0]]
            assert quiet == [], (name, phase, lateness, quiet[:3])
        stop = horizon // 2
        completed = [run for run in runs if run < stop]
        fired = [t for t in alarm_times(completed, period, periods, horizon) if t > completed[-1]]
        assert fired, name
        assert fired[0] - completed[-1] <= gap + period * periods + period, (name, fired[0] - completed[-1])


def dashboard_alarms(template: dict[str, Any]) -> list[str]:
    body = json.loads(template["Resources"]["Dashboard"]["Properties"]["DashboardBody"])
    return [
        arn
        for widget in body["widgets"]
        if widget["type"] == "alarm"
        for arn in widget["properties"]["alarms"]
    ]


@pytest.mark.parametrize("hours", ["0", "1"])
def test_the_dashboard_shows_every_silence_alarm_that_exists_and_stays_valid_json(hours: str) -> None:
    template = rendered({f"{camel(name)}SilenceAlarmHours": hours for name in SCHEDULED})
    shown = dashboard_alarms(template)
    assert len(shown) == len(set(shown))
    for name in SCHEDULED:
        logical = f"{camel(name)}SilenceAlarm"
        if hours == "0":
            assert logical not in template["Resources"]
        else:
            assert any(arn.endswith(f":alarm:ops-autopilot-test-{logical}-ABCDEF012345") for arn in shown), (
                logical
            )
        assert any(f"-{camel(name)}FailedAlarm-" in arn for arn in shown)
