"""Rollup: every day (the hub's RollupSchedule), the previous UTC day's roll-up mailed to the
hub's topic, once.

The day is the clock's. A marker item (``mailed#<day>``) is written only after SNS accepted the
mail: a run that dies before that mails again on its retry (at least once, never lost); a run
after the marker mails nothing. Accounts "known" are those that reported in the KNOWN_DAYS
before the day: one that went quiet is named.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import boto3

from rollup import collect
from rollup.report import Summary, build

KNOWN_DAYS: Final = 7
SUBJECT_MAX: Final = 100  # SNS's limit on a subject


def _items(dynamodb: Any, table: str, day: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "pk = :pk",
        "ExpressionAttributeValues": {":pk": {"S": f"day#{day}"}},
    }
    while True:
        page = dynamodb.query(**kwargs)
        for item in page.get("Items", []):
            found.append({k: next(iter(v.values())) for k, v in item.items()})
        if "LastEvaluatedKey" not in page:
            return found
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def run(table: str, topic: str, expected: list[str], now: datetime, org_name: str) -> dict[str, Any]:
    dynamodb = boto3.client("dynamodb")
    day = (now - timedelta(days=1)).strftime("%Y-%m-%d")
    marker = {"pk": {"S": f"mailed#{day}"}, "sk": {"S": "rollup"}}
    if "Item" in dynamodb.get_item(TableName=table, Key=marker, ConsistentRead=True):
        return {"status": "mailed-already", "day": day}
    summaries = [Summary.from_item(i) for i in _items(dynamodb, table, day)]
    known: set[str] = set()
    for back in range(2, KNOWN_DAYS + 2):
        earlier = (now - timedelta(days=back)).strftime("%Y-%m-%d")
        known |= {str(i["sk"]).split("#", 1)[0] for i in _items(dynamodb, table, earlier)}
    rollup = build(day, summaries, expected, known, org_name)
    boto3.client("sns").publish(TopicArn=topic, Subject=rollup.subject[:SUBJECT_MAX], Message=rollup.body)
    expires = int(now.timestamp()) + collect.KEEP_DAYS * 86400
    dynamodb.put_item(TableName=table, Item={**marker, "expires": {"N": str(expires)}})
    return {
        "status": "mailed",
        "day": day,
        "failed": rollup.failed,
        "missing": rollup.missing,
        "silent": len(rollup.silent),
    }


def handler(event: Any, context: Any) -> dict[str, Any]:
    expected = [a.strip() for a in os.environ.get("EXPECTED_AUTOMATIONS", "").split(",") if a.strip()]
    now = collect.clock().astimezone(UTC)
    return run(
        os.environ["TABLE"],
        os.environ["TOPIC_ARN"],
        expected,
        now,
        os.environ.get("ORG_NAME", "the organisation"),
    )
