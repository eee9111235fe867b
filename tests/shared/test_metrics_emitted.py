"""The metrics themselves, as CloudWatch reads them: every automation under functions/ runs its
real handler (imported afresh in its template environment, as Lambda imports it at a cold
start) once on its reliability scenario, and the Embedded Metric Format JSON that Powertools
prints is parsed: namespace OpsAutopilot, the one dimension service=<name>, and Checked,
Changed, Skipped and Failed, and of the automation's own numbers the ones it names in
``Automation.metrics`` (read by its alarms; the rest are in the log line only), with the
numbers the run returned, each when not zero - except Checked, which a run that got to its
end sends even at zero (its samples are the silence alarm's runs completed). A malformed
event emits MalformedEvents=1 and nothing else; one far from the clock, StaleEvents=1."""

from __future__ import annotations

import importlib
import importlib.util
import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from autopilot import runner
from autopilot.events import MAX_EVENT_AGE
from autopilot.recorder import CallRecorder
from autopilot.runner import COMPLETED_METRIC, STANDARD_METRICS
from conftest import EVENTS, ROOT, FakeContext
from reliability.faults import FaultInjector
from reliability.scenarios import BUILDERS, NAMES, Ctx, ctx, module
from template_tools import camel, expanded_template

pytestmark = pytest.mark.integration
__all__ = ["ctx"]  # the scenario context fixture (tests/reliability)

NAMESPACE = "OpsAutopilot"
# the other keys of a run's result ("more": rounds)
NOT_METRICS = {"status", "stack", "automation", "dry_run", "mails_held", "more"}


def template_environment(name: str) -> dict[str, str]:
    """The Powertools variables the template gives the automation's function."""
    template = expanded_template()
    common = template["Globals"]["Function"]["Environment"]["Variables"]
    own = template["Resources"][f"{camel(name)}Function"]["Properties"]["Environment"]["Variables"]
    return {
        "POWERTOOLS_METRICS_NAMESPACE": common["POWERTOOLS_METRICS_NAMESPACE"],
        "POWERTOOLS_SERVICE_NAME": own["POWERTOOLS_SERVICE_NAME"],
    }


