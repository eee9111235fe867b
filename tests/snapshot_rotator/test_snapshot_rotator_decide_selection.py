"""Which volumes to snapshot (decide/selection.py): opt-in and opt-out, tags and owner of the new
snapshots, the idempotent retry window, and what a finished-later run still has to create."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapshot_rotator.decide.retention import COMPLETED, ERROR, PENDING, Snapshot
from snapshot_rotator.decide.selection import (
    CreateJob,
    Instance,
    Volume,
    loose_volume_instances,
    oldest_backup_first,
    plan_creation,
    recent_snapshots,
    remaining,
)

pytestmark = pytest.mark.unit

STACK = "ops-autopilot-test"
NOW = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def mine(sid: str, volume: str, ago: timedelta, state: str = COMPLETED, stack: str = STACK) -> Snapshot:
    return Snapshot(sid, volume, NOW - ago, state, {"ManagedBy": stack}, recorded=True)


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
    assert ijob.tags == {
        "ManagedBy": STACK,
        "Name": "web backup 2026-11-23 03:00",
        "SourceInstanceId": "i-1",
        "Owner": "alice",  # the instance's owner (each volume's own tags come by CopyTagsFromSource)
    }
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


def test_an_opted_out_volume_is_left_out_of_its_instances_backup() -> None:
    inst = Instance("i-1", {"Backup": "true"}, "vol-root", ("vol-root", "vol-scratch", "vol-data"))
    volumes = [
        Volume("vol-scratch", {"Backup": "Never"}, instance_id="i-1"),
        Volume("vol-root", {"Backup": " off "}, instance_id="i-1"),
    ]
    plan = plan_creation([inst], volumes, recent={}, stack_name=STACK, now=NOW)
    (job,) = plan.jobs
    assert job.volume_ids == ("vol-data",)
    assert job.exclude_boot and job.exclude_data_volume_ids == ("vol-scratch",)
    assert plan.opted_out == {"vol-scratch": "i-1", "vol-root": "i-1"} and plan.volume_count == 1
    for word in ("false", "no", "NEVER", "off"):  # autopilot.tags.OPT_OUT_VALUES, any case
        alone = Instance("i-2", {"Backup": "true"}, "vol-r", ("vol-r",))
        out = plan_creation(
            [alone], [Volume("vol-r", {"Backup": word})], recent={}, stack_name=STACK, now=NOW
        )
        assert out.jobs == [] and out.opted_out == {"vol-r": "i-2"}


@pytest.mark.parametrize("key", ["Owner", "CreatedBy"])
def test_new_snapshots_carry_the_owner_of_their_volume_or_instance(key: str) -> None:
    inst = Instance("i-1", {"Backup": "true", key: "alice"}, "vol-root", ("vol-root",))
    own = Volume("vol-own", {"Backup": "true", key: "bob"}, instance_id="i-9")
    inherits = Volume("vol-inherits", {"Backup": "true"}, instance_id="i-9")
    nobody = Volume("vol-nobody", {"Backup": "true", "Owner" if key != "Owner" else "X": "z"})
    plan = plan_creation(
        [inst],
        [own, inherits, nobody],
        recent={},
        stack_name=STACK,
        now=NOW,
        owner_key=key,
        instance_owners={"i-9": "carol"},
    )
    jobs = {j.resource_id: j for j in plan.jobs}
    assert jobs["i-1"].tags[key] == "alice" and jobs["i-1"].owner == "alice"
    assert jobs["vol-own"].tags[key] == "bob" and jobs["vol-own"].owner == "bob"
    assert jobs["vol-inherits"].tags[key] == "carol" and jobs["vol-inherits"].owner == "carol"
    assert key not in jobs["vol-nobody"].tags and jobs["vol-nobody"].owner == ""


def test_only_loose_volumes_without_an_owner_need_their_instance_looked_up() -> None:
    known = Instance("i-known", {"Backup": "false", "Owner": "a"})
    volumes = [
        Volume("vol-1", {"Backup": "true"}, instance_id="i-known"),
        Volume("vol-2", {"Backup": "true"}, instance_id="i-other"),
        Volume("vol-3", {"Backup": "true", "Owner": "b"}, instance_id="i-third"),
        Volume("vol-4", {"Backup": "false"}, instance_id="i-fourth"),
        Volume("vol-5", {"Backup": "true"}),
    ]
    assert loose_volume_instances([known], volumes, "Owner") == {"i-other"}


def test_the_owner_key_cannot_override_our_own_tags() -> None:
    vol = Volume("vol-1", {"Backup": "true", "ManagedBy": "forged"}, instance_id="i-1")
    (job,) = plan_creation(
        [], [vol], recent={}, stack_name=STACK, now=NOW, owner_key="ManagedBy", instance_owners={"i-1": "x"}
    ).jobs
    assert job.tags["ManagedBy"] == STACK


def test_a_finished_later_run_creates_only_what_is_missing() -> None:
    inst = Instance("i-1", {"Backup": "true"}, "vol-root", ("vol-root", "vol-d1", "vol-d2", "vol-d3"))
    (job,) = plan_creation([inst], [], recent={"vol-d3": "s3"}, stack_name=STACK, now=NOW).jobs
    assert job.exclude_data_volume_ids == ("vol-d3",)
    assert remaining(job, {}) is job
    assert remaining(job, {"vol-root", "vol-d1", "vol-d2"}) is None
    rest = remaining(job, {"vol-root", "vol-d1"})
    assert rest is not None and rest.volume_ids == ("vol-d2",)
    assert rest.exclude_boot and rest.exclude_data_volume_ids == ("vol-d1", "vol-d3")
    (loose,) = plan_creation(
        [], [Volume("vol-x", {"Backup": "true"})], recent={}, stack_name=STACK, now=NOW
    ).jobs
    assert remaining(loose, {"vol-x"}) is None and remaining(loose, {"vol-y"}) is loose


def test_a_job_survives_the_intent_as_json() -> None:
    inst = Instance("i-1", {"Backup": "true", "Name": "web", "Owner": "o"}, "vol-root", ("vol-root", "vol-d"))
    (job,) = plan_creation([inst], [], recent={"vol-d": "s"}, stack_name=STACK, now=NOW).jobs
    assert CreateJob.from_json(json.loads(json.dumps(job.as_json()))) == job


def test_volumes_that_waited_longest_for_a_backup_go_first() -> None:
    """A run that cannot do every job (time, or the outbox budget) must not leave the same
    volumes out every day: the jobs come oldest newest-backup first, never backed up first."""
    inst = Instance("i-1", {"Backup": "true"}, "vol-r", ("vol-r", "vol-d"))
    vols = [Volume(f"vol-{n}", {"Backup": "true"}) for n in range(4)]
    jobs = plan_creation([inst], vols, recent={}, stack_name=STACK, now=NOW).jobs
    history = [
        mine("s0", "vol-0", 2 * DAY),
        mine("s1", "vol-1", 9 * DAY),
        mine("s1b", "vol-1", 1 * DAY),  # vol-1's newest backup is a day old
        mine("s3", "vol-3", 5 * DAY),
        mine("e3", "vol-3", 1 * DAY, ERROR),  # not a backup
        mine("x2", "vol-2", 30 * DAY, stack="other"),  # not ours: vol-2 was never backed up by us
        mine("r", "vol-r", 3 * DAY),  # the instance's data volume never was either
    ]
    ordered = oldest_backup_first(jobs, history, stack_name=STACK)
    assert [j.resource_id for j in ordered] == ["i-1", "vol-2", "vol-3", "vol-0", "vol-1"]
