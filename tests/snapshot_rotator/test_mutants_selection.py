"""snapshot_rotator.decide.selection where `make mutate` (tools/mutate.py) found behaviour no test
pinned down: each test names the mutants it kills (mutmut's names; docs/mutation-survivors.md
lists the survivors explained instead). Pure decisions, no AWS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from snapshot_rotator.decide.retention import Snapshot
from snapshot_rotator.decide.selection import (
    CreateJob,
    Instance,
    Volume,
    oldest_backup_first,
    opted_in,
    plan_creation,
    recent_snapshots,
    remaining,
)

pytestmark = pytest.mark.unit

NOW = datetime(2024, 5, 14, 9, 17, tzinfo=UTC)
STACK = "ops-autopilot"
WINDOW = timedelta(hours=12)


def ours(snap_id: str, volume_id: str, started: datetime, state: str = "completed") -> Snapshot:
    return Snapshot(snap_id, volume_id, started, state, tags={"ManagedBy": STACK}, recorded=True)


def job(volume_ids: tuple[str, ...], **changes: object) -> CreateJob:
    fields: dict[str, object] = {
        "kind": "instance",
        "resource_id": "i-1",
        "volume_ids": volume_ids,
        "tags": {"ManagedBy": STACK},
        "description": "backup",
        "name": "",
        "owner": "",
        "root_volume_id": "vol-root",
        **changes,
    }
    return CreateJob(**fields)  # type: ignore[arg-type]


def test_a_resource_without_a_backup_tag_is_not_opted_in() -> None:
    # x_opted_in__mutmut_3, _5: the missing tag's default "" became None (AttributeError).
    assert not opted_in({})
    assert opted_in({"Backup": " TRUE "})


# ---- rule 4: a retry never snapshots a volume twice -----------------------------------------


def test_a_snapshot_started_exactly_a_window_ago_still_counts_as_this_periods() -> None:
    # x_recent_snapshots__mutmut_6 (the window's edge left out: the retry would snapshot again).
    edge = ours("snap-edge", "vol-1", NOW - WINDOW)
    assert recent_snapshots([edge], stack_name=STACK, now=NOW, window=WINDOW) == {"vol-1": "snap-edge"}


def test_the_newest_recent_snapshot_of_a_volume_is_the_one_named() -> None:
    # x_recent_snapshots__mutmut_8, _9 (the last one listed won, not the newest), _12 (of two
    # equally new ones the later listed won: the first listed is named, the same on every run).
    newer = ours("snap-newer", "vol-1", NOW - timedelta(hours=1))
    older = ours("snap-older", "vol-1", NOW - timedelta(hours=2), state="pending")
    assert recent_snapshots([newer, older], stack_name=STACK, now=NOW, window=WINDOW) == {
        "vol-1": "snap-newer"
    }
    twin = ours("snap-twin", "vol-1", NOW - timedelta(hours=1))
    assert recent_snapshots([newer, twin], stack_name=STACK, now=NOW, window=WINDOW) == {
        "vol-1": "snap-newer"
    }


def test_a_resumed_instance_job_keeps_the_boot_volume_it_still_has_to_snapshot() -> None:
    # x_remaining__mutmut_10, _20: the boot volume, not done yet and not opted out, was excluded
    # from the resumed CreateSnapshots (left without its backup).
    resumed = remaining(job(("vol-root", "vol-data")), done={"vol-data"})
    assert resumed is not None
    assert (resumed.volume_ids, resumed.exclude_boot, resumed.exclude_data_volume_ids) == (
        ("vol-root",),
        False,
        ("vol-data",),
    )


def test_a_resumed_instance_job_still_leaves_out_an_opted_out_boot_volume() -> None:
    # x_remaining__mutmut_11: the boot volume opted out (Backup=false) was no longer excluded
    # from the resumed call (and None joined the exclusions).
    original = job(("vol-a", "vol-b"), exclude_boot=True)
    resumed = remaining(original, done={"vol-a"})
    assert resumed is not None
    assert (resumed.volume_ids, resumed.exclude_boot, resumed.exclude_data_volume_ids) == (
        ("vol-b",),
        True,
        ("vol-a",),
    )


# ---- which jobs go first when a run cannot do them all ---------------------------------------


def test_the_volume_whose_newest_backup_is_oldest_goes_first() -> None:
    # x_oldest_backup_first__mutmut_10: a volume's newest backup was the last one listed.
    snapshots = [
        ours("a-new", "vol-a", NOW - timedelta(days=1)),
        ours("a-old", "vol-a", NOW - timedelta(days=9)),
        ours("b", "vol-b", NOW - timedelta(days=5)),
    ]
    jobs = [job(("vol-a",), resource_id="i-a"), job(("vol-b",), resource_id="i-b")]
    ordered = oldest_backup_first(jobs, snapshots, stack_name=STACK)
    assert [j.resource_id for j in ordered] == ["i-b", "i-a"]


def test_a_resource_without_a_name_or_owner_is_named_by_its_id_and_gets_no_owner() -> None:
    # x__label__mutmut_9, x_plan_creation__mutmut_56 (the name "XXXX" or None), _88, _90, _94
    # (the job's Name None or "XXXX"), _29, _31, _32 (the owner None, or "XXXX" on the snapshot).
    instance = Instance("i-1", tags={"Backup": "true"}, root_volume_id="vol-1", volume_ids=("vol-1",))
    (created,) = plan_creation([instance], [], recent={}, stack_name=STACK, now=NOW).jobs
    assert (created.name, created.owner) == ("", "")
    assert "Owner" not in created.tags
    assert created.description == "ops-autopilot: backup of instance i-1 _i-1_"  # clean_value: no "("
    assert created.tags["Name"] == "i-1 backup 2024-05-14 09:17"


def test_a_loose_volume_gets_the_owner_of_its_instance_and_its_own_id_as_name() -> None:
    # x_plan_creation__mutmut_33 (the owner of an instance that is not backed up itself was
    # lost), _112, _165, _167, _171 (no Name: named None or "XXXX"), _140 (SourceInstanceId lost).
    host = Instance("i-1", tags={"Owner": "alice"}, root_volume_id="vol-1", volume_ids=("vol-1", "vol-2"))
    loose = Volume("vol-2", tags={"Backup": "true"}, instance_id="i-1")
    (created,) = plan_creation([host], [loose], recent={}, stack_name=STACK, now=NOW).jobs
    assert (created.resource_id, created.owner, created.tags["Owner"]) == ("vol-2", "alice", "alice")
    assert (created.name, created.description) == ("", "ops-autopilot: backup of volume vol-2 _vol-2_")
    assert (created.tags["SourceVolumeId"], created.tags["SourceInstanceId"]) == ("vol-2", "i-1")


def test_an_instance_with_every_volume_done_does_not_stop_the_next_ones() -> None:
    # x_plan_creation__mutmut_53 (continue -> break: every instance after it went without backup).
    done = Instance("i-1", tags={"Backup": "true"}, root_volume_id="vol-1", volume_ids=("vol-1",))
    due = Instance("i-2", tags={"Backup": "true"}, root_volume_id="vol-2", volume_ids=("vol-2",))
    plan = plan_creation([done, due], [], recent={"vol-1": "snap-1"}, stack_name=STACK, now=NOW)
    assert [j.resource_id for j in plan.jobs] == ["i-2"]
    assert plan.already_done == {"vol-1": "snap-1"}
