"""report.py: the mail and the numbers, pure functions of the recorded intent and the result."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from snapshot_rotator import report, run

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
DAY = timedelta(days=1)
STACK = "ops-autopilot-test"
Rotate = Callable[..., Any]  # conftest.rotate -> Rotation


def test_metrics_count_what_was_done(fleet: Any, rotate: Rotate) -> None:
    from botocore.exceptions import ClientError

    from autopilot import aws

    vols = sorted(fleet.volume({"Backup": "true"}) for _ in range(3))
    for vol in vols:
        for day in range(1, 5):
            fleet.snapshot(vol, NOW - day * DAY)
    fleet.behind_ami(fleet.snapshot(vols[0], NOW - 9 * DAY))
    fleet.snapshot(vols[1], NOW - timedelta(days=2, hours=1), state="pending")

    def refuse(params: dict[str, Any], **_: Any) -> None:
        if params.get("VolumeId") == vols[2]:
            raise ClientError({"Error": {"Code": "IncorrectState", "Message": "injected"}}, "CreateSnapshot")

    aws.client("ec2").meta.events.register("provide-client-params.ec2.CreateSnapshot", refuse)
    assert rotate(keep_newest=2).metrics == {
        "Checked": 3,
        "Changed": 2 + 2 * 2,  # two new snapshots, two expired on each healthy volume
        "Skipped": 1 + 1 + 2,  # AMI, an earlier pending one, two held of the failed volume
        "Failed": 1,
        "SnapshotsCreated": 2,
        "SnapshotsDeleted": 4,
        "SnapshotsCopied": 0,
        "LeftForNextRun": 0,
        "StaleBackups": 0,
    }
    dry = rotate(keep_newest=2, dry_run=True).metrics
    assert dry["Changed"] == dry["SnapshotsCreated"] == dry["SnapshotsDeleted"] == 0


def test_a_run_with_nothing_to_do_still_emits_every_metric(fleet: Any, rotate: Rotate) -> None:
    rotation = rotate()
    assert rotation.plan.intent is None
    assert rotation.metrics == dict.fromkeys(
        (
            "Checked",
            "Changed",
            "Skipped",
            "Failed",
            "SnapshotsCreated",
            "SnapshotsDeleted",
            "SnapshotsCopied",
            "LeftForNextRun",
            "StaleBackups",
        ),
        0,
    )


def test_no_mail_when_all_is_well_and_summaries_are_off(fleet: Any, rotate: Rotate) -> None:
    vol = fleet.volume({"Backup": "true"})
    for day in range(1, 5):
        fleet.snapshot(vol, NOW - day * DAY)
    rotation = rotate(summary_mail=False, keep_newest=2)
    assert rotation.created == 1 and len(rotation.deleted) == 2 and rotation.mail is None


def test_the_summary_mail_tells_what_why_and_what_to_do(fleet: Any, rotate: Rotate) -> None:
    vol = fleet.volume({"Backup": "true", "Name": "db-data", "Owner": "alice@example.com"})
    for day in range(1, 5):
        fleet.snapshot(vol, NOW - day * DAY, Name=f"db-data backup {day}", Owner="alice@example.com")
    mail = rotate(keep_newest=2, keep_days=4).mail
    assert mail is not None and mail.severity == "info"
    assert mail.subject == f"[{STACK}] 1 snapshot created, 1 deleted"
    body = mail.body
    assert body.startswith(
        "Backup run at 2026-11-23 03:00 UTC: 1 opted-in volume checked, 1 snapshot created, "
        "0 already done this period, 1 deleted past retention, 0 failed."
    )
    assert f"volume {vol} (Name db-data, Owner alice@example.com)" in body
    assert "(Name db-data backup 4, Owner alice@example.com)" in body and "(4 days old)" in body
    assert "Retention per volume: the newest 2 completed, everything younger than 4 days." in body
    assert f"- {vol}: 4 kept (2 newest, 1 pending, 1 young)" in body
    assert "Restore: EC2 console" in body and "Backup=false on a volume leaves it out" in body


def test_the_mail_is_a_pure_function_of_intent_and_result(fleet: Any, make_context: Any) -> None:
    vol = fleet.volume({"Backup": "true"})
    fleet.snapshot(vol, NOW - 9 * DAY)
    ctx = make_context(keep_newest=1)
    plan = run.plan(ctx)
    assert plan.intent is not None
    result = run.act(ctx, plan.intent)
    assert report.mail(ctx, plan.intent, result) == report.mail(ctx, plan.intent, result)
    later = make_context(now=NOW + timedelta(minutes=7), keep_newest=1)
    mail = report.mail(later, plan.intent, result)
    assert mail is not None and mail.body.endswith("2026-11-23 03:07 UTC.")  # rendered at ctx.now ...
    assert "Backup run at 2026-11-23 03:00 UTC" in mail.body  # ... about the run the plan made
