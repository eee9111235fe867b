"""Fault injection: throttling at 30 %, timeouts and 5xx, and per-resource refusals, injected
into every AWS call of every automation (tests/reliability/faults.py), on the moto scenarios of
tests/reliability/scenarios.py. Throttled work is retried by botocore (standard mode, 8
attempts: autopilot.aws.BOTO_CONFIG) until it is done; refused resources are reported and the
rest still done; nothing is left half-done. The figures are printed at the end of the run (each
test's, and the totals over every worker: tests/reliability/figures.py)."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.retries import standard

from autopilot import aws
from autopilot.recorder import CallRecorder
from reliability import figures as session_figures
from reliability.faults import FaultInjector, ResourceFault, names
from reliability.scenarios import BUILDERS, NAMES, Ctx, backend, ec2, tags_of

# Marked per test: the scenarios run on moto (integration, slow); the retry configuration is unit.

TOTALS = session_figures.counter("faults")  # summed over the session's workers, printed at the end


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries happen as configured, without the real backoff sleeps."""
    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda self, context: 0.0)


def _injector(ctx: Ctx, fakes: dict[Any, Any], **kwargs: Any) -> FaultInjector:
    injector = FaultInjector(fakes=fakes, **kwargs)
    return injector.install(ctx.monkeypatch)


def _record(kind: str, name: str, injector: FaultInjector, report: list[str]) -> dict[str, int]:
    figures = injector.stats.figures()
    TOTALS.update({f"{kind}.{k}": v for k, v in figures.items()})
    report.append(f"faults {kind:<11} {name:<21} " + " ".join(f"{k}={v}" for k, v in figures.items()))
    assert figures["lost"] == 0, figures  # every fault test: no work lost
    return figures


@pytest.mark.unit
def test_the_retry_configuration_is_standard_mode_with_8_attempts() -> None:
    assert aws.BOTO_CONFIG.retries == {"mode": "standard", "total_max_attempts": 8}


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_30_percent_throttling_loses_no_work(name: str, ctx: Ctx, reliability_report: list[str]) -> None:
    scenario = BUILDERS[name](ctx)
    injector = _injector(ctx, scenario.fakes, seed=9, throttle_rate=0.30)
    scenario.invoke()
    scenario.verify()
    assert len(scenario.mails()) == scenario.expected_mails
    figures = _record("throttling", name, injector, reliability_report)
    assert figures["lost"] == 0
    assert injector.stats.injected["throttle"] > 0
    assert figures["http_attempts"] > figures["operations_attempted"]  # retried, not given up
    assert figures["completed"] == figures["operations_attempted"]


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_timeouts_and_5xx_lose_no_work(name: str, ctx: Ctx, reliability_report: list[str]) -> None:
    scenario = BUILDERS[name](ctx)
    injector = _injector(ctx, scenario.fakes, seed=99, timeout_rate=0.15, server_error_rate=0.15)
    scenario.invoke()
    scenario.verify()
    assert len(scenario.mails()) == scenario.expected_mails
    figures = _record("timeout+5xx", name, injector, reliability_report)
    assert figures["lost"] == 0
    assert injector.stats.injected["timeout"] > 0 and injector.stats.injected["5xx"] > 0
    assert figures["completed"] == figures["operations_attempted"]


# -- per-resource refusals: the others are done, the refused ones reported, nothing half-done --


@pytest.mark.integration
@pytest.mark.slow
def test_idle_stopper_one_instance_refuses_to_stop(ctx: Ctx, reliability_report: list[str]) -> None:
    scenario = BUILDERS["idle_stopper"](ctx)
    refused, *others = scenario.resources
    injector = _injector(
        ctx,
        {},
        throttle_rate=0.3,
        resource_faults=[ResourceFault("ec2", "StopInstances", "IncorrectInstanceState", names(refused))],
    )
    result = scenario.invoke()
    _record("per-resource", "idle_stopper", injector, reliability_report)
    states = {
        i["InstanceId"]: i["State"]["Name"]
        for r in ec2().describe_instances()["Reservations"]
        for i in r["Instances"]
    }
    for instance_id in others:
        assert states[instance_id] in {"stopping", "stopped"}
        assert tags_of(instance_id)["StoppedBy"]
    assert states[refused] == "running"
    assert "StoppedBy" not in tags_of(refused)  # never tagged as stopped when it was not
    assert result["Failed"] == 1 and result["Changed"] == 2
    (mail,) = scenario.mails()
    assert refused in mail["body"] and "IncorrectInstanceState" in mail["body"]


@pytest.mark.integration
@pytest.mark.slow
def test_owner_tagger_one_instance_vanished(ctx: Ctx, reliability_report: list[str]) -> None:
    scenario = BUILDERS["owner_tagger"](ctx)
    gone = scenario.extra["instances"][1]
    injector = _injector(
        ctx,
        {},
        throttle_rate=0.3,
        resource_faults=[ResourceFault("ec2", "CreateTags", "InvalidInstanceID.NotFound", names(gone))],
    )
    result = scenario.invoke()
    _record("per-resource", "owner_tagger", injector, reliability_report)
    assert (result["Failed"], result["Changed"]) == (1, len(scenario.resources) - 1)
    assert "Owner" not in tags_of(gone)
    for resource_id in scenario.resources:
        if resource_id != gone:
            assert tags_of(resource_id).get("Owner"), resource_id
    (mail,) = scenario.mails()
    assert gone in mail["body"] and "InvalidInstanceID.NotFound" in mail["body"]


