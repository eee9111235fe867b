"""The store: the ledger, the stack's own record of every snapshot it created (PRODUCT.md safety rule 1).

A ``ManagedBy`` tag proves nothing: anyone who may tag a snapshot can write it, and IAM checks
the same tag. What this stack created is known by the snapshot ids it wrote here itself, right
after EC2 returned them; only this function's role may write this table. A snapshot that is not
in the ledger is never deleted, never counts toward retention and never satisfies the retry
guard, whatever its tags say.

Items (table ``SnapshotRotatorLedgerTable``, keys ``pk`` / ``sk``; all in one partition, so one
``Query`` reads the whole ledger):

- ``pk="ledger"``, ``sk="snap#<snapshot id>"``: ``volume`` (the source volume: for a copy, whose
  own VolumeId is meaningless, the volume it is a backup of), ``region``, ``policy`` (the
  retention policy's name), ``created`` (the run's clock time), ``run`` (the run's token, also in
  the snapshot's Description) and ``failed_reported`` once a mail said it ended in ``error``.
- ``pk="ledger"``, ``sk="meta#since"``: when the ledger began. On its first run the rotator adopts
  the snapshots it made before it kept a ledger: tagged ``ManagedBy=<stack>``, with the
  Description it always wrote (``<stack>: backup of ...``) and started before the ledger table was
  created - a start time EC2 sets and nobody can move into the past, so nothing made after the
  upgrade can be adopted this way.
- ``pk="ledger"``, ``sk="note#<volume or instance id>"``: what the mails already said about it:
  ``stale_since`` (no fresh completed backup: said once, cleared when one completes),
  ``ended`` (backups of it stopped: said once, cleared when it is opted in again) and
  ``unknown`` (its Backup value names no policy of this stack: said once per value).

Calls: a ``Query`` per 1 MB of the ledger (about 6,000 records a page), ``BatchWriteItem`` for 25
records at a time (the API's maximum), unprocessed items retried. A run killed between
CreateSnapshot and the write here is finished by its retry, which adopts the snapshot by the
run token in its Description (run.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from autopilot import aws

PARTITION = "ledger"
SNAPSHOT = "snap#"
NOTE = "note#"
SINCE = "meta#since"  # when the ledger began: snapshots of the stack older than that were adopted
BATCH = 25  # BatchWriteItem's maximum
RETRIES = 8


@dataclass(frozen=True)
class Record:
    """One snapshot this stack created."""

    snapshot_id: str
    volume_id: str  # the source volume
    region: str
    policy: str
    created: str  # ISO time
    run: str
    failed_reported: bool = False
    source: str = ""  # a disaster-recovery copy: the snapshot it copies (in this stack's region)

    def item(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            **_key(SNAPSHOT, self.snapshot_id),
            "volume": {"S": self.volume_id},
            "region": {"S": self.region},
            "policy": {"S": self.policy},
            "created": {"S": self.created},
            "run": {"S": self.run},
        }
        if self.failed_reported:
            item["failed_reported"] = {"BOOL": True}
        if self.source:
            item["source"] = {"S": self.source}
        return item

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> Record:
        return cls(
            snapshot_id=str(item["sk"]["S"]).removeprefix(SNAPSHOT),
            volume_id=str(item["volume"]["S"]),
            region=str(item["region"]["S"]),
            policy=str(item["policy"]["S"]),
            created=str(item["created"]["S"]),
            run=str(item["run"]["S"]),
            failed_reported=bool(item.get("failed_reported", {}).get("BOOL", False)),
            source=str(item.get("source", {}).get("S", "")),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "snapshot_id": self.snapshot_id,
            "volume_id": self.volume_id,
            "region": self.region,
            "policy": self.policy,
            "created": self.created,
            "run": self.run,
            "failed_reported": self.failed_reported,
            "source": self.source,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Record:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class Note:
    """What the mails already said about one volume (or, for ``unknown``, an instance)."""

    resource_id: str
    stale_since: str = ""  # ISO time its backups were first mailed as stale
    ended: str = ""  # ISO time a mail said its backups ended
    unknown: str = ""  # the Backup value a mail said names no policy of this stack

    def item(self) -> dict[str, Any]:
        item: dict[str, Any] = _key(NOTE, self.resource_id)
        for name in ("stale_since", "ended", "unknown"):
            if getattr(self, name):
                item[name] = {"S": getattr(self, name)}
        return item

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> Note:
        return cls(
            resource_id=str(item["sk"]["S"]).removeprefix(NOTE),
            **{name: str(item.get(name, {}).get("S", "")) for name in ("stale_since", "ended", "unknown")},
        )

    def as_json(self) -> dict[str, str]:
        return {k: str(getattr(self, k)) for k in ("resource_id", "stale_since", "ended", "unknown")}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Note:
        return cls(**{k: str(data.get(k, "")) for k in cls.__dataclass_fields__})

    @property
    def empty(self) -> bool:
        return not (self.stale_since or self.ended or self.unknown)


def dynamodb() -> Any:
    return aws.client("dynamodb")


@dataclass(frozen=True)
class Contents:
    """The whole ledger: snapshot id -> its record, resource id -> its note (what the mails
    already said about it), and since when the ledger is kept (None: this is its first run)."""

    records: dict[str, Record]
    notes: dict[str, Note]
    since: str | None


def read(table: str) -> Contents:
    """The whole ledger, one Query per 1 MB."""
    records: dict[str, Record] = {}
    notes: dict[str, Note] = {}
    since: str | None = None
    for item in aws.paginate(
        dynamodb(),
        "query",
        "Items[]",
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": PARTITION}},
        ConsistentRead=True,
    ):
        key = str(item["sk"]["S"])
        if key.startswith(SNAPSHOT):
            record = Record.from_item(item)
            records[record.snapshot_id] = record
        elif key.startswith(NOTE):
            note = Note.from_item(item)
            notes[note.resource_id] = note
        elif key == SINCE:
            since = str(item["since"]["S"])
    return Contents(records, notes, since)


def created_at(table: str) -> datetime:
    """When the ledger table was created (DescribeTable; on the ledger's first run only)."""
    value = dynamodb().describe_table(TableName=table)["Table"]["CreationDateTime"]
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def since_item(since: str) -> dict[str, Any]:
    return {"pk": {"S": PARTITION}, "sk": {"S": SINCE}, "since": {"S": since}}


def _write(table: str, requests: Iterable[dict[str, Any]]) -> None:
    """BatchWriteItem, 25 requests a call, until DynamoDB has processed every one of them."""
    for batch in aws.chunked(requests, BATCH):
        pending: list[dict[str, Any]] = batch
        for attempt in range(RETRIES):
            response = dynamodb().batch_write_item(RequestItems={table: pending})
            pending = list(response.get("UnprocessedItems", {}).get(table, []))
            if not pending:
                break
            time.sleep(min(0.05 * 2**attempt, 2.0))
        else:
            raise RuntimeError(f"DynamoDB left {len(pending)} ledger writes undone after {RETRIES} tries")


def put(table: str, items: Iterable[Record | Note], since: str | None = None) -> None:
    """Write records and notes (a note with nothing left to say is removed), and the time the
    ledger began when ``since`` is given."""
    requests: list[dict[str, Any]] = [{"PutRequest": {"Item": since_item(since)}}] if since else []
    for entry in items:
        if isinstance(entry, Note) and entry.empty:
            requests.append({"DeleteRequest": {"Key": _key(NOTE, entry.resource_id)}})
        else:
            requests.append({"PutRequest": {"Item": entry.item()}})
    _write(table, requests)


def forget(table: str, snapshot_ids: Iterable[str]) -> None:
    """Remove the records of snapshots that no longer exist (after DeleteSnapshot succeeded)."""
    write(table, [], snapshot_ids)


def write(table: str, records: Iterable[Record], forgotten: Iterable[str]) -> None:
    """New records and removed ones in the same calls, 25 writes a call (never both for one id)."""
    _write(
        table,
        [
            *({"PutRequest": {"Item": r.item()}} for r in records),
            *({"DeleteRequest": {"Key": _key(SNAPSHOT, s)}} for s in forgotten),
        ],
    )


def _key(kind: str, resource_id: str) -> dict[str, Any]:
    return {"pk": {"S": PARTITION}, "sk": {"S": kind + resource_id}}
