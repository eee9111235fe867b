"""Collect: one member run's summary (Lambda's on-success destination event, forwarded by the
member's RollupForward rule to the hub's bus) added to the day's item of its account, region
and automation.

Only the organisation's accounts can put events on the bus (its policy: aws:PrincipalOrgID).
The account is the event's ``account``, which EventBridge sets and a member cannot choose; a
summary whose function ARN names another account or region is refused. The day is the hub's
clock's (a stale or forged event time moves nothing). Each event id counts once: a redelivery
changes nothing.
"""

from __future__ import annotations

import json
import logging
import os
import re
from datetime import UTC, datetime
from typing import Any, Final

import boto3
from botocore.exceptions import ClientError

from rollup.report import COUNTS

DETAIL_TYPE: Final = "Lambda Function Invocation Result - Success"
ACCOUNT: Final = re.compile(r"^\d{12}$")
REGION: Final = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
NAME: Final = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
FUNCTION_ARN: Final = re.compile(
    r"^arn:aws[a-z-]*:lambda:([a-z0-9-]+):(\d{12}):function:[A-Za-z0-9_-]+(:.+)?$"
)
KEEP_DAYS: Final = 35
LOGGER: Final = logging.getLogger("rollup.collect")
LOGGER.setLevel(logging.INFO)


class Refused(ValueError):
    """Not a member run's summary, and why."""


def clock() -> datetime:
    return datetime.now(UTC)


def parse(event: Any) -> dict[str, Any]:
    """The summary of a run: account, region, automation, counts and the event id."""
    if (
        not isinstance(event, dict)
        or event.get("detail-type") != DETAIL_TYPE
        or event.get("source") != "lambda"
    ):
        raise Refused("not a Lambda on-success destination event")
    account, region, event_id = str(event.get("account", "")), str(event.get("region", "")), event.get("id")
    if (
        not ACCOUNT.match(account)
        or not REGION.match(region)
        or not isinstance(event_id, str)
        or not event_id
    ):
        raise Refused("no account, region or id")
    detail = event.get("detail")
    payload = detail.get("responsePayload") if isinstance(detail, dict) else None
    context = detail.get("requestContext") if isinstance(detail, dict) else None
    if not isinstance(payload, dict) or not isinstance(context, dict):
        raise Refused("no responsePayload or requestContext")
    arn = FUNCTION_ARN.match(str(context.get("functionArn", "")))
    if arn is None or arn.group(2) != account or arn.group(1) != region:
        raise Refused("the function ARN names another account or region than the event")
    automation = payload.get("automation")
    if payload.get("status") != "done" or not isinstance(automation, str) or not NAME.match(automation):
        raise Refused("not a finished run of an automation")
    counts: dict[str, int] = {}
    for name in COUNTS:
        value = payload.get(name.capitalize(), 0)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 10**9:
            raise Refused(f"count {name.capitalize()} is not a whole number")
        counts[name] = value
    return {"account": account, "region": region, "automation": automation, "id": event_id, **counts}


def add(table: str, summary: dict[str, Any], now: datetime, client: Any = None) -> bool:
    """Add the run to its day's item; False when this event id was counted already."""
    dynamodb = client or boto3.client("dynamodb")
    day = now.strftime("%Y-%m-%d")
    names = {f"#{c}": c for c in COUNTS}
    values: dict[str, Any] = {f":{c}": {"N": str(summary[c])} for c in COUNTS}
    values.update(
        {
            ":one": {"N": "1"},
            ":id": {"S": summary["id"]},
            ":ids": {"SS": [summary["id"]]},
            ":expires": {"N": str(int(now.timestamp()) + KEEP_DAYS * 86400)},
        }
    )
    adds = ", ".join(f"#{c} :{c}" for c in COUNTS)
    try:
        dynamodb.update_item(
            TableName=table,
            Key={
                "pk": {"S": f"day#{day}"},
                "sk": {"S": f"{summary['account']}#{summary['region']}#{summary['automation']}"},
            },
            UpdateExpression=f"ADD runs :one, {adds}, event_ids :ids SET expires = :expires",
            ConditionExpression="attribute_not_exists(event_ids) OR NOT contains(event_ids, :id)",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            return False
        raise
    return True


def handler(event: Any, context: Any) -> dict[str, Any]:
    try:
        summary = parse(event)
    except Refused as err:
        # Refused, not raised: a retry would refuse it again. The log line says why.
        event_id = str(event.get("id", ""))[:64] if isinstance(event, dict) else ""
        LOGGER.error(json.dumps({"message": "refused", "reason": str(err), "id": event_id}))
        return {"status": "refused", "reason": str(err)}
    counted = add(os.environ["TABLE"], summary, clock())
    return {"status": "counted" if counted else "duplicate"}
