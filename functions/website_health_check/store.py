"""Site states in the stack's small DynamoDB table (one item per site URL), the health check's
own memory.

Read once per run (one Scan page: a few hundred small items), written only when something
changes, with optimistic locking on ``version``: a write succeeds only if nobody changed the
item since the run read it. When two runs overlap, the second write of the same change fails
its condition and that run stays silent about it, so a transition is mailed once.

Each item also keeps the tokens of its last few writers (``writers``). A run that was
killed after some of its writes is finished by a later invocation from its recorded intent
(autopilot.runner): the write it repeats then fails its condition, and the token tells
"this run's own earlier write" (done: still mailed) from "another run's" (left to that run).
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from botocore.exceptions import ClientError

from autopilot import aws
from website_health_check.decide import SiteState, Status

PING = "ping#"  # ping#<heartbeat id>: its token's hash, when its URL was made, its last ping
CONFIG_ITEM = "#site-list"  # remembers the last malformed site list we mailed about
ORDER_ITEM = "#not-checked"  # the sites the last run did not reach (checked first next run)
KEEP_WRITERS = 5  # writer tokens kept per item: far more runs than can overlap one
Outcome = Literal["written", "already", "conflict"]


def load(table: str) -> dict[str, dict[str, Any]]:
    """Every item of the table by url (a handful of items: one Scan page in practice)."""
    items = aws.paginate(aws.client("dynamodb"), "scan", "Items", TableName=table, ConsistentRead=True)
    return {item["url"]["S"]: item for item in items}


def to_state(item: Mapping[str, Any] | None, url: str) -> SiteState:
    if not item:
        return SiteState(url=url)
    return SiteState(
        url=url,
        reported=Status(item.get("reported", {}).get("S", "UP")),
        since=item.get("since", {}).get("S", ""),
        streak_status=Status(item.get("streak_status", {}).get("S", "UP")),
        streak=int(item.get("streak", {}).get("N", "0")),
        reason=item.get("reason", {}).get("S", ""),
        version=int(item.get("version", {}).get("N", "0")),
        recent=item.get("recent", {}).get("S", ""),
    )


def version(item: Mapping[str, Any] | None) -> int:
    return int(item["version"]["N"]) if item and "version" in item else 0


def writers(item: Mapping[str, Any] | None) -> list[str]:
    """The tokens of the item's last writers, newest first."""
    return [w["S"] for w in (item or {}).get("writers", {}).get("L", []) if "S" in w]


def state_record(state: SiteState, token: str, previous_writers: list[str]) -> dict[str, Any]:
    """The item that stores ``state`` as its next version, as plain JSON (for the intent)."""
    return {
        "url": state.url,
        "reported": state.reported.value,
        "since": state.since,
        "streak_status": state.streak_status.value,
        "streak": state.streak,
        "reason": state.reason[:1000],
        "version": state.version + 1,
        "writers": [token, *previous_writers][:KEEP_WRITERS],
        **({"recent": state.recent} if state.recent else {}),
    }


def not_checked(item: Mapping[str, Any] | None) -> set[str]:
    """The keys (decide.site_key) of the sites the last run left unchecked."""
    return {k["S"] for k in (item or {}).get("sites", {}).get("L", []) if "S" in k}


def order_record(
    keys: list[str], old_version: int, token: str, previous_writers: list[str]
) -> dict[str, Any]:
    """The item that remembers which sites this run did not check (their keys: 13 bytes each,
    2,000 of them 26 KB), so the next run checks them first."""
    return {
        "url": ORDER_ITEM,
        "sites": sorted(keys),
        "version": old_version + 1,
        "writers": [token, *previous_writers][:KEEP_WRITERS],
    }


def config_error_record(
    digest: str, old_version: int, token: str, previous_writers: list[str]
) -> dict[str, Any]:
    """The item that remembers the malformed site list with this ``digest`` was mailed."""
    return {
        "url": CONFIG_ITEM,
        "digest": digest,
        "version": old_version + 1,
        "writers": [token, *previous_writers][:KEEP_WRITERS],
    }


