"""The sweep table: a small DynamoDB record per sweep - its rings, what the current ring sent,
what still runs, which run makes the ring's digest - and one item per command's instances.

Why DynamoDB and not an SSM parameter: the last two commands of a ring can finish within
the same second, so "remove this command from the pending set" must be atomic (``DELETE`` on
a string set) and "make the digest" must be claimed by exactly one run (a conditional write);
parameters only offer read-modify-write. Items expire by TTL after :data:`KEEP_DAYS`.

- ``sweep#<id>``: rings (number, commands, instances each), ring_index, status
  (running|soaking|halted|done), ring_started_at, soak_until, results (one summary per finished
  ring), and the current ring's sent (batch index -> command id), send_errors, pending (command
  ids not final yet), finished, timed_out, phase (sending|sent), digest_claim; not_patchable
  (the first 500), counts, started_at. Its size is bounded by the largest ring's commands (at
  50,000 instances in one ring: 1,000 command ids, about 90 KB), never by the fleet.
- ``batch#<id>#<ring index>#<batch index>``: the instance ids of one command (at most 50),
  written before the sweep record, read back per ring.
- ``current``: the id of the newest sweep, which the hourly tick looks at (1 GetItem).

A command's status event finds its sweep through the command's SnapshotId parameter (the
sweep id); a command that is not in that sweep's ``sent`` map is not ours and is ignored.

The digest claim is a token from the run's recorded intent, so a run that dies after
claiming is finished by whoever resumes that intent (the same token claims again), and never
by a second, fresh run. The mail itself goes through the runner's outbox.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from autopilot import aws
from autopilot.aws import error_code
from patch_sweeper.decide import MAX_STORED_NOT_PATCHABLE, RingInfo, SweepRecord

KEEP_DAYS = 35
CURRENT = "current"
WRITE_BATCH = 25  # BatchWriteItem maximum
READ_BATCH = 100  # BatchGetItem maximum
_RETRY_UNPROCESSED = 8  # rounds for items DynamoDB left unprocessed (throttled), with backoff


def _key(sweep_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"sweep#{sweep_id}"}}


def _batch_key(sweep_id: str, ring_index: int, batch: int) -> dict[str, Any]:
    return {"pk": {"S": f"batch#{sweep_id}#{ring_index}#{batch}"}}


def _expires(now: datetime) -> dict[str, Any]:
    return {"N": str(int(now.timestamp()) + KEEP_DAYS * 86400)}


def stage_batches(table: str, sweep_id: str, rings: Sequence[Sequence[Sequence[str]]], now: datetime) -> None:
    """The instance ids of every ring's commands, one item per command (BatchWriteItem, 25 per
    call: ceil(B / 25) calls for B commands; the API's maximum). Written by the weekly run's plan
    before its intent is recorded - the intent names them by count, so it stays small whatever
    the fleet (the outbox item, like any, holds at most 400 KB: about 35,000 ids) - and before
    anything is sent. Written again, identically keyed, by a retry that plans again."""
    expires = _expires(now)
    _write_all(
        table,
        [
            {**_batch_key(sweep_id, r, b), "instances": {"SS": sorted(ids)}, "expires_at": expires}
            for r, batches in enumerate(rings)
            for b, ids in enumerate(batches)
        ],
    )


def create_sweep(table: str, record: SweepRecord, now: datetime, *, staged: bool = False) -> bool:
    """Store a new sweep record (1 PutItem, conditional), then the ``current`` pointer (1
    PutItem). False when a sweep with this id exists already. Its commands' instance ids are
    :func:`stage_batches`' (``staged``), or else ``record.batches``, stored here as its one ring."""
    if not staged:
        stage_batches(table, record.sweep_id, [record.batches], now)
    expires = _expires(now)
    infos = record.rings or (RingInfo(0, len(record.batches), len(record.targeted)),)
    item: dict[str, Any] = {
        **_key(record.sweep_id),
        "started_at": {"S": record.started_at},
        "operation": {"S": record.operation},
        "reboot_option": {"S": record.reboot_option},
        "rings": {"L": [{"M": {k: {"N": str(v)} for k, v in i.as_json().items()}} for i in infos]},
        "ring_index": {"N": "0"},
        "status": {"S": "running"},
        "ring_started_at": {"S": record.ring_started_at or record.started_at},
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
        "bad_ring_tags": {"L": [{"M": {k: {"S": v} for k, v in e.items()}} for e in record.bad_ring_tags]},
        "bad_ring_tag_count": {"N": str(record.bad_ring_tag_count)},
        **({"superseded": {"S": record.superseded}} if record.superseded else {}),
        "expires_at": expires,
    }
    client = aws.client("dynamodb")
    try:
        client.put_item(TableName=table, Item=item, ConditionExpression="attribute_not_exists(pk)")
    except ClientError as err:
        if error_code(err) == "ConditionalCheckFailedException":
            return False
        raise
    try:  # an older sweep's late run never takes the pointer back
        client.put_item(
            TableName=table,
            Item={"pk": {"S": CURRENT}, "sweep_id": {"S": record.sweep_id}, "started_at": item["started_at"]},
            ConditionExpression="attribute_not_exists(pk) OR started_at <= :s",
            ExpressionAttributeValues={":s": item["started_at"]},
        )
    except ClientError as err:
        if error_code(err) != "ConditionalCheckFailedException":
            raise
    return True


