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
