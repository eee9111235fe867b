"""snapshot_rotator: snapshot opted-in EBS volumes on schedule, delete its own expired snapshots."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger, Metrics

from autopilot.events import BadEvent, accept, parse_scheduled, reject
from autopilot.runtime import Deadline
from snapshot_rotator.config import RotatorConfig
from snapshot_rotator.report import add_metrics, send
from snapshot_rotator.rotate import execute

logger = Logger()
metrics = Metrics()

# Exactly the IAM actions this function calls (the template test checks the policy grants these).
PERMISSIONS = frozenset(
    {
        "ec2:DescribeImages",
        "ec2:DescribeSnapshots",
        "ec2:DescribeInstances",
        "ec2:DescribeVolumes",
        "ec2:CreateSnapshot",
        "ec2:CreateSnapshots",
        "ec2:CreateTags",  # only as part of CreateSnapshot(s) TagSpecifications (ec2:CreateAction)
        "ec2:DeleteSnapshot",
        "sns:Publish",
    }
)


def clock() -> datetime:
    return datetime.now(UTC)


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, object]:
    config = RotatorConfig.from_env()
    try:
        run = accept(event, context, parse_scheduled)
    except BadEvent as err:
        return reject(err, event, logger, metrics)
    logger.info("scheduled run", extra={"run_id": run.id, "scheduled": run.time.isoformat()})
    report = execute(config, clock(), Deadline.from_context(context))
    add_metrics(metrics, report)
    message_id = send(config, report)
    summary = report.summary()
    logger.info("run finished", extra={**summary, "mail": message_id})
    return {**summary, "mail": message_id}