def _write_all(table: str, items: list[dict[str, Any]]) -> None:
    client = aws.client("dynamodb")
    for chunk in aws.chunked(items, WRITE_BATCH):
        requests = [{"PutRequest": {"Item": i}} for i in chunk]
        for attempt in range(_RETRY_UNPROCESSED):
            response = client.batch_write_item(RequestItems={table: requests})
            requests = response.get("UnprocessedItems", {}).get(table, [])
            if not requests:
                break
            time.sleep(min(2.0, 0.05 * 2**attempt))
        if requests:
            raise RuntimeError(f"{len(requests)} batch items of the sweep left unprocessed by DynamoDB")


def _announce_key(at: str) -> dict[str, Any]:
    return {"pk": {"S": f"announce#{at}"}}


def announced(table: str, at: str) -> bool:
    """Whether the sweep starting at ``at`` was announced already (1 GetItem)."""
    item = aws.client("dynamodb").get_item(TableName=table, Key=_announce_key(at), ConsistentRead=True)
    return "Item" in item


def announce(table: str, at: str, now: datetime) -> bool:
    """Record that the sweep starting at ``at`` is announced (1 PutItem, conditional): False when
    another tick did it first (that one's mail says it)."""
    try:
        aws.client("dynamodb").put_item(
            TableName=table,
            Item={**_announce_key(at), "announced_at": {"S": now.isoformat()}, "expires_at": _expires(now)},
            ConditionExpression="attribute_not_exists(pk)",
        )
    except ClientError as err:
        if error_code(err) == "ConditionalCheckFailedException":
            return False
        raise
    return True


def current_sweep(table: str) -> str | None:
    """The newest sweep's id (1 GetItem), or None."""
    item = aws.client("dynamodb").get_item(TableName=table, Key={"pk": {"S": CURRENT}}, ConsistentRead=True)
    found = item.get("Item", {}).get("sweep_id", {}).get("S")
    return str(found) if found else None


def load_sweep(table: str, sweep_id: str, *, with_batches: bool = False) -> SweepRecord | None:
    """The sweep as stored (1 GetItem, consistent), or None; ``with_batches``: and the current
    ring's instance ids (ceil(B / 100) BatchGetItem for its B commands)."""
    response = aws.client("dynamodb").get_item(TableName=table, Key=_key(sweep_id), ConsistentRead=True)
    item = response.get("Item")
    if not item:
        return None
    record = _record(sweep_id, item)
    if with_batches:
        record = with_ring_batches(table, record)
    return record


def with_ring_batches(table: str, record: SweepRecord) -> SweepRecord:
    """The record with its current ring's instance ids (ceil(B / 100) BatchGetItem)."""
    return replace(
        record, batches=ring_batches(table, record.sweep_id, record.ring_index, record.ring.batches)
    )