@pytest.fixture
def metrics_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Metrics printed, as in Lambda: POWERTOOLS_DEV=true (without POWERTOOLS_METRICS_DISABLED)
    or POWERTOOLS_METRICS_DISABLED=true would print nothing."""
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    monkeypatch.setenv("POWERTOOLS_DEV", "false")


@pytest.fixture
def cold_start(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], list[dict[str, Any]]]]:
    """cold_start(name): functions/<name>/app.py imported afresh with the template's Powertools
    variables set (Powertools reads the service name and the namespace when app.py creates its
    Metrics, so the module the other tests imported at collection may have none). The module
    the scenarios call then calls this handler; returns the list its results are appended to."""

    def load(name: str) -> list[dict[str, Any]]:
        for key, value in template_environment(name).items():
            monkeypatch.setenv(key, value)
        spec = importlib.util.spec_from_file_location(
            f"cold_{name}_app", ROOT / "functions" / name / "app.py"
        )
        assert spec is not None and spec.loader is not None
        fresh = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(fresh)
        results: list[dict[str, Any]] = []

        def handler(event: Any, context: Any) -> Any:
            result = fresh.lambda_handler(event, context)
            results.append(result)
            return result

        monkeypatch.setattr(importlib.import_module(f"{name}.app"), "lambda_handler", handler)
        return results

    yield load


def emf_blobs(out: str) -> list[dict[str, Any]]:
    """The EMF documents among the printed lines (the log lines are JSON too, without _aws)."""
    found = []
    for line in out.splitlines():
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and "_aws" in data:
            found.append(data)
    return found


def run_metrics(blob: dict[str, Any]) -> dict[str, float]:
    """The metric values of one run's EMF document, after checking its shape."""
    (directive,) = blob["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == NAMESPACE
    assert directive["Dimensions"] == [["service"]]
    names = [m["Name"] for m in directive["Metrics"]]
    assert all(m["Unit"] == "Count" for m in directive["Metrics"]), directive["Metrics"]
    assert len(names) == len(set(names)), names
    values = {n: blob[n] if isinstance(blob[n], list) else [blob[n]] for n in names}
    assert all(len(v) == 1 for v in values.values()), values  # each metric added once per run
    return {n: v[0] for n, v in values.items()}


def the_runs(blobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The documents of the runs that completed (website_health_check may also print one per site
    and metric, with PER_SITE_METRICS): each carries Checked."""
    return [
        b
        for b in blobs
        if any(m["Name"] == COMPLETED_METRIC for m in b["_aws"]["CloudWatchMetrics"][0]["Metrics"])
    ]


@pytest.mark.parametrize("name", NAMES)
def test_a_run_emits_its_counts_under_its_service_the_zero_ones_left_out(
    name: str,
    ctx: Ctx,
    metrics_on: None,
    cold_start: Callable[[str], list[dict[str, Any]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    scenario = BUILDERS[name](ctx)
    FaultInjector(fakes=scenario.fakes).install(ctx.monkeypatch)  # no faults: SSM answers moto lacks
    results = cold_start(name)
    capsys.readouterr()
    scenario.invoke()
    scenario.verify()
    blobs = emf_blobs(capsys.readouterr().out)
    runs = the_runs(blobs)
    assert results and len(runs) == len(results), (results, blobs)  # one document per invocation
    checked = 0.0
    for blob, result in zip(runs, results, strict=True):
        assert blob["service"] == name
        emitted = run_metrics(blob)
        returned = {k: v for k, v in result.items() if k not in NOT_METRICS}
        assert set(STANDARD_METRICS) <= returned.keys()  # the result has all four, zeros included
        # once per run, zero included: its samples are the runs completed (the silence alarm)
        assert emitted.pop(COMPLETED_METRIC) == returned.pop(COMPLETED_METRIC)
        # A zero is not sent (billed per hour sent) unless the automation says it must be; a
        # number no alarm reads (not in Automation.metrics) is in the result and log only.
        automation = importlib.import_module(f"{name}.app").AUTOMATION
        sent = {
            k: v
            for k, v in returned.items()
            if (k in STANDARD_METRICS or k in automation.metrics) and (v or k in automation.always_sent)
        }
        assert emitted == sent, (emitted, result)
        checked += result["Checked"]
    assert checked > 0, "the scenario checked nothing: the figures would prove little"
    for other in blobs:  # per-site metrics and any other document: the same namespace and service
        assert other["_aws"]["CloudWatchMetrics"][0]["Namespace"] == NAMESPACE
        assert other["service"] == name


@pytest.mark.parametrize("name", NAMES)
def test_a_malformed_event_emits_one_malformed_event_and_no_zero_count(
    name: str,
    stack_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    metrics_on: None,
    cold_start: Callable[[str], list[dict[str, Any]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key, value in module(name).BAD_INPUT_ENV.items():
        monkeypatch.setenv(key, value)
    results = cold_start(name)
    capsys.readouterr()
    importlib.import_module(f"{name}.app").lambda_handler({"detail": {}}, FakeContext())
    (result,) = results
    assert result["status"] == "ignored", result
    (blob,) = emf_blobs(capsys.readouterr().out)
    assert blob["service"] == name
    assert run_metrics(blob) == {"MalformedEvents": 1.0}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "offset", [-MAX_EVENT_AGE - timedelta(minutes=1), timedelta(hours=1)], ids=["old", "ahead"]
)
def test_an_event_far_from_the_clock_changes_nothing_and_completes_no_run(
    name: str,
    offset: timedelta,
    stack_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    metrics_on: None,
    cold_start: Callable[[str], list[dict[str, Any]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every automation's valid sample, dated past the oldest real delivery or ahead of the
    clock (replayed or forged), is refused before any call: StaleEvents=1, no Checked (no run)."""
    for key, value in module(name).BAD_INPUT_ENV.items():
        monkeypatch.setenv(key, value)
    sample = json.loads((EVENTS / name / f"{module(name).VALID_SAMPLE}.json").read_text())
    sample["time"] = (runner.clock() + offset).strftime("%Y-%m-%dT%H:%M:%SZ")
    results = cold_start(name)
    capsys.readouterr()
    with CallRecorder() as calls:
        importlib.import_module(f"{name}.app").lambda_handler(sample, FakeContext())
    (result,) = results
    assert result["status"] == "ignored" and "clock" in result["reason"], result
    assert calls.count() == 0  # not even a read: refused before the claim
    (blob,) = emf_blobs(capsys.readouterr().out)
    assert run_metrics(blob) == {"StaleEvents": 1.0}  # no zero count: billed per hour sent
