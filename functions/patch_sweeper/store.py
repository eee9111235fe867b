"""The sweep table: one small DynamoDB record per sweep - what was sent, what is still running,
and which run makes the digest.

Why DynamoDB and not an SSM parameter: the last two commands of a sweep can finish within
the same second, so "remove this command from the pending set" must be atomic (``DELETE`` on
a string set) and "make the digest" must be claimed by exactly one run (a conditional write);
parameters only offer read-modify-write. Items expire by TTL after :data:`KEEP_DAYS`.

One item per sweep, ``sweep#<id>``: batches (instance ids), sent (batch index -> command id),
send_errors (batch index -> error code), pending (command ids not final yet), phase
(sending|sent), not_patchable, counts, started_at, digest_claim (+ digest_claimed_at).
A command's status event finds its sweep through the command's SnapshotId parameter (the
sweep id); a command that is not in that sweep's ``sent`` map is not ours and is ignored.

The digest claim is a token from the run's recorded intent, so a run that dies after
claiming is finished by whoever resumes that intent (the same token claims again), and never
by a second, fresh run. The mail itself goes through the runner's outbox.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from autopilot import aws
from autopilot.aws import error_code
from patch_sweeper.decide import MAX_STORED_NOT_PATCHABLE, SweepRecord

KEEP_DAYS = 35


def _key(sweep_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"sweep#{sweep_id}"}}


def create_sweep(table: str, record: SweepRecord, now: datetime) -> bool:
    """Store a new sweep (1 PutItem, conditional); False when one with this id exists already."""
    item: dict[str, Any] = {
        **_key(record.sweep_id),
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
        "expires_at": {"N": str(int(now.timestamp()) + KEEP_DAYS * 86400)},
    }
    try:
        aws.client("dynamodb").put_item(
            TableName=table, Item=item, ConditionExpression="attribute_not_exists(pk)"
        )
    except ClientError as err:
        if error_code(err) == "ConditionalCheckFailedException":
            return False
        raise
    return True


def load_sweep(table: str, sweep_id: str) -> SweepRecord | None:
    """The sweep as stored (1 GetItem, consistent), or None."""
    response = aws.client("dynamodb").get_item(TableName=table, Key=_key(sweep_id), ConsistentRead=True)
    item = response.get("Item")
    return _record(sweep_id, item) if item else None


def record_sent(table: str, sweep_id: str, batch: int, command_id: str) -> None:
    """The batch's command, pending - unless SSM already reported it final (:func:`finished_early`):
    then only sent (1 UpdateItem; 2 in that case)."""
    client = aws.client("dynamodb")
    try:
        client.update_item(
            TableName=table,
            Key=_key(sweep_id),
            UpdateExpression="SET sent.#b = :c ADD pending :cs",
            ConditionExpression="attribute_not_exists(finished) OR NOT contains(finished, :c)",
            ExpressionAttributeNames={"#b": str(batch)},
            ExpressionAttributeValues={":c": {"S": command_id}, ":cs": {"SS": [command_id]}},
        )
    except ClientError as err:
        if error_code(err) != "ConditionalCheckFailedException":
            raise
        client.update_item(
            TableName=table,
            Key=_key(sweep_id),
            UpdateExpression="SET sent.#b = :c",
            ExpressionAttributeNames={"#b": str(batch)},
            ExpressionAttributeValues={":c": {"S": command_id}},
        )


def finished_early(table: str, sweep_id: str, command_id: str) -> SweepRecord | None:
    """SSM reported the command final before the sweep recorded it: note it, so that recording
    it does not make it pending (a sweep would otherwise wait for ever). If it was recorded
    meanwhile, take it off the pending set instead. 1 UpdateItem; None when the sweep is gone."""
    try:
        response = aws.client("dynamodb").update_item(
            TableName=table,
            Key=_key(sweep_id),
            UpdateExpression="ADD finished :cs DELETE pending :cs",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":cs": {"SS": [command_id]}},
            ReturnValues="ALL_NEW",
        )
    except ClientError as err:
        if error_code(err) == "ConditionalCheckFailedException":
            return None
        raise
    return _record(sweep_id, response["Attributes"])


def record_send_error(table: str, sweep_id: str, batch: int, code: str) -> None:
    aws.client("dynamodb").update_item(
        TableName=table,
        Key=_key(sweep_id),
        UpdateExpression="SET send_errors.#b = :e",
        ExpressionAttributeNames={"#b": str(batch)},
        ExpressionAttributeValues={":e": {"S": code}},
    )


def mark_sent(table: str, sweep_id: str) -> SweepRecord:
    """Every batch was sent (or refused); the sweep can now complete. Returns it as stored."""
    response = aws.client("dynamodb").update_item(
        TableName=table,
        Key=_key(sweep_id),
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
            Key=_key(sweep_id),
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


def claim_digest(table: str, sweep_id: str, token: str, now: datetime) -> bool:
    """True for the one token that makes the digest of a complete sweep (again True for the same
    token: a resumed run); False for every other."""
    try:
        aws.client("dynamodb").update_item(
            TableName=table,
            Key=_key(sweep_id),
            UpdateExpression="SET digest_claim = :token, digest_claimed_at = :now",
            ConditionExpression=(
                "attribute_exists(pk) AND attribute_not_exists(pending) AND phase = :sent "
                "AND (attribute_not_exists(digest_claim) OR digest_claim = :token)"
            ),
            ExpressionAttributeValues={
                ":token": {"S": token},
                ":now": {"S": now.isoformat(timespec="seconds")},
                ":sent": {"S": "sent"},
            },
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
        digest_claim=item.get("digest_claim", {}).get("S"),
        finished=frozenset(item.get("finished", {}).get("SS", [])),
    )