def ring_batches(table: str, sweep_id: str, ring_index: int, count: int) -> tuple[tuple[str, ...], ...]:
    """The instance ids of one ring's commands, in batch order."""
    client = aws.client("dynamodb")
    found: dict[str, tuple[str, ...]] = {}
    keys = [_batch_key(sweep_id, ring_index, b) for b in range(count)]
    for chunk in aws.chunked(keys, READ_BATCH):
        request: dict[str, Any] = {table: {"Keys": list(chunk), "ConsistentRead": True}}
        for attempt in range(_RETRY_UNPROCESSED):
            response = client.batch_get_item(RequestItems=request)
            for item in response.get("Responses", {}).get(table, []):
                found[item["pk"]["S"]] = tuple(sorted(item["instances"]["SS"]))
            request = response.get("UnprocessedKeys") or {}
            if not request:
                break
            time.sleep(min(2.0, 0.05 * 2**attempt))
    missing = [k["pk"]["S"] for k in keys if k["pk"]["S"] not in found]
    if missing:
        raise RuntimeError(f"sweep {sweep_id}: {len(missing)} batch items missing (first {missing[0]})")
    return tuple(found[k["pk"]["S"]] for k in keys)


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
    return _update_existing(
        table, sweep_id, "ADD finished :cs DELETE pending :cs", {":cs": {"SS": [command_id]}}
    )


def command_finished(table: str, sweep_id: str, command_id: str) -> SweepRecord | None:
    """Take the command off the sweep's pending set (idempotent) and return the sweep, or None
    when the sweep record no longer exists (expired)."""
    return _update_existing(table, sweep_id, "DELETE pending :cs", {":cs": {"SS": [command_id]}})


