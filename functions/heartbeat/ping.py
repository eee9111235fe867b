"""The heartbeat function: a job's ping, through the function's URL (Lambda function URL, no
IAM auth: a cron job's ``curl -fsS <url>`` is all it takes).

``GET`` or ``POST`` ``/<heartbeat id>/<token>``. The token is compared, in constant time, by its
SHA-256 with the one stored in the heartbeat's ping item (the token itself is only in the
heartbeat's SSM SecureString); the right one records the ping's time - the clock's, never the
request's - and nothing else (1 GetItem + 1 UpdateItem). Anything else - another method, a
malformed path, an unknown heartbeat, a wrong token - changes nothing, answers 404 (nothing
tells a guesser which part was wrong) and is counted (``WrongHeartbeatTokens``, alarmed when it
looks like guessing). The path is never logged: it holds the token. The health check's
scheduled run judges the heartbeats from the ping items (decide.classify_heartbeat).

Not an automation (it decides and mails nothing; functions/heartbeat has no app.py): no runner,
no outbox - a ping is one idempotent write, and a repeated one is a ping again. Its role may
only read and update the ping items (``ping#<id>``) of the health check's table.
"""

from __future__ import annotations

import hmac
import re
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import ClientError

from autopilot import aws
from autopilot.config import env_str
from website_health_check.decide import HEARTBEAT_ID
from website_health_check.store import ping_key, token_hash

PERMISSIONS = frozenset({"dynamodb:GetItem", "dynamodb:UpdateItem"})
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{32,128}$")
METHODS = frozenset({"GET", "POST"})
WRONG = "WrongHeartbeatTokens"

logger = Logger()
# Its own namespace: the OpsAutopilot one holds the automations' run metrics (runner).
NAMESPACE = "OpsAutopilot/Heartbeat"
metrics = Metrics(namespace=NAMESPACE, service="heartbeat")


def clock() -> datetime:
    return datetime.now(UTC)


def _answer(status: int, text: str) -> dict[str, Any]:
    return {"statusCode": status, "headers": {"content-type": "text/plain"}, "body": text + "\n"}


def ping(event: Any, table: str) -> tuple[int, str]:
    """(HTTP status, the heartbeat id or "") for one request; records the ping when it is right."""
    http = (event.get("requestContext") or {}).get("http") or {} if isinstance(event, dict) else {}
    method = str(http.get("method", "")).upper()
    path = str(event.get("rawPath", "")) if isinstance(event, dict) else ""
    parts = path.strip("/").split("/")
    if method not in METHODS or len(parts) != 2:
        return 404, ""
    ident, token = parts
    if not HEARTBEAT_ID.match(ident) or not _TOKEN.match(token):
        return 404, ""
    item = get_ping(table, ident)
    stored = str((item or {}).get("token_hash", {}).get("S", ""))
    hashed = token_hash(token)
    if not stored or not hmac.compare_digest(stored, hashed):
        return 404, ident
    if not record_ping(table, ident, hashed, clock()):
        return 404, ident
    return 200, ident


def get_ping(table: str, heartbeat_id: str) -> dict[str, Any] | None:
    """The heartbeat's ping item (1 GetItem, consistent), or None."""
    item: dict[str, Any] | None = (
        aws.client("dynamodb")
        .get_item(TableName=table, Key={"url": {"S": ping_key(heartbeat_id)}}, ConsistentRead=True)
        .get("Item")
    )
    return item


def record_ping(table: str, heartbeat_id: str, hashed: str, now: datetime) -> bool:
    """A ping with the right token (1 UpdateItem, conditional on the stored hash): its time, the
    clock's. False when the heartbeat has no such token (changed meanwhile)."""
    try:
        aws.client("dynamodb").update_item(
            TableName=table,
            Key={"url": {"S": ping_key(heartbeat_id)}},
            UpdateExpression="SET last_ping = :now ADD pings :one",
            ConditionExpression="token_hash = :h",
            ExpressionAttributeValues={
                ":now": {"S": now.isoformat()},
                ":one": {"N": "1"},
                ":h": {"S": hashed},
            },
        )
    except ClientError as err:
        if aws.error_code(err) == "ConditionalCheckFailedException":
            return False
        raise
    return True


@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    status, ident = ping(event, env_str("STATE_TABLE"))
    if status == 200:
        logger.info("heartbeat ping", extra={"heartbeat": ident})
        return _answer(200, "ok")
    metrics.add_metric(name=WRONG, unit=MetricUnit.Count, value=1)
    logger.warning("heartbeat request refused", extra={"heartbeat": ident or None})  # never the path
    return _answer(404, "not found")
