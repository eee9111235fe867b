"""snapshot_rotator: snapshot opted-in EBS volumes on schedule, delete its own expired snapshots."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics

from autopilot import routing, runner
from autopilot.runner import Automation
from snapshot_rotator import event, report, run, service
from snapshot_rotator.config import Config

# Exactly the IAM actions this function calls (the template test checks the policy grants these).
PERMISSIONS = (
    runner.PERMISSIONS
    | routing.PERMISSIONS
    | frozenset(
        {
            "ec2:DescribeImages",
            "ec2:DescribeSnapshots",
            "ec2:DescribeInstances",
            "ec2:DescribeVolumes",
            "ec2:CreateSnapshot",
            "ec2:CreateSnapshots",
            "ec2:CreateTags",  # only as part of CreateSnapshot(s) TagSpecifications (ec2:CreateAction)
            "ec2:DeleteSnapshot",
            "ssm:GetCalendarState",  # the change calendar, when one is configured (autopilot.freeze)
            "dynamodb:Query",  # the ledger (store.py)
            "dynamodb:BatchWriteItem",
            "dynamodb:DescribeTable",  # the ledger's creation time, on its first run only
            "states:StartExecution",  # the next rounds of a run too large for one invocation
            "ec2:CopySnapshot",  # disaster-recovery copies (SnapshotRotatorCopyRegions), tagged as made
        }
        | service.KMS_FOR_ENCRYPTED_COPY  # a copy encrypted with copy_key
    )
)
AUTOMATION = Automation(
    name="snapshot_rotator",
    parse=event.parse,
    config=Config.from_env,
    plan=run.plan,
    act=run.act,
    report=report.mail,
    counts=report.counts,
    # Its alarm keeps its state without data (the rotation runs daily): it needs the zero to clear.
    metrics=frozenset({"StaleBackups"}),
    always_sent=frozenset({"StaleBackups"}),
    rest=run.rest,
)
logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return runner.handle(AUTOMATION, event, context, logger, metrics)
