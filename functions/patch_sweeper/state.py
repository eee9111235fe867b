"""One small DynamoDB record per sweep: what was sent, what is still running, was the digest sent.

Why DynamoDB and not an SSM parameter: the last two commands of a sweep can finish within
the same second, so "remove this command from the pending set" must be atomic (``DELETE`` on
a string set) and "send the digest" must be claimed exactly once (a conditional write);
parameters only offer read-modify-write. Items expire by TTL after :data:`KEEP_DAYS`.

Items:
One item per sweep, ``sweep#<id>``: batches (instance ids), sent (batch index -> command id), send_errors
  (batch index -> error code), pending (command ids not final yet), phase (sending|sent),
  not_patchable, counts, started_at, digest_sent_at.
A command's status event finds its sweep through the command's SnapshotId parameter (the
sweep id); a command that is not in that sweep's ``sent`` map is not ours and is ignored.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from autopilot import aws
from autopilot.aws import error_code

KEEP_DAYS = 35
MAX_STORED_NOT_PATCHABLE = 500  # the mail shows 50; the count is always exact


@dataclass(frozen=True)
class SweepRecord:
    sweep_id: str
    started_at: str
    operation: str
    reboot_option: str
    batches: tuple[tuple[str, ...], ...]
    sent: Mapping[int, str] = field(default_factory=dict)
    send_errors: Mapping[int, str] = field(default_factory=dict)
    pending: frozenset[str] = frozenset()
    phase: str = "sending"
    not_patchable: tuple[Mapping[str, str], ...] = ()
    not_patchable_count: int = 0
    opted_out_count: int = 0
    digest_sent_at: str | None = None

    @property
    def targeted(self) -> list[str]:
        return [i for batch in self.batches for i in batch]

    @property
    def complete(self) -> bool:
        return self.phase == "sent" and not self.pending


def _expires() -> int:
    return int(time.time()) + KEEP_DAYS * 86400


def create_sweep(table: str, record: SweepRecord) -> SweepRecord | None:
    """Store a new sweep; returns None when a record with this id exists already (a retry)."""
    client = aws.client("dynamodb")
    item: dict[str, Any] = {
        "pk": {"S": f"sweep#{record.sweep_id}"},
        "started_at": {"S": record.started_at},
        "operation": {"S": record.operation},
        "reboot_option": {"S": record.reboot_option},
        "batches": {"L": [{"L": [{"S": i} for i in b]} for b in record.batches]},
        "sent": {"M": {}},
        "send_errors": {"M": {}},
        "phase": {"S": "sending"},
        "not_patchable": {
            "L": [
                {"M": {k: {"S": v} for k, v in e.items()}}
                for e in record.not_patchable[:MAX_STORED_NOT_PATCHABLE]
            ]
        },
        "not_patchable_count": {"N": str(record.not_patchable_count)},
        "opted_out_count": {"N": str(record.opted_out_count)},
        "expires_at": {"N": str(_expires())},
    }
    try:
        client.put_item(TableName=table, Item=item, ConditionExpression="attribute_not_exists(pk)")
    except ClientError as err:
        if error_code(err) == "ConditionalCheckFailedException":
            return None
        raise
    return record


def load_sweep(table: str, sweep_id: str) -> SweepRecord | None:
    response = aws.client("dynamodb").get_item(
        TableName=table, Key={"pk": {"S": f"sweep#{sweep_id}"}}, ConsistentRead=True
    )
    item = response.get("Item")
    return _record(sweep_id, item) if item else None


def record_sent(table: str, sweep_id: str, batch: int, command_id: str) -> None:
    aws.client("dynamodb").update_item(
        TableName=table,
        Key={"pk": {"S": f"sweep#{sweep_id}"}},
        UpdateExpression="SET sent.#b = :c ADD pending :cs",
        ExpressionAttributeNames={"#b": str(batch)},
        ExpressionAttributeValues={":c": {"S": command_id}, ":cs": {"SS": [command_id]}},
    )


def record_send_error(table: str, sweep_id: str, batch: int, code: str) -> None:
    aws.client("dynamodb").update_item(
        TableName=table,
        Key={"pk": {"S": f"sweep#{sweep_id}"}},
        UpdateExpression="SET send_errors.#b = :e",
        ExpressionAttributeNames={"#b": str(batch)},
        ExpressionAttributeValues={":e": {"S": code}},
    )


def mark_sent(table: str, sweep_id: str) -> SweepRecord:
    """Every batch was sent (or refused); the sweep can now complete."""
    response = aws.client("dynamodb").update_item(
        TableName=table,
        Key={"pk": {"S": f"sweep#{sweep_id}"}},
        UpdateExpression="SET phase = :sent",
        ExpressionAttributeValues={":sent": {"S": "sent"}},
        ReturnValues="ALL_NEW",
    )
    return _record(sweep_id, response["Attributes"])


def command_finished(table: str, sweep_id: str, command_id: str) -> SweepRecord | None:
    """Take the command off the sweep's pending set (idempotent) and return the sweep, or None
    when the sweep record no longer exists (expired)."""
    try:
        response = aws.client("dynamodb").update_item(
            TableName=table,
            Key={"pk": {"S": f"sweep#{sweep_id}"}},
            UpdateExpression="DELETE pending :c",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":c": {"SS": [command_id]}},
            ReturnValues="ALL_NEW",
        )
    except ClientError as err:
        if error_code(err) == "ConditionalCheckFailedException":
            return None
        raise
    return _record(sweep_id, response["Attributes"])


def claim_digest(table: str, sweep_id: str, now: datetime | None = None) -> bool:
    """True for exactly one caller once the sweep is complete; False for everyone else."""
    when = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    try:
        aws.client("dynamodb").update_item(
            TableName=table,
            Key={"pk": {"S": f"sweep#{sweep_id}"}},
            UpdateExpression="SET digest_sent_at = :now",
            ConditionExpression=(
                "attribute_exists(pk) AND attribute_not_exists(digest_sent_at) "
                "AND attribute_not_exists(pending) AND phase = :sent"
            ),
            ExpressionAttributeValues={":now": {"S": when}, ":sent": {"S": "sent"}},
        )
    except ClientError as err:
        if error_code(err) == "ConditionalCheckFailedException":
            return False
        raise
    return True


def _record(sweep_id: str, item: Mapping[str, Any]) -> SweepRecord:
    return SweepRecord(
        sweep_id=sweep_id,
        started_at=item["started_at"]["S"],
        operation=item["operation"]["S"],
        reboot_option=item["reboot_option"]["S"],
        batches=tuple(tuple(v["S"] for v in b["L"]) for b in item.get("batches", {}).get("L", [])),
        sent={int(k): v["S"] for k, v in item.get("sent", {}).get("M", {}).items()},
        send_errors={int(k): v["S"] for k, v in item.get("send_errors", {}).get("M", {}).items()},
        pending=frozenset(item.get("pending", {}).get("SS", [])),
        phase=item.get("phase", {}).get("S", "sending"),
        not_patchable=tuple(
            {k: v["S"] for k, v in e["M"].items()} for e in item.get("not_patchable", {}).get("L", [])
        ),
        not_patchable_count=int(item.get("not_patchable_count", {}).get("N", "0")),
        opted_out_count=int(item.get("opted_out_count", {}).get("N", "0")),
        digest_sent_at=item.get("digest_sent_at", {}).get("S"),
    )


def batches_to_send(record: SweepRecord) -> list[tuple[int, Sequence[str]]]:
    """Batches not yet sent nor refused (a retried invocation resumes where it stopped)."""
    done = set(record.sent) | set(record.send_errors)
    return [(i, b) for i, b in enumerate(record.batches) if i not in done]
