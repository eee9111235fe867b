"""Lambda handler of patch_sweeper: one function, two triggers, dispatched by event shape.

- weekly schedule -> start_sweep: target, send AWS-RunPatchBaseline in batches of 50;
- SSM "EC2 Command Status-change Notification" (AWS-RunPatchBaseline, final status) ->
  command_finished: when the sweep's last command is final, one digest mail.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from autopilot.events import BadEvent, ScheduledRun, accept, reject
from autopilot.runtime import Deadline
from patch_sweeper.config import PatchSweeperConfig
from patch_sweeper.service import Outcome, command_finished, start_sweep
from patch_sweeper.triggers import CommandFinished, parse_trigger

logger = Logger()
metrics = Metrics()

# Exactly the IAM actions this function calls (the template grants exactly these).
PERMISSIONS = frozenset(
    {
        "ec2:DescribeInstances",
        "ssm:DescribeInstanceInformation",
        "ssm:SendCommand",
        "ssm:ListCommandInvocations",
        "ssm:GetCommandInvocation",
        "ssm:DescribeInstancePatchStates",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "sns:Publish",
    }
)

METRIC_NAMES = ("Checked", "Changed", "Skipped", "Failed", "Unmanaged", "PendingReboot")


def _on_schedule(config: PatchSweeperConfig, trigger: Any, context: Any) -> Outcome:
    return start_sweep(config, trigger, Deadline.from_context(context))


def _on_command(config: PatchSweeperConfig, trigger: Any, _context: Any) -> Outcome:
    return command_finished(config, trigger)


HANDLERS: dict[type, Callable[[PatchSweeperConfig, Any, Any], Outcome]] = {
    ScheduledRun: _on_schedule,
    CommandFinished: _on_command,
}


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    config = PatchSweeperConfig.from_env()
    try:
        trigger = accept(event, context, parse_trigger)
    except BadEvent as err:
        return reject(err, event, logger, metrics)
    outcome = HANDLERS[type(trigger)](config, trigger, context)
    for name in METRIC_NAMES:
        if name in outcome.metrics:
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=outcome.metrics[name])
    return outcome.summary()
