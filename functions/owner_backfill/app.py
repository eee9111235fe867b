"""owner_backfill: the handler.

The shared runner sequences the rooms (docs/adding-an-automation.md).
Trigger: its schedule (``OwnerBackfillSchedule``), enabled only with ``OwnerBackfill=true``.

Gives the resources that exist without an owner tag - instances, volumes, snapshots, AMIs -
the owner CloudTrail's history names (who created them, within its 90 days), under
owner_tagger's rules, and mails one summary per pass (docs/owner_backfill.md).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.typing import LambdaContext

from autopilot import runner
from autopilot.runner import Automation
from owner_backfill import event, report, run
from owner_backfill.config import Config

# Every IAM action the function calls, the runner's included: the template grants exactly these
# (tests/template) and the tests see exactly these called (tests/reliability/test_iam_observed.py).
PERMISSIONS = runner.PERMISSIONS | frozenset(
    {
        "ec2:DescribeInstances",
        "ec2:DescribeVolumes",
        "ec2:DescribeSnapshots",
        "ec2:DescribeImages",
        "ec2:DescribeTags",  # a resumed run, and a write IAM refused: who carries the key
        "ec2:CreateTags",
        "cloudtrail:LookupEvents",
        "autoscaling:DescribeAutoScalingGroups",  # an Auto Scaling launch: the group's owner tag
    }
)
AUTOMATION = Automation(
    name="owner_backfill",
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