def write(table: str, record: Mapping[str, Any], token: str) -> Outcome:
    """Store ``record`` (one of the records above) if the item is still at the version before
    it (1 call: PutItem, conditional). ``written``; ``already`` when this token's write is
    there already (a resumed run repeating itself); ``conflict`` when another run changed the
    item first."""
    item: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, list):
            item[key] = {"L": [{"S": str(v)} for v in value]}
        elif isinstance(value, int) and not isinstance(value, bool):
            item[key] = {"N": str(value)}
        else:
            item[key] = {"S": str(value)}
    try:
        aws.client("dynamodb").put_item(
            TableName=table,
            Item=item,
            ConditionExpression="attribute_not_exists(#v) OR #v = :v",
            ExpressionAttributeNames={"#v": "version"},
            ExpressionAttributeValues={":v": {"N": str(int(record["version"]) - 1)}},
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    except ClientError as err:
        if aws.error_code(err) != "ConditionalCheckFailedException":
            raise
        current: Mapping[str, Any] | None = err.response.get("Item")  # type: ignore[assignment]
        return "already" if token in writers(current) else "conflict"
    return "written"


def forget(table: str, url: str, seen_version: int) -> bool:
    """Delete the item if it is still the version the run read (1 call: DeleteItem,
    conditional); False if it was changed or deleted meanwhile."""
    try:
        aws.client("dynamodb").delete_item(
            TableName=table,
            Key={"url": {"S": url}},
            ConditionExpression="#v = :v",
            ExpressionAttributeNames={"#v": "version"},
            ExpressionAttributeValues={":v": {"N": str(seen_version)}},
        )
    except ClientError as err:
        if aws.error_code(err) == "ConditionalCheckFailedException":
            return False
        raise
    return True


# -- heartbeats: the ping items (written by the heartbeat function and by the check) -----------


def ping_key(heartbeat_id: str) -> str:
    return PING + heartbeat_id


def token_hash(token: str) -> str:
    """What is stored of a heartbeat's token: its SHA-256 (the token itself only in SSM)."""
    return hashlib.sha256(token.encode()).hexdigest()


def ping_times(item: Mapping[str, Any] | None) -> tuple[datetime | None, datetime | None]:
    """(when its URL was made, its last ping) from a ping item; (None, None) without one."""
    if not item or "token_hash" not in item:
        return None, None
    made = datetime.fromisoformat(item["created_at"]["S"])
    last = item.get("last_ping", {}).get("S")
    return made, datetime.fromisoformat(last) if last else None


def provision_ping(table: str, heartbeat_id: str, token: str, now: datetime) -> bool:
    """The heartbeat's ping item, once (1 PutItem, conditional): False when it exists already."""
    try:
        aws.client("dynamodb").put_item(
            TableName=table,
            Item={
                "url": {"S": ping_key(heartbeat_id)},
                "token_hash": {"S": token_hash(token)},
                "created_at": {"S": now.isoformat()},
            },
            ConditionExpression="attribute_not_exists(#u)",
            ExpressionAttributeNames={"#u": "url"},
        )
    except ClientError as err:
        if aws.error_code(err) == "ConditionalCheckFailedException":
            return False
        raise
    return True


# -- several regions: the home's results table (decide/quorum.py) ------------------------------
# Items keyed by "pk": SITES (the site list the home checks, published for the members) and
# RESULT + <region> (a member's last checks). Large values are zlib-compressed JSON (Binary):
# 2,000 sites fit one item either way (tests/website_health_check/test_..._regions.py measures).

SITES = "#sites"
RESULT = "result#"


def _pack(value: Any) -> bytes:
    return zlib.compress(json.dumps(value, separators=(",", ":"), sort_keys=True).encode(), 9)


def _unpack(item: Mapping[str, Any], name: str) -> Any:
    return json.loads(zlib.decompress(bytes(item[name]["B"])))


def lists_digest(lists: list[tuple[str, str]]) -> str:
    return hashlib.sha256(json.dumps(lists).encode()).hexdigest()


def load_regional(table: str, members: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """The published site list's item and every member's result item, by pk (1 BatchGetItem:
    up to 100 keys, the unprocessed ones asked again)."""
    keys: list[dict[str, Any]] = [{"pk": {"S": SITES}}] + [{"pk": {"S": RESULT + m}} for m in members]
    dynamodb, found = aws.client("dynamodb"), {}
    request: dict[str, Any] = {table: {"Keys": keys, "ConsistentRead": True}}
    while request:
        answer = dynamodb.batch_get_item(RequestItems=request)
        for item in answer.get("Responses", {}).get(table, []):
            found[item["pk"]["S"]] = item
        request = answer.get("UnprocessedKeys") or {}
    return found


def published(item: Mapping[str, Any] | None) -> tuple[str, int]:
    """(digest, version) of the published site list's item; ("", 0) without one."""
    if not item:
        return "", 0
    return item.get("digest", {}).get("S", ""), version(item)


def publish_record(lists: list[tuple[str, str]], old_version: int, now: datetime) -> dict[str, Any]:
    """The published list's next item, as JSON for the intent (the lists base64 in it)."""
    return {
        "digest": lists_digest(lists),
        "lists": base64.b64encode(_pack(lists)).decode(),
        "version": old_version + 1,
        "published_at": now.isoformat(),
    }


def publish_sites(table: str, record: Mapping[str, Any]) -> bool:
    """Store the published site list if it is still the version the plan read (1 PutItem,
    conditional); False when a newer one is there (another run published it)."""
    try:
        aws.client("dynamodb").put_item(
            TableName=table,
            Item={
                "pk": {"S": SITES},
                "digest": {"S": str(record["digest"])},
                "lists": {"B": base64.b64decode(str(record["lists"]))},
                "version": {"N": str(int(record["version"]))},
                "published_at": {"S": str(record["published_at"])},
            },
            ConditionExpression="attribute_not_exists(#v) OR #v < :v",
            ExpressionAttributeNames={"#v": "version"},
            ExpressionAttributeValues={":v": {"N": str(int(record["version"]))}},
        )
    except ClientError as err:
        if aws.error_code(err) == "ConditionalCheckFailedException":
            return False
        raise
    return True


def read_published(table: str, home: str) -> tuple[str, list[tuple[str, str]]] | None:
    """A member's read of the home's published site list: (digest, lists), or None when the
    home has published none yet (1 GetItem, in the home region)."""
    item = (
        aws.client("dynamodb", region=home)
        .get_item(TableName=table, Key={"pk": {"S": SITES}}, ConsistentRead=True)
        .get("Item")
    )
    if not item:
        return None
    try:
        return item["digest"]["S"], [(str(name), str(text)) for name, text in _unpack(item, "lists")]
    except (KeyError, TypeError, ValueError, zlib.error) as err:
        raise ValueError(f"the home's published site list ({table}, {home}) cannot be read: {err}") from None


def put_result(table: str, home: str, record: Mapping[str, Any]) -> bool:
    """A member's checks into the home's table (1 PutItem, in the home region), unless a newer
    check of the same region is there already (a resumed run repeating an old one): False."""
    try:
        aws.client("dynamodb", region=home).put_item(
            TableName=table,
            Item={
                "pk": {"S": RESULT + str(record["region"])},
                "region": {"S": str(record["region"])},
                "checked_at": {"S": str(record["checked_at"])},
                "digest": {"S": str(record["digest"])},
                "results": {"B": base64.b64decode(str(record["results"]))},
            },
            ConditionExpression="attribute_not_exists(checked_at) OR checked_at < :at",
            ExpressionAttributeValues={":at": {"S": str(record["checked_at"])}},
        )
    except ClientError as err:
        if aws.error_code(err) == "ConditionalCheckFailedException":
            return False
        raise
    return True


def result_record(region: str, checked_at: datetime, digest: str, results: Any) -> dict[str, Any]:
    """A member's result item, as JSON for the intent (the results base64 in it)."""
    return {
        "region": region,
        "checked_at": checked_at.astimezone(UTC).isoformat(
            timespec="microseconds"
        ),  # fixed width: compared as text
        "digest": digest,
        "results": base64.b64encode(_pack(results)).decode(),
    }


def region_results(item: Mapping[str, Any] | None) -> tuple[str, Any] | None:
    """(checked_at, results) of a member's result item; None when absent or unreadable."""
    if not item:
        return None
    try:
        return item["checked_at"]["S"], _unpack(item, "results")
    except (KeyError, ValueError, TypeError, zlib.error):
        return None
