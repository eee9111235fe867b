"""Lambda handler of patch_sweeper: one function, two triggers, run by the shared runner.

- weekly schedule -> a sweep: target, send AWS-RunPatchBaseline in batches of 50;
- SSM "EC2 Command Status-change Notification" (AWS-RunPatchBaseline, final status) -> count
  the command; when the sweep's last command is final, one digest mail (through the outbox).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics

from autopilot import routing, runner
from autopilot.runner import Automation
from patch_sweeper import event, report, run
from patch_sweeper.config import Config

# Exactly the IAM actions this function calls (the template grants exactly these).
PERMISSIONS = (
    runner.PERMISSIONS
    | routing.PERMISSIONS
    | frozenset(
        {
            "ec2:DescribeInstances",
            "ssm:DescribeInstanceInformation",
            "ssm:SendCommand",
            "ssm:GetCalendarState",  # the change calendar, when one is configured (autopilot.freeze)
            "ssm:ListCommands",  # a resumed sweep finds the batches sent before the run died
            "ssm:ListCommandInvocations",
            "ssm:GetCommandInvocation",
            "ssm:DescribeInstancePatchStates",
            "dynamodb:GetItem",  # the sweep table (store.py): read a sweep
            "dynamodb:PutItem",  # create a sweep
            "dynamodb:UpdateItem",  # commands sent / final, all sent, the digest claim, the rings
            "dynamodb:BatchWriteItem",  # a new sweep's commands' instance ids
            "dynamodb:BatchGetItem",  # a ring's instance ids
        }
    )
)
AUTOMATION = Automation(
    name="patch_sweeper",
    parse=event.parse,
    config=Config.from_env,
    plan=run.plan,
    act=run.act,
    report=report.mail,
    counts=report.counts,
    metrics=frozenset({"NoResult"}),  # PatchSweeperNoResultAlarm: a ring closed by its timeout
    housekeeping=(event.SweepTick,),  # the hourly tick: no sample for the silence alarm
)
logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return runner.handle(AUTOMATION, event, context, logger, metrics)
