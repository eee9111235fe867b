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

**Rounds.** An automation whose work is more than one invocation can do (or one item can hold)
queues the intents of its next rounds here (``queue``: keys ``queue#<time>#<run id>#<nnnn>``,
status ``queued``, written before anything acts), and each round ``take_queued``s the first
one: in one transaction the queued item is deleted and an ``acting`` entry written, so two
rounds never take the same work. What a round's time did not cover goes back to its own place
in the queue in the same write as its result (``acted(..., rest=...)``): neither is ever lost
nor done twice. A queued intent older than :data:`QUEUED_KEEPS_SECONDS` is dropped, not acted
on; a new run (not a round) replaces whatever an earlier run left queued.

**Memory.** What a run learned that spares the next runs a question (idle_stopper: the hours
already judged busy) is kept as ``memo#<nnnn>`` items (status ``memo``), the keys of one flat
mapping spread over as many items as they need. The same Query that finds unfinished work
reads them (``memory``): remembering costs no read of its own, and a write only when it
changed. Memory holds facts, never decisions: losing it only makes a run ask again.
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
TOPIC = "#topic"  # in Entry.sent_to: the operators' digest was accepted by SNS
KEEP_SECONDS = 14 * 86400  # an entry that nobody could finish in two weeks is dropped by TTL
MAX_ITEM_BYTES = 380_000  # DynamoDB's item limit is 400 KB; keep room for the keys
QUEUE = "queue#"  # sorts after every entry's key (they start with the year)
# A run's rounds end within 48 rounds of at most 15 minutes each (and Step Functions' retries):
# work queued longer ago than that belongs to rounds that stopped, and the next run plans again.
QUEUED_KEEPS_SECONDS = 15 * 3600
MEMO = "memo#"  # sorts between the entries' keys and the queue's
# Memory keys go to an item until their JSON reaches this (before compression, so it always
# fits): about 10,000 instance ids with a number each.
MEMO_ITEM_BYTES = MAX_ITEM_BYTES


class OutboxError(RuntimeError):
    """Work was done but its mail could not be sent: it stays in the outbox for the next run."""


@dataclass(frozen=True)
class Routed:
    """One recipient's own digest (autopilot.routing): sent through SES to ``to``."""

    to: str
    subject: str
    body: str


@dataclass(frozen=True)
class Mail:
    """A rendered mail, as SNS will get it (the operators' digest), and the digests of the
    owners it routes findings to (``routed``, one per recipient)."""

    subject: str
    body: str
    severity: str
    routed: tuple[Routed, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"subject": self.subject, "body": self.body, "severity": self.severity}
        if self.routed:
            data["routed"] = [{"to": r.to, "subject": r.subject, "body": r.body} for r in self.routed]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Mail:
        routed = tuple(
            Routed(str(r["to"]), str(r["subject"]), str(r["body"])) for r in data.get("routed", [])
        )
        return cls(str(data["subject"]), str(data["body"]), str(data["severity"]), routed)


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
    slot: str = ""  # its place in the queue of rounds: where the work it leaves goes back to
    # Who has the entry's mail already (recipients' addresses, TOPIC for the operators' digest):
    # a retry after a partial failure sends only to the others.
    sent_to: list[str] = field(default_factory=list)

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


