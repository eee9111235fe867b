"""autopilot.outbox's conditional writes (safety rule 4: never twice, never lost), pinned down for
`make mutate` (tools/mutate.py), which mutates the methods of the ``Outbox`` dataclass in its
copy: each DynamoDB item written, each condition, each field read back. Against moto's DynamoDB.
(Mutant names are mutmut's, ``xǁOutboxǁ<method>__mutmut_<n>``; each test says what it pins.)"""

from __future__ import annotations

import zlib
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from autopilot import outbox as outbox_module
from autopilot.outbox import KEEP_SECONDS, MAX_ITEM_BYTES, Entry, Mail, Outbox, OutboxError, _pack, _unpack
from conftest import REGION

pytestmark = pytest.mark.integration

NOW = 1715678220.25  # 2024-05-14T09:17:00.25Z
MAIL = Mail("[s] subject", "body", "warning")


def _items(table: str) -> dict[tuple[str, str], dict[str, Any]]:
    items = boto3.client("dynamodb", region_name=REGION).scan(TableName=table)["Items"]
    return {(i["pk"]["S"], i["sk"]["S"]): i for i in items}


def _box(stack_env: dict[str, str], automation: str = "toy", now: float = NOW) -> Outbox:
    return Outbox(stack_env["OUTBOX_TABLE"], automation, clock=lambda: now)