def _update_existing(
    table: str,
    sweep_id: str,
    expression: str,
    values: Mapping[str, Any],
    condition: str = "",
    names: Mapping[str, str] | None = None,
) -> SweepRecord | None:
    """One UpdateItem on an existing sweep record, returning it as stored; None when there is
    no such record (or ``condition`` does not hold)."""
    try:
        response = aws.client("dynamodb").update_item(
            TableName=table,
            Key=_key(sweep_id),
            UpdateExpression=expression,
            ConditionExpression="attribute_exists(pk)" + (f" AND ({condition})" if condition else ""),
            ExpressionAttributeValues=dict(values),
            **({"ExpressionAttributeNames": dict(names)} if names else {}),
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
    """Every batch of the ring was sent (or refused); it can now complete. Returns it as stored."""
    response = aws.client("dynamodb").update_item(
        TableName=table,
        Key=_key(sweep_id),
        UpdateExpression="SET phase = :sent",
        ExpressionAttributeValues={":sent": {"S": "sent"}},
        ReturnValues="ALL_NEW",
    )
    return _record(sweep_id, response["Attributes"])


def claim_digest(table: str, sweep_id: str, token: str, now: datetime) -> bool:
    """True for the one token that makes the digest of a complete ring (again True for the same
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


def finish_ring(
    table: str, record: SweepRecord, token: str, status: str, soak_until: str, summary: Mapping[str, int]
) -> SweepRecord | None:
    """The ring's verdict (done, soaking until ``soak_until``, halted) and its summary, written
    by the run that holds the digest claim (1 UpdateItem). None when it was written already (a
    resumed run) or the sweep moved on."""
    return _update_existing(
        table,
        record.sweep_id,
        "SET #st = :status, soak_until = :until, "
        "results = list_append(if_not_exists(results, :none), :summary)",
        {
            ":status": {"S": status},
            ":until": {"S": soak_until},
            ":token": {"S": token},
            ":ring": {"N": str(record.ring_index)},
            ":running": {"S": "running"},
            ":none": {"L": []},
            ":summary": {"L": [{"M": {k: {"N": str(v)} for k, v in summary.items()}}]},
        },
        "ring_index = :ring AND digest_claim = :token AND #st = :running",
        {"#st": "status"},
    )


def start_ring(table: str, record: SweepRecord, now: datetime) -> SweepRecord | None:
    """Move a soaking sweep to its next ring, whose commands are about to be sent (1 UpdateItem,
    conditional: only from this ring, only while soaking, so a second tick starts nothing).
    The current ring's bookkeeping starts empty. None when another run moved it already."""
    return _update_existing(
        table,
        record.sweep_id,
        "SET ring_index = :next, #st = :running, ring_started_at = :now, phase = :sending, "
        "sent = :empty, send_errors = :empty "
        "REMOVE pending, finished, timed_out, digest_claim, digest_claimed_at, freeze_noted, left_out",
        {
            ":next": {"N": str(record.ring_index + 1)},
            ":ring": {"N": str(record.ring_index)},
            ":running": {"S": "running"},
            ":soaking": {"S": "soaking"},
            ":sending": {"S": "sending"},
            ":now": {"S": now.isoformat()},
            ":empty": {"M": {}},
        },
        "ring_index = :ring AND #st = :soaking",
        {"#st": "status"},
    )


def time_out_ring(table: str, record: SweepRecord) -> SweepRecord | None:
    """Close a running ring whose last status never came: its pending commands become
    ``timed_out`` and the ring complete (1 UpdateItem, conditional on this ring still running).
    A batch never sent by then is sent by nobody (phase sent). None when it moved on."""
    values = {":ring": {"N": str(record.ring_index)}, ":running": {"S": "running"}, ":sent": {"S": "sent"}}
    if not record.pending:  # its sending stopped before a command was recorded: close it as it is
        return _update_existing(
            table,
            record.sweep_id,
            "SET phase = :sent",
            {**values, ":sending": {"S": "sending"}},
            "ring_index = :ring AND #st = :running AND phase = :sending AND attribute_not_exists(pending)",
            {"#st": "status"},
        )
    return _update_existing(
        table,
        record.sweep_id,
        "SET timed_out = pending, phase = :sent REMOVE pending",
        values,
        "ring_index = :ring AND #st = :running AND attribute_exists(pending)",
        {"#st": "status"},
    )


def leave_out(table: str, record: SweepRecord, instance_ids: frozenset[str]) -> None:
    """The ring's instances that are not patched after all (no longer running, or opted out
    since the sweep was planned), before any of its commands is sent (1 UpdateItem)."""
    _update_existing(
        table,
        record.sweep_id,
        "ADD left_out :ids",
        {":ids": {"SS": sorted(instance_ids)}, ":ring": {"N": str(record.ring_index)}},
        "ring_index = :ring",
    )


def note_freeze(table: str, record: SweepRecord) -> bool:
    """True the first time a change freeze holds this ring's start back (its mail is sent
    once per freeze, not every hour); False after (1 UpdateItem)."""
    return (
        _update_existing(
            table,
            record.sweep_id,
            "SET freeze_noted = :next",
            {":next": {"N": str(record.ring_index + 1)}, ":ring": {"N": str(record.ring_index)}},
            "ring_index = :ring AND (attribute_not_exists(freeze_noted) OR freeze_noted <> :next)",
        )
        is not None
    )


def _record(sweep_id: str, item: Mapping[str, Any]) -> SweepRecord:
    def text(name: str, default: str = "") -> str:
        return str(item.get(name, {}).get("S", default))

    def number(name: str, default: int = 0) -> int:
        return int(item.get(name, {}).get("N", str(default)))

    return SweepRecord(
        sweep_id=sweep_id,
        started_at=text("started_at"),
        operation=text("operation"),
        reboot_option=text("reboot_option"),
        batches=(),
        sent={int(k): v["S"] for k, v in item.get("sent", {}).get("M", {}).items()},
        send_errors={int(k): v["S"] for k, v in item.get("send_errors", {}).get("M", {}).items()},
        pending=frozenset(item.get("pending", {}).get("SS", [])),
        phase=text("phase", "sending"),
        not_patchable=tuple(
            {k: v["S"] for k, v in e["M"].items()} for e in item.get("not_patchable", {}).get("L", [])
        ),
        not_patchable_count=number("not_patchable_count"),
        opted_out_count=number("opted_out_count"),
        digest_claim=item.get("digest_claim", {}).get("S"),
        finished=frozenset(item.get("finished", {}).get("SS", [])),
        rings=tuple(
            RingInfo(int(r["M"]["number"]["N"]), int(r["M"]["batches"]["N"]), int(r["M"]["instances"]["N"]))
            for r in item.get("rings", {}).get("L", [])
        ),
        ring_index=number("ring_index"),
        status=text("status", "running"),
        ring_started_at=text("ring_started_at"),
        soak_until=text("soak_until"),
        timed_out=frozenset(item.get("timed_out", {}).get("SS", [])),
        results=tuple(
            {k: int(v["N"]) for k, v in r["M"].items()} for r in item.get("results", {}).get("L", [])
        ),
        freeze_noted=number("freeze_noted", -1),
        bad_ring_tags=tuple(
            {k: v["S"] for k, v in e["M"].items()} for e in item.get("bad_ring_tags", {}).get("L", [])
        ),
        bad_ring_tag_count=number("bad_ring_tag_count"),
        left_out=frozenset(item.get("left_out", {}).get("SS", [])),
        superseded=text("superseded"),
    )