def _stamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _unpack(blob: bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(zlib.decompress(blob).decode("utf-8"))
    return data


@dataclass(frozen=True)
class Queued:
    """The intent of a next round, waiting in the queue."""

    sk: str
    queued_at: float
    data: bytes


@dataclass
class Outbox:
    """The outbox partition of one automation in the stack's table."""

    table: str
    automation: str
    clock: Any = time.time  # seconds since the epoch; tests may pass their own
    # What is queued for the next rounds, oldest first (listed by :meth:`unfinished`).
    queued: list[Queued] | None = None
    # What earlier runs remembered (read by :meth:`unfinished`), as one mapping, and its items.
    memory: dict[str, Any] = field(default_factory=dict)
    _memo_items: dict[str, dict[str, Any]] = field(default_factory=dict)

    def _client(self) -> Any:
        return aws.client("dynamodb")

    def record(self, run_id: str, intent: Mapping[str, Any], lease_until: float, slot: str = "") -> Entry:
        """Write the intent before acting. The key is unique per attempt (time + run id + a
        random suffix), so a retry of the same event never collides with its own earlier entry.
        ``slot``: the entry's place in the queue of rounds (:meth:`slots`), if it has rounds."""
        entry = self._entry(run_id, intent, lease_until, slot)
        self._client().put_item(
            TableName=self.table, Item=self._item(entry), ConditionExpression="attribute_not_exists(sk)"
        )
        return entry

    def _entry(self, run_id: str, intent: Mapping[str, Any], lease_until: float, slot: str) -> Entry:
        now = self.clock()
        sk = f"{_stamp(now)}#{run_id}#{uuid.uuid4().hex[:8]}"
        return Entry(
            self.automation, sk, "acting", dict(intent), lease_until=lease_until, created_at=now, slot=slot
        )

    def _item(self, entry: Entry) -> dict[str, Any]:
        item = {
            **entry.key,
            "status": {"S": "acting"},
            "data": {"B": _pack({"intent": entry.intent})},
            "lease_until": {"N": f"{entry.lease_until:.3f}"},
            "created_at": {"N": f"{entry.created_at:.3f}"},
            "expiration": {"N": str(int(entry.created_at) + KEEP_SECONDS)},
        }
        if entry.slot:
            item["slot"] = {"S": entry.slot}
        return item

    def slots(self, run_id: str, count: int) -> list[str]:
        """The queue places of a run's rounds, in order: the run's own first."""
        stamp = _stamp(self.clock())
        return [f"{QUEUE}{stamp}#{run_id}#{n:04d}" for n in range(count)]

    def queue(self, slots: list[str], intents: list[Mapping[str, Any]]) -> None:
        """Replace whatever is queued by ``intents`` at ``slots``: a new run plans everything
        again, so what an earlier run (or an earlier attempt of this one) left queued is
        superseded. The queued keys come from :meth:`unfinished`'s Query (no call of its own);
        one DeleteItem per superseded intent, one PutItem per new one."""
        for sk in [q.sk for q in self._queued_now()]:
            self._client().delete_item(TableName=self.table, Key=self._key(sk))
        self.queued = []
        now = self.clock()
        for sk, intent in zip(slots, intents, strict=True):
            self._client().put_item(TableName=self.table, Item=self._queued_item(sk, intent, now))

    def _key(self, sk: str) -> dict[str, Any]:
        return {"pk": {"S": partition(self.automation)}, "sk": {"S": sk}}

    def _queued_item(self, sk: str, intent: Mapping[str, Any], queued_at: float) -> dict[str, Any]:
        return {
            **self._key(sk),
            "status": {"S": "queued"},
            "data": {"B": _pack({"intent": dict(intent)})},
            "created_at": {"N": f"{queued_at:.3f}"},
            "expiration": {"N": str(int(queued_at) + QUEUED_KEEPS_SECONDS)},
        }

    def _queued_now(self) -> list[Queued]:
        if self.queued is None:
            list(self.unfinished())
        return list(self.queued or [])

    def take_queued(self, run_id: str, lease_until: float) -> tuple[Entry | None, bool]:
        """The first queued intent, taken as this run's ``acting`` entry (one transaction: the
        queued item deleted only if it is still there, the entry written), and whether more is
        queued behind it. One another round took first is skipped. An intent queued longer ago
        than :data:`QUEUED_KEEPS_SECONDS` is dropped unacted (its rounds stopped; the next run
        plans again)."""
        client = self._client()
        waiting = self._queued_now()
        while waiting:
            first = waiting.pop(0)
            if self.clock() - first.queued_at > QUEUED_KEEPS_SECONDS:
                client.delete_item(TableName=self.table, Key=self._key(first.sk))
                continue
            entry = self._entry(run_id, _unpack(first.data)["intent"], lease_until, first.sk)
            try:
                client.transact_write_items(
                    TransactItems=[
                        {
                            "Delete": {
                                "TableName": self.table,
                                "Key": self._key(first.sk),
                                "ConditionExpression": "attribute_exists(sk)",
                            }
                        },
                        {
                            "Put": {
                                "TableName": self.table,
                                "Item": self._item(entry),
                                "ConditionExpression": "attribute_not_exists(sk)",
                            }
                        },
                    ]
                )
            except ClientError as err:
                if aws.error_code(err) == "TransactionCanceledException":
                    continue  # another round took it: the next one
                raise
            self.queued = waiting
            return entry, bool(waiting)
        self.queued = []
        return None, False

    def acted(
        self,
        entry: Entry,
        result: Mapping[str, Any],
        mail: Mail | None,
        rest: Mapping[str, Any] | None = None,
    ) -> Entry:
        """The work is done; store its result and the mail to send (one write). ``rest``: the
        work it left, queued again at the entry's slot in the same transaction."""
        entry.status, entry.result, entry.mail = "acted", dict(result), mail
        payload = {"intent": entry.intent, "result": entry.result, "mail": mail.as_dict() if mail else None}
        update = {
            "TableName": self.table,
            "Key": entry.key,
            "UpdateExpression": "SET #s = :acted, #d = :data",
            "ExpressionAttributeNames": {"#s": "status", "#d": "data"},
            "ExpressionAttributeValues": {":acted": {"S": "acted"}, ":data": {"B": _pack(payload)}},
        }
        if rest is None:
            self._client().update_item(**update)
            return entry
        if not entry.slot:
            raise OutboxError("work left by an entry without a place in the queue of rounds")
        item = self._queued_item(entry.slot, rest, self.clock())
        self._client().transact_write_items(
            TransactItems=[{"Update": update}, {"Put": {"TableName": self.table, "Item": item}}]
        )
        if self.queued is not None:  # a round of this invocation may take it
            left = Queued(entry.slot, float(item["created_at"]["N"]), item["data"]["B"])
            self.queued = sorted([*self.queued, left], key=lambda q: q.sk)
        return entry

    def sent(self, entry: Entry, recipients: list[str]) -> None:
        """Some of the entry's mails were accepted (``recipients``, with the earlier ones): kept
        with the entry, so the next attempt sends only the rest (1 UpdateItem)."""
        entry.sent_to = sorted(set(entry.sent_to) | set(recipients))
        self._client().update_item(
            TableName=self.table,
            Key=entry.key,
            UpdateExpression="SET sent_to = :sent",
            ConditionExpression="attribute_exists(sk)",
            ExpressionAttributeValues={":sent": {"L": [{"S": r} for r in entry.sent_to]}},
        )

    def done(self, entry: Entry) -> None:
        """The mail was accepted by SNS (or there was none to send): forget the entry."""
        self._client().delete_item(TableName=self.table, Key=entry.key)

    def unfinished(self) -> Iterator[Entry]:
        """Entries of this automation whose lease has run out: a run died, or its mail failed.
        One Query per run (usually an empty answer). The same Query also lists what is queued
        for the next rounds (``queued``, oldest first) and reads the automation's ``memory``;
        neither is ever yielded here."""
        now = self.clock()
        pages = aws.paginate(
            self._client(),
            "query",
            "Items[]",
            TableName=self.table,
            KeyConditionExpression="pk = :pk",
            FilterExpression="lease_until < :now OR #s IN (:queued, :memo)",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={
                ":pk": {"S": partition(self.automation)},
                ":now": {"N": f"{now:.3f}"},
                ":queued": {"S": "queued"},
                ":memo": {"S": "memo"},
            },
            ConsistentRead=True,
        )
        queued: list[Queued] = []
        memo: dict[str, dict[str, Any]] = {}
        for item in pages:
            if item["status"]["S"] == "queued":
                queued.append(Queued(str(item["sk"]["S"]), float(item["created_at"]["N"]), item["data"]["B"]))
                continue
            if item["status"]["S"] == "memo":
                memo[str(item["sk"]["S"])] = _unpack(item["data"]["B"])
                continue
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
                slot=str(item.get("slot", {}).get("S", "")),
                sent_to=[str(v["S"]) for v in item.get("sent_to", {}).get("L", []) if "S" in v],
            )
        self.queued = sorted(queued, key=lambda q: q.sk)
        self._memo_items = memo
        self.memory = {k: v for sk in sorted(memo) for k, v in memo[sk].items()}

    def remember(self, memory: Mapping[str, Any]) -> int:
        """Keep ``memory`` (a flat mapping, JSON values) for the next runs, in place of what was
        remembered: its keys in order, up to :data:`MEMO_ITEM_BYTES` of JSON an item. Only the items
        that changed are written (PutItem each) and those no longer needed deleted; returns the
        number of writes (0 when nothing changed). Each write renews the item's expiry: memory
        nobody rewrote in :data:`KEEP_SECONDS` is dropped, and the next run just asks again."""
        parts: list[dict[str, Any]] = []
        size = MEMO_ITEM_BYTES
        for key in sorted(memory):
            entry = (
                len(json.dumps(key)) + len(json.dumps(memory[key], separators=(",", ":"), default=str)) + 2
            )
            if size + entry > MEMO_ITEM_BYTES:
                parts.append({})
                size = 2
            parts[-1][key] = memory[key]
            size += entry
        wanted = {f"{MEMO}{n:04d}": part for n, part in enumerate(parts)}
        writes = 0
        now = self.clock()
        for sk, part in wanted.items():
            if self._memo_items.get(sk) == part:
                continue
            item = {
                **self._key(sk),
                "status": {"S": "memo"},
                "data": {"B": _pack(part)},
                "created_at": {"N": f"{now:.3f}"},
                "expiration": {"N": str(int(now) + KEEP_SECONDS)},
            }
            self._client().put_item(TableName=self.table, Item=item)
            writes += 1
        for sk in sorted(set(self._memo_items) - set(wanted)):
            self._client().delete_item(TableName=self.table, Key=self._key(sk))
            writes += 1
        self._memo_items = wanted
        self.memory = dict(memory)
        return writes

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
