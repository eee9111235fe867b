"""Site states in the stack's small DynamoDB table (one item per site URL).

Written only when something changes, with optimistic locking on ``version``: when two runs
overlap, the second write of the same change fails its condition and that run stays silent,
so a transition is mailed once.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from autopilot import aws
from website_health_check.transitions import SiteState, Status

CONFIG_ITEM = "#site-list"  # remembers the last malformed site list we mailed about


def load(table: str) -> dict[str, dict[str, Any]]:
    """Every item of the table by url (a handful of items: one Scan page in practice)."""
    items = aws.paginate(aws.client("dynamodb"), "scan", "Items", TableName=table, ConsistentRead=True)
    return {item["url"]["S"]: item for item in items}


def to_state(item: dict[str, Any] | None, url: str) -> SiteState:
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
    )


def save(table: str, state: SiteState) -> bool:
    """Write ``state`` as version+1 if nobody changed the item since we read it."""
    item = {
        "url": {"S": state.url},
        "reported": {"S": state.reported.value},
        "since": {"S": state.since},
        "streak_status": {"S": state.streak_status.value},
        "streak": {"N": str(state.streak)},
        "reason": {"S": state.reason[:1000]},
        "version": {"N": str(state.version + 1)},
    }
    return _conditional_put(table, item, state.version)


def save_config_error(table: str, digest: str, version: int) -> bool:
    item = {"url": {"S": CONFIG_ITEM}, "digest": {"S": digest}, "version": {"N": str(version + 1)}}
    return _conditional_put(table, item, version)


def delete(table: str, url: str) -> None:
    aws.client("dynamodb").delete_item(TableName=table, Key={"url": {"S": url}})


def _conditional_put(table: str, item: dict[str, Any], version: int) -> bool:
    try:
        aws.client("dynamodb").put_item(
            TableName=table,
            Item=item,
            ConditionExpression="attribute_not_exists(#v) OR #v = :v",
            ExpressionAttributeNames={"#v": "version"},
            ExpressionAttributeValues={":v": {"N": str(version)}},
        )
    except ClientError as err:
        if aws.error_code(err) == "ConditionalCheckFailedException":
            return False
        raise
    return True
