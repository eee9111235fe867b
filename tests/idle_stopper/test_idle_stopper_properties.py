"""Safety invariants of idle_stopper's decision (PRODUCT.md rule 2), as hypothesis properties:
whatever the fleet, tags, metrics and policy, no instance in an excluded category is ever in
the stop set, nothing stop-protected is, and the stop set never exceeds the cap."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autopilot.tags import OPT_OUT_VALUES
from idle_stopper.decide import Instance, Period, Policy, decide

pytestmark = [pytest.mark.unit, pytest.mark.slow]  # hypothesis at full size: ~10 s each

NOW = datetime(2024, 5, 14, 9, 17, tzinfo=UTC)

MANAGED_TAGS = [
    "aws:autoscaling:groupName",
    "eks:cluster-name",
    "eks:nodegroup-name",
    "karpenter.sh/nodepool",
    "karpenter.sh/provisioner-name",
    "kubernetes.io/cluster/prod",
    "aws:ec2spot:fleet-request-id",
    "aws:elasticmapreduce:job-flow-id",
]
tag_values = st.sampled_from(
    ["", "x", "false", "FALSE", "never", "Never ", "no", " NO", "off", "Off", "true", "8h", "1m", "bad", "2d"]
)
tag_keys = st.sampled_from(["Name", "Owner", "AutoStop", "autostop", "StopAfter", "Env", *MANAGED_TAGS])


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    lookback = draw(st.integers(1, 12))
    return Policy(
        lookback_periods=lookback,
        periods_required=draw(st.integers(1, lookback)),
        cpu_percent=draw(st.sampled_from([0.0, 1.0, 10.0, 100.0])),
        network_mb=draw(st.sampled_from([0.0, 1.0, 5.0, 1e9])),
        max_stops=draw(st.integers(0, 5)),
    )


@st.composite
def fleets(draw: st.DrawFn, policy: Policy) -> tuple[list[Instance], dict[str, list[Period]], set[str]]:
    count = draw(st.integers(0, 15))
    instances = []
    metrics: dict[str, list[Period]] = {}
    protected = set()
    starts = policy.period_starts(NOW)
    maybe = st.one_of(st.none(), st.floats(0, 100))
    for n in range(count):
        instance_id = f"i-{n:04d}"
        instances.append(
            Instance(
                instance_id=instance_id,
                launch_time=NOW - timedelta(minutes=draw(st.integers(0, 60 * 24 * 20))),
                state=draw(st.sampled_from(["running", "running", "running", "stopping", "pending"])),
                lifecycle=draw(st.sampled_from([None, None, "spot", "scheduled", "capacity-block"])),
                root_device_type=draw(st.sampled_from(["ebs", "ebs", "instance-store", None])),
                tags=draw(st.dictionaries(tag_keys, tag_values, max_size=4)),
            )
        )
        metrics[instance_id] = [
            Period(s, draw(maybe), draw(st.one_of(st.none(), st.floats(0, 1e7))), draw(maybe)) for s in starts
        ]
        if draw(st.booleans()):
            protected.add(instance_id)
    return instances, metrics, protected


def _excluded(instance: Instance) -> bool:
    autostop = {v.strip().lower() for k, v in instance.tags.items() if k.lower() == "autostop"}
    return (
        instance.state != "running"
        or any(k in instance.tags for k in MANAGED_TAGS)
        or instance.lifecycle is not None
        or instance.root_device_type != "ebs"
        or bool(autostop & OPT_OUT_VALUES)  # any spelling of the key, any opt-out word
    )


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_never_stops_an_excluded_or_protected_instance_and_respects_the_cap(data: st.DataObject) -> None:
    policy = data.draw(policies())
    instances, metrics, protected = data.draw(fleets(policy))
    plan = decide(instances, metrics, policy, NOW, protected)
    stop_ids = [a.instance.instance_id for a in plan.stop]
    assert len(stop_ids) <= policy.max_stops
    assert len(set(stop_ids)) == len(stop_ids)
    by_id = {i.instance_id: i for i in instances}
    for instance_id in stop_ids:
        instance = by_id[instance_id]
        assert not _excluded(instance), instance
        assert instance_id not in protected
    # every instance is accounted for exactly once
    assert sorted(a.instance.instance_id for a in plan.all) == sorted(by_id)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_idle_stops_need_a_full_window_of_data_and_age(data: st.DataObject) -> None:
    policy = data.draw(policies())
    instances, metrics, _ = data.draw(fleets(policy))
    plan = decide(instances, metrics, policy, NOW)
    window_start, _ = policy.window(NOW)
    for a in plan.stop:
        if a.verdict is None:  # a lifetime stop: the StopAfter tag was well-formed and reached
            assert a.reason.startswith("StopAfter=")
            continue
        assert a.instance.launch_time <= window_start
        assert all(p.has_data for p in metrics[a.instance.instance_id])
        assert a.verdict.idle_periods >= policy.periods_required


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_missing_data_never_makes_an_instance_idle(data: st.DataObject) -> None:
    """Removing datapoints can turn a stop into a keep, never a keep into an idle stop."""
    policy = data.draw(policies())
    instances, metrics, _ = data.draw(fleets(policy))
    full = decide(instances, metrics, replace(policy, max_stops=100), NOW)
    holes = {
        k: [p if data.draw(st.booleans()) else Period(p.start, None, None, None) for p in v]
        for k, v in metrics.items()
    }
    sparse = decide(instances, holes, replace(policy, max_stops=100), NOW)
    idle_full = {a.instance.instance_id for a in full.stop if a.verdict is not None}
    idle_sparse = {a.instance.instance_id for a in sparse.stop if a.verdict is not None}
    assert idle_sparse <= idle_full
