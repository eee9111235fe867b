"""Opt-in, tags on the new snapshots, the idempotent retry window and the configuration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autopilot.config import ConfigError
from snapshot_rotator.config import RotatorConfig, schedule_period
from snapshot_rotator.retention import COMPLETED, ERROR, PENDING, Snapshot
from snapshot_rotator.selection import Instance, Volume, plan_creation, recent_snapshots

pytestmark = pytest.mark.unit

STACK = "ops-autopilot-test"
NOW = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def mine(sid: str, volume: str, ago: timedelta, state: str = COMPLETED, stack: str = STACK) -> Snapshot:
    return Snapshot(sid, volume, NOW - ago, state, {"ManagedBy": stack})


def test_instance_opt_in_covers_all_its_volumes_once() -> None:
    inst = Instance(
        "i-1", {"Backup": "True", "Name": "web", "Owner": "alice"}, "vol-root", ("vol-root", "vol-data")
    )
    loose = Volume(
        "vol-loose", {"Backup": "true", "Name": "logs", "Owner": "bob", "aws:cloudformation:x": "y"}
    )
    both = Volume("vol-data", {"Backup": "true"}, instance_id="i-1")
    out = Volume("vol-out", {"Backup": "false"})
    plan = plan_creation([inst], [loose, both, out], recent={}, stack_name=STACK, now=NOW)
    assert [(j.kind, j.resource_id, j.volume_ids) for j in plan.jobs] == [
        ("instance", "i-1", ("vol-root", "vol-data")),
        ("volume", "vol-loose", ("vol-loose",)),
    ]
    ijob, vjob = plan.jobs
    assert ijob.tags == {"ManagedBy": STACK, "Name": "web backup 2026-11-23 03:00", "SourceInstanceId": "i-1"}
    assert vjob.tags == {
        "Backup": "true",
        "Name": "logs backup 2026-11-23 03:00",
        "Owner": "bob",
        "ManagedBy": STACK,
        "SourceVolumeId": "vol-loose",
    }
    assert (vjob.name, vjob.owner) == ("logs", "bob")


def test_copied_tags_never_push_ours_out() -> None:
    many = {f"k{i}": "v" for i in range(60)} | {"Backup": "true", "ManagedBy": "forged"}
    job = plan_creation([], [Volume("vol-1", many)], recent={}, stack_name=STACK, now=NOW).jobs[0]
    assert len(job.tags) == 50
    assert job.tags["ManagedBy"] == STACK and job.tags["SourceVolumeId"] == "vol-1"


def test_recent_window_counts_pending_and_completed_of_this_stack_only() -> None:
    snaps = [
        mine("a", "vol-a", timedelta(hours=2), PENDING),
        mine("b", "vol-b", timedelta(hours=11)),
        mine("c", "vol-c", timedelta(hours=13)),  # yesterday's run: too old
        mine("d", "vol-d", timedelta(hours=1), ERROR),  # failed: try again
        mine("e", "vol-e", timedelta(hours=1), stack="other"),  # not ours
    ]
    recent = recent_snapshots(snaps, stack_name=STACK, now=NOW, window=timedelta(hours=12))
    assert recent == {"vol-a": "a", "vol-b": "b"}


def test_partial_retry_of_an_instance_snapshots_only_what_is_missing() -> None:
    inst = Instance("i-1", {"Backup": "true"}, "vol-root", ("vol-root", "vol-d1", "vol-d2"))
    plan = plan_creation([inst], [], recent={"vol-root": "s1", "vol-d1": "s2"}, stack_name=STACK, now=NOW)
    (job,) = plan.jobs
    assert job.volume_ids == ("vol-d2",)
    assert job.exclude_boot and job.exclude_data_volume_ids == ("vol-d1",)
    assert plan.already_done == {"vol-root": "s1", "vol-d1": "s2"}
    done = plan_creation([inst], [], recent=dict.fromkeys(inst.volume_ids, "s"), stack_name=STACK, now=NOW)
    assert done.jobs == [] and done.volume_count == 3


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["true", "TRUE", "false", ""]), st.integers(1, 3)), max_size=6),
    st.lists(st.tuples(st.integers(0, 30), st.sampled_from(["true", "no"])), max_size=12),
    st.sets(st.integers(0, 30)),
)
def test_property_every_opted_in_volume_once_and_never_twice_a_period(
    instances: list[tuple[str, int]], volumes: list[tuple[int, str]], recent_ids: set[int]
) -> None:
    insts, vol_no = [], 100
    for i, (flag, count) in enumerate(instances):
        ids = tuple(f"vol-{vol_no + k}" for k in range(count))
        vol_no += count
        insts.append(Instance(f"i-{i}", {"Backup": flag}, ids[0], ids))
    vols = [Volume(f"vol-{n}", {"Backup": flag}) for n, flag in dict(volumes).items()]
    recent = {f"vol-{n}": f"snap-{n}" for n in recent_ids}
    plan = plan_creation(insts, vols, recent=recent, stack_name=STACK, now=NOW)
    planned = [v for j in plan.jobs for v in j.volume_ids]
    assert len(planned) == len(set(planned)), "a volume snapshotted twice in one run"
    assert not set(planned) & set(recent), "a volume snapshotted again within the retry window"
    wanted = {v for i in insts if i.tags["Backup"].lower() == "true" for v in i.volume_ids}
    wanted |= {v.id for v in vols if v.tags["Backup"] == "true"}
    assert set(planned) | set(plan.already_done) == wanted
    assert all(j.tags["ManagedBy"] == STACK for j in plan.jobs)


@pytest.mark.parametrize(
    ("expression", "period"),
    [("rate(1 day)", DAY), ("rate(12 hours)", timedelta(hours=12)), ("cron(0 3 * * ? *)", DAY)],
)
def test_schedule_period(expression: str, period: timedelta) -> None:
    assert schedule_period(expression) == period


def test_config_fails_fast_and_names_the_variable() -> None:
    env = {
        "STACK_NAME": STACK,
        "AWS_REGION": "eu-west-1",
        "TOPIC_ARN": "arn:aws:sns:eu-west-1:123456789012:t",
        "DRY_RUN": "false",
    }
    config = RotatorConfig.from_env(env)
    assert config.policy.keep_newest == 7 and config.retry_window == timedelta(hours=12)
    assert not config.summary_mail
    with pytest.raises(ConfigError, match="KEEP_NEWEST"):
        RotatorConfig.from_env({**env, "KEEP_NEWEST": "0"})
    with pytest.raises(ConfigError, match="SNAPSHOT_SCHEDULE"):
        RotatorConfig.from_env({**env, "SNAPSHOT_SCHEDULE": "daily"})
