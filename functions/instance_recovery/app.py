"""instance_recovery: the handler.

The shared runner sequences the rooms (docs/adding-an-automation.md).
Triggers: EC2's state-change notifications (the instance that changed) for running and
terminated; AWS Health's events of EC2 recovering an instance; and its schedule,
``InstanceRecoverySchedule`` (every instance: it converges what an event missed).

Keeps one CloudWatch alarm on ``StatusCheckFailed_System`` - EC2's recover action and the
stack's topic - on every opted-in instance EC2 can recover, deletes the alarms of instances
that are gone, opted out or no longer eligible, and mails the recoveries AWS Health reports.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.typing import LambdaContext

from autopilot import runner
from autopilot.runner import Automation
from instance_recovery import event, report, run
from instance_recovery.config import Config

# Every IAM action the function calls, the runner's included: the template grants exactly these
# (tests/template) and the tests see exactly these called (tests/reliability/test_iam_observed.py).
PERMISSIONS = runner.PERMISSIONS | frozenset(
    {
        "ec2:DescribeInstances",
        "ec2:DescribeInstanceTypes",
        "cloudwatch:DescribeAlarms",
        "cloudwatch:PutMetricAlarm",
        "cloudwatch:DeleteAlarms",
        # what CloudWatch does with this role's rights on the first alarm with an EC2 action
        "iam:CreateServiceLinkedRole",
    }
)
AUTOMATION = Automation(
    name="instance_recovery",
    parse=event.parse,
    config=Config.from_env,
    plan=run.plan,
    act=run.act,
    report=report.mail,
    counts=report.counts,
)
logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return runner.handle(AUTOMATION, event, context, logger, metrics)
