"""The real handler, through the shared runner, against moto: the sample event, the mail, the
owner tag key, exact call counts, and the failure sequences the runner exists for:

(a) two deliveries of one scheduled event at the same instant: one snapshot per volume;
(b) a run killed between creating its snapshots and deleting the expired ones: the retry
    finishes it from the recorded intent, snapshots nothing twice, mails once;
(c) SNS failing for one run: its mail arrives with the next run, once.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from autopilot import aws, runner
from autopilot.outbox import Outbox, OutboxError
from autopilot.recorder import CallRecorder
from conftest import STACK, FakeContext

pytestmark = pytest.mark.integration

Mailbox = Callable[[], list[dict[str, Any]]]
# The runner's own calls: per invocation the unfinished-work Query and the claim (Powertools:
# PutItem, then UpdateItem with the result); per run with an intent: record, acted, sent.
RUNNER_PER_INVOCATION = {"dynamodb.Query": 1, "dynamodb.PutItem": 1, "dynamodb.UpdateItem": 1}
RUNNER_PER_INTENT = {"dynamodb.PutItem": 1, "dynamodb.UpdateItem": 1, "dynamodb.DeleteItem": 1}


class Killed(Exception):
    """The function "dies": an exception no code path catches (not a ClientError)."""


def handler() -> Any:
    from snapshot_rotator.app import lambda_handler

    return lambda_handler


def event(load_event: Callable[[str], dict[str, Any]], n: int) -> dict[str, Any]:
    """The sample scheduled event as delivery ``n`` (its own id: another scheduled run)."""
    data = load_event("snapshot_rotator/eventbridge.scheduled")
    data["id"] = f"00000000-0000-4000-8000-{n:012d}"
    return data


def invoke(event: dict[str, Any], request: str = "r1") -> dict[str, Any]:
    context = FakeContext()
    context.aws_request_id = request  # type: ignore[misc]
    result: dict[str, Any] = handler()(event, context)
    return result


class History:
    """Three opted-in volumes with four daily snapshots each (1-4 days old, real clock), kept
    newest 2: a complete run makes 3 snapshots and deletes 6."""

    def __init__(self, fleet: Any) -> None:
        self.fleet = fleet
        now = datetime.now(UTC)
        self.volumes = [fleet.volume({"Backup": "true", "Name": f"v{n}", "Owner": f"o{n}"}) for n in range(3)]
        self.old = {
            v: [fleet.snapshot(v, now - timedelta(days=1 + age)) for age in range(4)] for v in self.volumes
        }

    def new(self, volume: str) -> set[str]:
        return set(self.fleet.snapshots(volume)) - set(self.old[volume])

    def settle(self) -> None:
        """As in AWS, a run soon after finds the new snapshots still pending."""
        for volume in self.volumes:
            for snap in self.new(volume):
                self.fleet.set(snap, state="pending")

    def verify(self) -> None:
        for volume in self.volumes:
            left = set(self.fleet.snapshots(volume))
            assert set(self.old[volume][:2]) <= left, "a retained snapshot was deleted"
            assert not set(self.old[volume][2:]) & left, "an expired snapshot is left"
            assert len(self.new(volume)) == 1, f"{volume} has {len(self.new(volume))} new snapshots"


@pytest.fixture
def history(fleet: Any, rotator_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> History:
    monkeypatch.setenv("KEEP_NEWEST", "2")
    monkeypatch.setenv("SUMMARY_MAIL", "true")
    return History(fleet)


def unfinished() -> list[Any]:
    import os

    return list(Outbox(os.environ["OUTBOX_TABLE"], "snapshot_rotator").unfinished())


# --- the everyday path ---------------------------------------------------------------------


def test_the_sample_event_backs_up_and_mails_nothing_when_all_is_well(
    fleet: Any, rotator_env: dict[str, str], load_event: Any, mailbox: Mailbox
) -> None:
    fleet.volume({"Backup": "true"})
    result = invoke(event(load_event, 1))
    assert result["status"] == "done" and result["SnapshotsCreated"] == 1 and result["Changed"] == 1
    assert result["mails_held"] == 0 and mailbox() == []
    again = invoke(event(load_event, 2), "r2")  # a retry window later: the next delivery, another id
    assert again["SnapshotsCreated"] == 0 and again["Checked"] == 1
    assert unfinished() == []


def test_the_same_event_twice_is_one_run(fleet: Any, rotator_env: dict[str, str], load_event: Any) -> None:
    fleet.volume({"Backup": "true"})
    first = invoke(event(load_event, 1))
    with CallRecorder() as calls:
        second = invoke(event(load_event, 1), "r2")
    assert second["status"] == "duplicate" and first["SnapshotsCreated"] == 1
    assert calls.count("ec2") == 0 and [c.operation for c in calls.mutating()] == ["PutItem"]


def test_summary_mail_when_enabled(
    fleet: Any,
    rotator_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    load_event: Any,
    mailbox: Mailbox,
) -> None:
    monkeypatch.setenv("SUMMARY_MAIL", "true")
    fleet.volume({"Backup": "true", "Name": "db"})
    invoke(event(load_event, 1))
    (mail,) = mailbox()
    assert mail["subject"] == f"[{STACK}] 1 snapshot created, 0 deleted"
    assert mail["attributes"] == {"automation": "snapshot_rotator", "severity": "info"}
    assert "console.aws.amazon.com/ec2/home?region=eu-west-1#VolumeDetails" in mail["body"]


def test_a_malformed_event_is_ignored(
    rotator_env: dict[str, str], load_event: Any, calls: CallRecorder
) -> None:
    result = invoke(load_event("snapshot_rotator/eventbridge.malformed_not_scheduled"))
    assert result["status"] == "ignored" and "scheduled event" in result["reason"]
    assert calls.calls == []
    assert invoke({"not": "an event"})["status"] == "ignored"


def test_dry_run_changes_nothing_but_mails_what_it_would_do(
    history: History, monkeypatch: pytest.MonkeyPatch, load_event: Any, mailbox: Mailbox, calls: CallRecorder
) -> None:
    monkeypatch.setenv("DRY_RUN", "true")
    before = history.fleet.snapshots()
    result = invoke(event(load_event, 1))
    assert [c for c in calls.mutating() if c.service == "ec2"] == []
    assert history.fleet.snapshots() == before
    assert result["Changed"] == 0 and result["SnapshotsCreated"] == 0 and result["SnapshotsDeleted"] == 0
    (mail,) = mailbox()
    assert mail["subject"] == f"[{STACK}] DRY RUN: 3 snapshots would be created, 6 deleted"


@pytest.mark.slow
def test_exact_calls_of_one_run_runner_included(
    history: History, load_event: Any, calls: CallRecorder, mailbox: Mailbox
) -> None:
    calls.calls.clear()
    result = invoke(event(load_event, 1))
    own = {
        "ec2.DescribeImages": 1,
        "ec2.DescribeSnapshots": 1,
        "ec2.DescribeInstances": 1,
        "ec2.DescribeVolumes": 1,
        "ec2.CreateSnapshot": 3,
        "ec2.DeleteSnapshot": 6,
        "sns.Publish": 1,  # summaries on
        "dynamodb.Query": 1,  # the ledger, whole
        "dynamodb.BatchWriteItem": 1,  # 3 new records and 6 forgotten: one call of 9 writes
    }
    assert calls.by_operation() == Counter(own) + Counter(RUNNER_PER_INVOCATION) + Counter(RUNNER_PER_INTENT)
    assert calls.count() == 13 + 6 + 3
    assert result["Changed"] == 9 and len(mailbox()) == 1
    history.verify()
    history.settle()
    calls.calls.clear()
    invoke(event(load_event, 2), "r2")  # nothing left to do: no intent, no outbox writes but the claim
    again = {
        "ec2.DescribeImages": 1,
        "ec2.DescribeSnapshots": 1,
        "ec2.DescribeInstances": 1,
        "ec2.DescribeVolumes": 1,
        "dynamodb.Query": 1,  # the ledger
    }
    assert calls.by_operation() == Counter(again) + Counter(RUNNER_PER_INVOCATION)


def test_owner_tag_key_createdby_is_copied_to_the_snapshots_and_shown_in_the_mail(
    fleet: Any,
    rotator_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    load_event: Any,
    mailbox: Mailbox,
) -> None:
    monkeypatch.setenv("OWNER_TAG_KEY", "CreatedBy")
    monkeypatch.setenv("SUMMARY_MAIL", "true")
    loose = fleet.volume({"Backup": "true", "Name": "db", "CreatedBy": "alice", "Owner": "not-the-key"})
    instance_id, volumes = fleet.instance(
        {"Backup": "true", "Name": "web", "CreatedBy": "bob"}, data_volumes=0
    )
    invoke(event(load_event, 1))
    (snap,) = fleet.snapshots(loose).values()
    assert snap["Tags"]["CreatedBy"] == "alice"
    for volume in volumes:
        (snap,) = fleet.snapshots(volume).values()
        assert snap["Tags"]["CreatedBy"] == "bob"  # the instance's owner, on its volumes' snapshots
    (mail,) = mailbox()
    assert f"volume {loose} (Name db, CreatedBy alice)" in mail["body"]
    assert f"instance {instance_id} (Name web, CreatedBy bob)" in mail["body"]
    assert "Owner not-the-key" not in mail["body"]


# --- (a) two deliveries at the same instant --------------------------------------------------


def test_a_two_concurrent_deliveries_make_one_snapshot_per_volume(
    history: History, load_event: Any, mailbox: Mailbox
) -> None:
    same = event(load_event, 1)
    barrier = threading.Barrier(2)
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def deliver(request: str) -> None:
        barrier.wait()
        try:
            results.append(invoke(dict(same), request))
        except BaseException as err:  # noqa: BLE001 - asserted below
            errors.append(err)

    with CallRecorder() as calls:
        threads = [threading.Thread(target=deliver, args=(f"r{n}",)) for n in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert not errors, errors
    assert calls.count("ec2", "CreateSnapshot") == 3, "a volume was snapshotted twice"
    assert sorted(p["VolumeId"] for p in calls.of("ec2", "CreateSnapshot")) == sorted(history.volumes)
    history.verify()
    assert len(mailbox()) == 1
    assert sorted(r["status"] for r in results) in (["done", "in-progress-elsewhere"], ["done", "duplicate"])


# --- (b) killed between creating and deleting ------------------------------------------------


def test_b_a_run_killed_before_its_first_deletion_is_finished_by_the_retry(
    history: History, load_event: Any, mailbox: Mailbox
) -> None:
    ec2 = aws.client("ec2")
    kills = [1]

    def die(**_: Any) -> None:
        if kills:
            kills.pop()
            raise Killed("the function died before its first DeleteSnapshot")

    ec2.meta.events.register("before-call.ec2.DeleteSnapshot", die)
    same = event(load_event, 1)
    with pytest.raises(Killed):
        invoke(same, "r1")
    # The deletions go between the creates (each API its own bucket): the first one comes right
    # after the first volume's new snapshot, so the kill leaves the others not yet snapshotted.
    made = sum(len(history.new(v)) for v in history.volumes)
    assert 1 <= made < len(history.volumes), "the first snapshot was made, then the function died"
    assert all(len(history.new(v)) <= 1 for v in history.volumes)
    assert all(len(history.fleet.snapshots(v)) == 4 + len(history.new(v)) for v in history.volumes), (
        "nothing was deleted yet"
    )
    assert mailbox() == []
    assert [e.status for e in unfinished()] == ["acting"]  # the intent was recorded before acting
    history.settle()
    with CallRecorder() as calls:
        result = invoke(same, "r2")  # Lambda's retry of the same event
    assert calls.count("ec2", "CreateSnapshot") == len(history.volumes) - made, "a volume snapshotted twice"
    assert calls.count("ec2", "DeleteSnapshot") == 6
    history.verify()
    (mail,) = mailbox()
    assert mail["subject"] == f"[{STACK}] 3 snapshots created, 6 deleted"
    assert "made by the interrupted first attempt of this run" in mail["body"]
    assert result["SnapshotsCreated"] == 3 and result["SnapshotsDeleted"] == 6 and result["Failed"] == 0
    assert unfinished() == []
    invoke(event(load_event, 2), "r3")  # the next scheduled run: nothing more to do, no mail
    history.verify()
    assert len(mailbox()) == 1


# --- (c) SNS failing for one run -------------------------------------------------------------


def test_c_a_mail_sns_refused_arrives_with_the_next_run_once(
    history: History, load_event: Any, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_publish = runner.publish
    sns_down = [True]

    def publish(*args: Any, **kwargs: Any) -> str:
        if sns_down[0]:
            raise ClientError({"Error": {"Code": "KMSDisabledException", "Message": "no"}}, "Publish")
        return real_publish(*args, **kwargs)

    monkeypatch.setattr(runner, "publish", publish)
    with pytest.raises(OutboxError):
        invoke(event(load_event, 1), "r1")
    history.verify()  # the work is done ...
    assert [e.status for e in unfinished()] == ["acted"]  # ... and its mail kept
    assert mailbox() == []
    history.settle()
    sns_down[0] = False
    with CallRecorder() as calls:
        invoke(event(load_event, 2), "r2")  # the next scheduled run
    assert calls.count("ec2", "CreateSnapshot") == 0 and calls.count("ec2", "DeleteSnapshot") == 0
    (mail,) = mailbox()
    assert mail["subject"] == f"[{STACK}] 3 snapshots created, 6 deleted"
    assert unfinished() == []
    invoke(event(load_event, 3), "r3")
    assert len(mailbox()) == 1
    history.verify()
