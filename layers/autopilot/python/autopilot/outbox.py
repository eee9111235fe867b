"""The stack's durable outbox: what a run is about to do, what it did, and the mail about it.

One DynamoDB table for the whole stack (``OUTBOX_TABLE``, keys ``pk``/``sk``, TTL attribute
``expiration``), shared by every automation; each automation only ever touches its own
partitions (``outbox#<automation>`` here, ``claim#<automation>`` for the runner's claims), which
the template enforces with ``dynamodb:LeadingKeys``.

An entry's life, written by :mod:`autopilot.runner` and nothing else:

1. ``record``  - before acting: status ``acting``, the intent (everything needed to carry the
   work out again, idempotently), leased to the recording invocation's deadline;
2. ``acted``   - after acting: status ``acted``, the result and the rendered mail;
3. ``done``    - the mail was accepted by SNS (or there was none): the entry is deleted.

An entry still there when its lease has run out belongs to a run that died or whose mail
failed; the next invocation of the same automation ``take``s it (a conditional write, so only
one does), finishes the work from the intent if it was still ``acting``, and sends the mail.
"""

from __future__ import annotations

import json
import time
import uuid
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from botocore.exceptions import ClientError

from autopilot import aws

Status = Literal["acting", "acted"]
KEEP_SECONDS = 14 * 86400  # an entry that nobody could finish in two weeks is dropped by TTL
MAX_ITEM_BYTES = 380_000  # DynamoDB's item limit is 400 KB; keep room for the keys


class OutboxError(RuntimeError):
    """Work was done but its mail could not be sent: it stays in the outbox for the next run."""


@dataclass(frozen=True)
class Mail:
    """A rendered mail, as SNS will get it."""

    subject: str
    body: str
    severity: str

    def as_dict(self) -> dict[str, str]:
        return {"subject": self.subject, "body": self.body, "severity": self.severity}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Mail:
        return cls(str(data["subject"]), str(data["body"]), str(data["severity"]))


@dataclass
class Entry:
    """One run's work in the outbox."""

    automation: str
    sk: str
    status: Status
    intent: dict[str, Any]
    result: dict[str, Any] | None = None
    mail: Mail | None = None
    lease_until: float = 0.0
    created_at: float = field(default_factory=time.time)
    attempts: int = 0  # how many invocations took it over to finish it

    @property
    def key(self) -> dict[str, Any]:
        return {"pk": {"S": partition(self.automation)}, "sk": {"S": self.sk}}


def partition(automation: str) -> str:
    return f"outbox#{automation}"


def _pack(data: Mapping[str, Any]) -> bytes:
    packed = zlib.compress(json.dumps(data, separators=(",", ":"), default=str).encode("utf-8"), 6)
    if len(packed) > MAX_ITEM_BYTES:
        raise OutboxError(f"outbox entry of {len(packed)} bytes (compressed) exceeds the item limit")
    return packed


