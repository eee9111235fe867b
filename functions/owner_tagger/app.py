"""owner_tagger handler: an EC2 creation call from CloudTrail -> owner tag on what it created.

Triggered by the EventBridge rule in template.yaml (section ``owner_tagger``). The shared runner
(autopilot.runner) claims the event, records the intent before acting, acts, mails and emits
the metrics; the rooms: ``event`` (parsing by lookup table), ``decide`` (owner resolution and
per-resource decision, pure), ``service`` (the EC2 calls), ``run`` (plan and act), ``report``
(mail and numbers).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics

from autopilot import runner
from autopilot.runner import Automation
from owner_tagger import event, report, run
from owner_tagger.config import Config

# Every IAM action this function calls, the runner's included; the template grants exactly these.
PERMISSIONS = runner.PERMISSIONS | frozenset(
    {
        "ec2:DescribeInstances",
        "ec2:DescribeVolumes",
        "ec2:DescribeSnapshots",
        "ec2:DescribeImages",
        "ec2:DescribeTags",
        "ec2:CreateTags",
        "autoscaling:DescribeAutoScalingGroups",  # an Auto Scaling launch: the group's owner tag
    }
)
AUTOMATION = Automation(
    name="owner_tagger",
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
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return runner.handle(AUTOMATION, event, context, logger, metrics)