def test_record_writes_the_intent_before_acting_under_a_key_of_its_own(
    stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # record: the key (time, run id, random suffix), every attribute, the returned entry, and
    # the condition that never overwrites an entry.
    class Fixed:
        hex = "0123456789abcdef"

    monkeypatch.setattr(outbox_module.uuid, "uuid4", Fixed)
    box = _box(stack_env)
    entry = box.record("req-7", {"volumes": ["vol-1"]}, lease_until=NOW + 300.5)
    assert entry == Entry("toy", "2024-05-14T09:17:00Z#req-7#01234567", "acting", {"volumes": ["vol-1"]},
                          lease_until=NOW + 300.5, created_at=NOW)  # fmt: skip
    (item,) = _items(stack_env["OUTBOX_TABLE"]).values()
    data = item.pop("data")["B"]
    assert item == {
        "pk": {"S": "outbox#toy"},
        "sk": {"S": "2024-05-14T09:17:00Z#req-7#01234567"},
        "status": {"S": "acting"},
        "lease_until": {"N": "1715678520.750"},
        "created_at": {"N": "1715678220.250"},
        "expiration": {"N": str(1715678220 + KEEP_SECONDS)},
    }
    assert _unpack(data) == {"intent": {"volumes": ["vol-1"]}}
    with pytest.raises(ClientError) as again:
        box.record("req-7", {"volumes": ["vol-2"]}, lease_until=0.0)
    assert again.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    assert _unpack(_items(stack_env["OUTBOX_TABLE"])[("outbox#toy", entry.sk)]["data"]["B"])["intent"] == {
        "volumes": ["vol-1"]
    }


def test_acted_stores_the_result_and_the_mail_in_one_write(stack_env: dict[str, str]) -> None:
    box = _box(stack_env)
    entry = box.record("r", {"volumes": ["vol-1"]}, lease_until=5.0)
    assert box.acted(entry, {"tagged": ["vol-1"]}, MAIL) is entry
    assert (entry.status, entry.result, entry.mail) == ("acted", {"tagged": ["vol-1"]}, MAIL)
    item = _items(stack_env["OUTBOX_TABLE"])[("outbox#toy", entry.sk)]
    assert item["status"] == {"S": "acted"} and item["lease_until"] == {"N": "5.000"}
    assert _unpack(item["data"]["B"]) == {
        "intent": {"volumes": ["vol-1"]},
        "result": {"tagged": ["vol-1"]},
        "mail": {"subject": "[s] subject", "body": "body", "severity": "warning"},
    }
    other = box.record("q", {"volumes": []}, lease_until=5.0)
    box.acted(other, {}, None)
    assert _unpack(_items(stack_env["OUTBOX_TABLE"])[("outbox#toy", other.sk)]["data"]["B"]) == {
        "intent": {"volumes": []}, "result": {}, "mail": None,
    }  # fmt: skip


def test_done_forgets_that_entry_only(stack_env: dict[str, str]) -> None:
    box = _box(stack_env)
    first, second = box.record("a", {"n": 1}, 0.0), box.record("b", {"n": 2}, 0.0)
    box.done(first)
    assert list(_items(stack_env["OUTBOX_TABLE"])) == [("outbox#toy", second.sk)]


def test_unfinished_reads_back_the_entries_whose_lease_ran_out_of_this_automation_only(
    stack_env: dict[str, str],
) -> None:
    box = _box(stack_env)
    acting = box.record("a", {"n": 1}, lease_until=NOW - 0.001)
    acted = box.acted(box.record("b", {"n": 2}, lease_until=NOW - 10), {"ok": True}, MAIL)
    box.record("c", {"n": 3}, lease_until=NOW)  # leased until now: not yet run out
    box.record("d", {"n": 4}, lease_until=NOW + 60)
    _box(stack_env, "other").record("e", {"n": 5}, lease_until=0.0)
    found = list(box.unfinished())
    assert found == [
        Entry("toy", acting.sk, "acting", {"n": 1}, None, None, NOW - 0.001, NOW, 0),
        Entry("toy", acted.sk, "acted", {"n": 2}, {"ok": True}, MAIL, NOW - 10, NOW, 0),
    ]
    box.take(found[0], NOW + 1)
    box.release(found[0])
    (again, _) = box.unfinished()
    assert (again.sk, again.attempts, again.lease_until) == (acting.sk, 1, 0.0)


def test_unfinished_reads_an_item_without_optional_attributes(stack_env: dict[str, str]) -> None:
    table = stack_env["OUTBOX_TABLE"]
    boto3.client("dynamodb", region_name=REGION).put_item(
        TableName=table,
        Item={"pk": {"S": "outbox#toy"}, "sk": {"S": "old"}, "status": {"S": "strange"},
              "data": {"B": _pack({})}, "lease_until": {"N": "1.5"}},
    )  # fmt: skip
    assert list(_box(stack_env).unfinished()) == [Entry("toy", "old", "acting", {}, None, None, 1.5, 0.0, 0)]


def test_take_leases_the_entry_and_counts_the_attempt_once_per_invocation(stack_env: dict[str, str]) -> None:
    box = _box(stack_env)
    box.record("a", {"n": 1}, lease_until=0.0)
    (entry,) = box.unfinished()
    (rival,) = box.unfinished()
    assert box.take(entry, NOW + 100.5) is True
    assert (entry.lease_until, entry.attempts) == (NOW + 100.5, 1)
    item = _items(stack_env["OUTBOX_TABLE"])[("outbox#toy", entry.sk)]
    assert (item["lease_until"], item["attempts"]) == ({"N": "1715678320.750"}, {"N": "1"})
    assert box.take(rival, NOW + 200) is False  # it saw the old lease: another invocation was first
    assert (rival.lease_until, rival.attempts) == (0.0, 0)
    assert box.take(entry, NOW + 300) is True and entry.attempts == 2
    box.release(entry)
    # The rival's view is stale (0 attempts), but the lease it saw (0.0) is the entry's again:
    # it takes it, and its count is the table's, not its own view's plus one.
    assert box.take(rival, NOW + 400) is True
    assert (rival.lease_until, rival.attempts) == (NOW + 400, 3)
    box.done(entry)
    assert box.take(entry, NOW + 500) is False  # finished already


def test_unfinished_reads_consistently_in_one_query_of_its_partition(
    stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # xǁOutboxǁunfinished: ConsistentRead dropped or False (an entry just written or taken could
    # be missed or seen with its old lease: moto is always consistent, so the request is checked).
    asked: list[dict[str, Any]] = []
    real = outbox_module.aws.paginate

    def paginate(client: Any, operation: str, expression: str, **kwargs: Any) -> Any:
        asked.append({"operation": operation, "expression": expression, **kwargs})
        return real(client, operation, expression, **kwargs)

    monkeypatch.setattr(outbox_module.aws, "paginate", paginate)
    assert list(_box(stack_env).unfinished()) == []
    assert asked == [
        {
            "operation": "query",
            "expression": "Items[]",
            "TableName": stack_env["OUTBOX_TABLE"],
            "KeyConditionExpression": "pk = :pk",
            "FilterExpression": "lease_until < :now OR #s IN (:queued, :memo)",
            "ExpressionAttributeNames": {"#s": "status"},
            "ExpressionAttributeValues": {
                ":pk": {"S": "outbox#toy"},
                ":now": {"N": "1715678220.250"},
                ":queued": {"S": "queued"},
                ":memo": {"S": "memo"},
            },
            "ConsistentRead": True,
        }
    ]


def test_release_gives_the_lease_back_only_if_it_is_still_this_invocations(stack_env: dict[str, str]) -> None:
    box = _box(stack_env)
    box.record("a", {"n": 1}, lease_until=0.0)
    (entry,) = box.unfinished()
    (rival,) = box.unfinished()
    box.take(entry, NOW + 100)
    box.release(rival)  # its lease (0.0) is no longer the entry's: nothing changes
    item = _items(stack_env["OUTBOX_TABLE"])[("outbox#toy", entry.sk)]
    assert item["lease_until"] == {"N": "1715678320.250"} and rival.lease_until == 0.0
    box.release(entry)
    item = _items(stack_env["OUTBOX_TABLE"])[("outbox#toy", entry.sk)]
    assert item["lease_until"] == {"N": "0.000"} and entry.lease_until == 0.0
    box.done(entry)
    box.release(entry)  # gone: nothing to give back, and no error
    assert _items(stack_env["OUTBOX_TABLE"]) == {}


def test_errors_other_than_a_lost_race_are_raised(stack_env: dict[str, str]) -> None:
    missing = Outbox("no-such-table", "toy", clock=lambda: NOW)
    entry = Entry("toy", "sk", "acting", {})
    for call in (lambda: missing.take(entry, NOW), lambda: missing.release(entry)):
        with pytest.raises(ClientError) as raised:
            call()
        assert raised.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_an_entry_too_big_for_an_item_is_refused_naming_its_size(monkeypatch: pytest.MonkeyPatch) -> None:
    # x__pack__mutmut_18 (a compressed entry of exactly the limit refused), _19 (the message).
    size = len(_pack({"n": 1}))
    monkeypatch.setattr(outbox_module, "MAX_ITEM_BYTES", size)
    assert zlib.decompress(_pack({"n": 1})) == b'{"n":1}'
    monkeypatch.setattr(outbox_module, "MAX_ITEM_BYTES", size - 1)
    with pytest.raises(OutboxError) as raised:
        _pack({"n": 1})
    assert str(raised.value) == f"outbox entry of {size} bytes (compressed) exceeds the item limit"
    assert MAX_ITEM_BYTES == 380_000