@pytest.mark.integration
@pytest.mark.slow
def test_snapshot_rotator_in_use_snapshot_and_refused_volume(ctx: Ctx, reliability_report: list[str]) -> None:
    scenario = BUILDERS["snapshot_rotator"](ctx)
    old: dict[str, list[str]] = scenario.extra["old"]
    first, second, third = scenario.resources
    in_use = old[first][3]  # expired, but an AMI registered meanwhile uses it
    injector = _injector(
        ctx,
        {},
        throttle_rate=0.3,
        resource_faults=[
            ResourceFault("ec2", "DeleteSnapshot", "InvalidSnapshot.InUse", names(in_use)),
            ResourceFault("ec2", "CreateSnapshot", "IncorrectState", names(second)),
        ],
    )
    result = scenario.invoke()
    _record("per-resource", "snapshot_rotator", injector, reliability_report)
    managed = scenario.extra["managed"]
    # the refused volume got no new backup, so none of its old snapshots was deleted
    assert set(managed(second)) == set(old[second])
    # the others: one new snapshot each, expired ones deleted except the one in use
    assert set(managed(first)) - set(old[first]) and set(managed(third)) - set(old[third])
    assert in_use in managed(first) and old[first][2] not in managed(first)
    assert not set(old[third][2:]) & set(managed(third))
    assert result["Failed"] == 1 and result["SnapshotsCreated"] == 2 and result["SnapshotsDeleted"] == 3
    (mail,) = scenario.mails()
    assert second in mail["body"] and "IncorrectState" in mail["body"]


@pytest.mark.integration
@pytest.mark.slow
def test_snapshot_rotator_concurrent_snapshot_limit_leaves_the_rest_whole(
    ctx: Ctx, reliability_report: list[str]
) -> None:
    scenario = BUILDERS["snapshot_rotator"](ctx)
    old: dict[str, list[str]] = scenario.extra["old"]
    limited = scenario.resources[1]
    injector = _injector(
        ctx,
        {},
        resource_faults=[
            ResourceFault("ec2", "CreateSnapshot", "ConcurrentSnapshotLimitExceeded", names(limited))
        ],
    )
    result = scenario.invoke()
    _record("per-resource", "snapshot_rotator", injector, reliability_report)
    managed = scenario.extra["managed"]
    done = [v for v in scenario.resources if set(managed(v)) - set(old[v])]
    untouched = [v for v in scenario.resources if set(managed(v)) == set(old[v])]
    # every volume is either fully rotated or not touched at all (failed, or left for the next run)
    assert sorted(done + untouched) == sorted(scenario.resources) and limited in untouched
    assert result["Failed"] == 1
    assert result["SnapshotsCreated"] + result["Failed"] + result["LeftForNextRun"] == 3
    (mail,) = scenario.mails()
    assert "ConcurrentSnapshotLimitExceeded" in mail["body"]


@pytest.mark.integration
@pytest.mark.slow
def test_patch_sweeper_refused_batch_is_reported_and_the_rest_patched(
    ctx: Ctx, reliability_report: list[str]
) -> None:
    from reliability.scenarios import module

    scenario = module("patch_sweeper").scenario(ctx, count=55)  # two SendCommand batches: 50 + 5
    refused = scenario.resources[0]
    injector = _injector(
        ctx,
        scenario.fakes,
        throttle_rate=0.3,
        resource_faults=[ResourceFault("ssm", "SendCommand", "InvalidInstanceId", names(refused))],
    )
    result = scenario.invoke()
    _record("per-resource", "patch_sweeper", injector, reliability_report)
    commands: dict[str, list[str]] = scenario.extra["commands"]
    assert sorted(i for batch in commands.values() for i in batch) == scenario.resources[50:]
    assert result["final"]["status"] == "done"  # the last command's event made the digest
    assert result["final"]["Failed"] == 50 and result["final"]["Changed"] == 5
    (mail,) = scenario.mails()
    assert "InvalidInstanceId" in mail["body"]


@pytest.mark.integration
@pytest.mark.slow
def test_website_health_check_state_conflict_on_one_site(ctx: Ctx, reliability_report: list[str]) -> None:
    scenario = BUILDERS["website_health_check"](ctx)
    _, toggle, error = scenario.resources
    injector = _injector(
        ctx,
        {},
        throttle_rate=0.3,
        resource_faults=[
            ResourceFault("dynamodb", "PutItem", "ConditionalCheckFailedException", names(toggle))
        ],
    )
    result = scenario.invoke()
    _record("per-resource", "website_health_check", injector, reliability_report)
    state = scenario.extra["state"]()
    assert state.get(error) == "DOWN" and toggle not in state  # left to the run that changed it
    assert (result["Checked"], result["Changed"]) == (3, 1)
    (mail,) = scenario.mails()
    assert error in mail["subject"] and toggle not in mail["body"]


_ = (backend, CallRecorder)