def _unpack(blob: bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(zlib.decompress(blob).decode("utf-8"))
    return data


@dataclass
class Outbox:
    """The outbox partition of one automation in the stack's table."""

    table: str
    automation: str
    clock: Any = time.time  # seconds since the epoch; tests may pass their own

    def _client(self) -> Any:
        return aws.client("dynamodb")

    def record(self, run_id: str, intent: Mapping[str, Any], lease_until: float) -> Entry:
        """Write the intent before acting. The key is unique per attempt (time + run id + a
        random suffix), so a retry of the same event never collides with its own earlier entry."""
        now = self.clock()
        sk = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(now))}#{run_id}#{uuid.uuid4().hex[:8]}"
        entry = Entry(self.automation, sk, "acting", dict(intent), lease_until=lease_until, created_at=now)
        self._client().put_item(
            TableName=self.table,
            Item={
                **entry.key,
                "status": {"S": "acting"},
                "data": {"B": _pack({"intent": entry.intent})},
                "lease_until": {"N": f"{lease_until:.3f}"},
                "created_at": {"N": f"{now:.3f}"},
                "expiration": {"N": str(int(now) + KEEP_SECONDS)},
            },
            ConditionExpression="attribute_not_exists(sk)",
        )
        return entry

    def acted(self, entry: Entry, result: Mapping[str, Any], mail: Mail | None) -> Entry:
        """The work is done; store its result and the mail to send (one write)."""
        entry.status, entry.result, entry.mail = "acted", dict(result), mail
        payload = {"intent": entry.intent, "result": entry.result, "mail": mail.as_dict() if mail else None}
        self._client().update_item(
            TableName=self.table,
            Key=entry.key,
            UpdateExpression="SET #s = :acted, #d = :data",
            ExpressionAttributeNames={"#s": "status", "#d": "data"},
            ExpressionAttributeValues={":acted": {"S": "acted"}, ":data": {"B": _pack(payload)}},
        )
        return entry

    def done(self, entry: Entry) -> None:
        """The mail was accepted by SNS (or there was none to send): forget the entry."""
        self._client().delete_item(TableName=self.table, Key=entry.key)

    def unfinished(self) -> Iterator[Entry]:
        """Entries of this automation whose lease has run out: a run died, or its mail failed.
        One Query per run (usually an empty answer)."""
        now = self.clock()
        pages = aws.paginate(
            self._client(),
            "query",
            "Items[]",
            TableName=self.table,
            KeyConditionExpression="pk = :pk",
            FilterExpression="lease_until < :now",
            ExpressionAttributeValues={":pk": {"S": partition(self.automation)}, ":now": {"N": f"{now:.3f}"}},
            ConsistentRead=True,
        )
        for item in pages:
            data = _unpack(item["data"]["B"])
            mail = data.get("mail")
            yield Entry(
                automation=self.automation,
                sk=item["sk"]["S"],
                status="acted" if item["status"]["S"] == "acted" else "acting",
                intent=data.get("intent") or {},
                result=data.get("result"),
                mail=Mail.from_dict(mail) if mail else None,
                lease_until=float(item["lease_until"]["N"]),
                created_at=float(item.get("created_at", {}).get("N", "0")),
                attempts=int(item.get("attempts", {}).get("N", "0")),
            )

    def take(self, entry: Entry, lease_until: float) -> bool:
        """Take over an unfinished entry until ``lease_until`` (and count the attempt); False if
        another invocation got there first (or it is finished already)."""
        try:
            response = self._client().update_item(
                TableName=self.table,
                Key=entry.key,
                UpdateExpression="SET lease_until = :mine ADD attempts :one",
                ConditionExpression="attribute_exists(sk) AND lease_until = :seen",
                ExpressionAttributeValues={
                    ":mine": {"N": f"{lease_until:.3f}"},
                    ":seen": {"N": f"{entry.lease_until:.3f}"},
                    ":one": {"N": "1"},
                },
                ReturnValues="UPDATED_NEW",
            )
        except ClientError as err:
            if aws.error_code(err) == "ConditionalCheckFailedException":
                return False
            raise
        entry.lease_until = lease_until
        entry.attempts = int(response.get("Attributes", {}).get("attempts", {}).get("N", entry.attempts + 1))
        return True

    def release(self, entry: Entry) -> None:
        """Give the lease back at once (this invocation failed but is alive): the retry or the
        next run may take the entry over without waiting for the lease to run out."""
        try:
            self._client().update_item(
                TableName=self.table,
                Key=entry.key,
                UpdateExpression="SET lease_until = :zero",
                ConditionExpression="attribute_exists(sk) AND lease_until = :seen",
                ExpressionAttributeValues={
                    ":zero": {"N": "0.000"},
                    ":seen": {"N": f"{entry.lease_until:.3f}"},
                },
            )
        except ClientError as err:
            if aws.error_code(err) != "ConditionalCheckFailedException":
                raise
        entry.lease_until = 0.0
