"""The sweep table (store.py) in moto: atomic bookkeeping and the digest claim."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import boto3
import pytest

from patch_sweeper import store
from patch_sweeper.decide import RingInfo, SweepRecord

pytestmark = pytest.mark.integration
REGION = "eu-west-1"
TABLE = "patch-sweeper-state"
NOW = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
CMD = "c" * 36


@pytest.fixture(autouse=True)
def table() -> None:
    boto3.client("dynamodb", region_name=REGION).create_table(
        TableName=TABLE,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )


def _record(sweep_id: str = "s-1") -> SweepRecord:
    return SweepRecord(
        sweep_id,
        NOW.isoformat(),
        "Install",
        "NoReboot",
        (("i-1",),),
        not_patchable=({"id": "i-9", "name": "", "owner": "ana", "reason": "r", "fix": "f"},),
        not_patchable_count=1,
        opted_out_count=2,
    )


def test_a_sweep_is_stored_once_and_read_back_as_written() -> None:
    assert store.create_sweep(TABLE, _record(), NOW) is True
    assert store.create_sweep(TABLE, _record(), NOW) is False  # a second run of the same sweep
    stored = store.load_sweep(TABLE, "s-1", with_batches=True)
    assert stored == replace(_record(), rings=(RingInfo(0, 1, 1),), ring_started_at=NOW.isoformat())
    assert store.load_sweep(TABLE, "s-1").batches == ()  # type: ignore[union-attr]  # only when asked
    assert store.current_sweep(TABLE) == "s-1"
    assert store.load_sweep(TABLE, "s-gone") is None
    item = boto3.client("dynamodb", region_name=REGION).get_item(
        TableName=TABLE, Key={"pk": {"S": "sweep#s-1"}}
    )["Item"]
    assert int(item["expires_at"]["N"]) == int(NOW.timestamp()) + 35 * 86400  # TTL from the clock


def test_last_command_final_before_the_sweep_marked_itself_sent() -> None:
    """The race where SSM is faster than the sweep's own bookkeeping still yields one digest."""
    store.create_sweep(TABLE, _record(), NOW)
    store.record_sent(TABLE, "s-1", 0, CMD)
    after_event = store.command_finished(TABLE, "s-1", CMD)
    assert after_event is not None and not after_event.complete  # still "sending": no digest yet
    assert store.claim_digest(TABLE, "s-1", "event-run", NOW) is False
    final = store.mark_sent(TABLE, "s-1")
    assert final.complete and final.sent == {0: CMD}
    assert store.claim_digest(TABLE, "s-1", "sweep-run", NOW) is True
    assert store.claim_digest(TABLE, "s-1", "event-run", NOW) is False  # exactly one run's
    assert store.claim_digest(TABLE, "s-1", "sweep-run", NOW) is True  # ... which may resume it
    assert store.load_sweep(TABLE, "s-1").digest_claim == "sweep-run"  # type: ignore[union-attr]
    duplicate = store.command_finished(TABLE, "s-1", CMD)
    assert duplicate is not None and duplicate.pending == frozenset()
    assert store.command_finished(TABLE, "s-gone", CMD) is None  # record expired (TTL)


def test_a_refused_batch_is_kept_with_its_error_code() -> None:
    store.create_sweep(TABLE, _record(), NOW)
    store.record_send_error(TABLE, "s-1", 0, "InvalidInstanceId")
    final = store.mark_sent(TABLE, "s-1")
    assert final.send_errors == {0: "InvalidInstanceId"} and final.complete
    assert final.batches_to_send() == []


def _two_rings(sweep_id: str = "s-r") -> SweepRecord:
    return replace(_record(sweep_id), rings=(RingInfo(0, 1, 1), RingInfo(1, 1, 1)))


def test_a_ring_is_judged_once_and_the_next_one_started_once() -> None:
    store.stage_batches(TABLE, "s-r", [[["i-1"]], [["i-2"]]], NOW)
    store.create_sweep(TABLE, _two_rings(), NOW, staged=True)
    store.record_sent(TABLE, "s-r", 0, CMD)
    store.mark_sent(TABLE, "s-r")
    store.command_finished(TABLE, "s-r", CMD)
    assert store.claim_digest(TABLE, "s-r", "t", NOW)
    ring0 = store.load_sweep(TABLE, "s-r", with_batches=True)
    assert ring0 is not None and ring0.batches == (("i-1",),)
    summary = {"number": 0, "targeted": 1, "succeeded": 1, "failed": 0}
    assert store.finish_ring(TABLE, ring0, "t", "soaking", "2026-11-23T03:00:00+00:00", summary) is not None
    assert store.finish_ring(TABLE, ring0, "t", "soaking", "x", summary) is None  # judged once
    soaking = store.load_sweep(TABLE, "s-r")
    assert soaking is not None and soaking.status == "soaking" and soaking.results == (summary,)
    started = store.start_ring(TABLE, soaking, NOW)
    assert started is not None and started.ring_index == 1 and started.status == "running"
    assert started.sent == {} and started.pending == frozenset() and started.digest_claim is None
    assert store.start_ring(TABLE, soaking, NOW) is None  # a second tick starts nothing
    ring1 = store.load_sweep(TABLE, "s-r", with_batches=True)
    assert ring1 is not None and ring1.batches == (("i-2",),)


def test_a_ring_times_out_once_and_only_while_something_is_pending() -> None:
    store.create_sweep(TABLE, _record("s-t"), NOW)
    store.record_sent(TABLE, "s-t", 0, CMD)
    store.mark_sent(TABLE, "s-t")
    running = store.load_sweep(TABLE, "s-t")
    assert running is not None
    closed = store.time_out_ring(TABLE, running)
    assert (
        closed is not None and closed.timed_out == {CMD} and closed.pending == frozenset() and closed.complete
    )
    assert store.time_out_ring(TABLE, running) is None  # nothing pending any more


def test_a_missing_batch_item_is_an_error_not_a_smaller_ring() -> None:
    store.create_sweep(TABLE, _two_rings("s-m"), NOW, staged=True)  # nothing staged
    with pytest.raises(RuntimeError, match="batch items missing"):
        store.ring_batches(TABLE, "s-m", 0, 1)
