"""idle_stopper handler: on schedule, stop running instances that are idle or past StopAfter.

The runner (autopilot.runner) sequences the rooms: event.parse, Config.from_env, run.plan
(service gathers, decide decides, nothing changes), the intent recorded, run.act (stop, then
tag), report.mail and report.counts, the mail sent and only then marked sent.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics

from autopilot import routing, runner
from autopilot.runner import Automation
from idle_stopper import event, report, run
from idle_stopper.config import Config

# Every IAM action this function calls (the runner's included); the template grants exactly these.
PERMISSIONS = (
    runner.PERMISSIONS
    | routing.PERMISSIONS
    | frozenset(
        {
            "ec2:DescribeInstances",
            "ssm:GetCalendarState",  # the change calendar, when one is configured (autopilot.freeze)
            "ec2:DescribeInstanceAttribute",
            "cloudwatch:GetMetricData",
            "ec2:StopInstances",
            "ec2:CreateTags",
            "ec2:DeleteTags",  # the planned-stop tag of a warned instance, taken off again
            "pricing:GetProducts",  # on-demand prices of stopped types, once a month each (money saved)
            # IdleStopperDatabases=true only (the template grants them under IdleStopperDatabasesOn)
            "rds:DescribeDBInstances",
            "rds:DescribeDBClusters",
            "rds:StopDBInstance",
            "rds:StopDBCluster",
            "rds:AddTagsToResource",
        }
    )
)
AUTOMATION = Automation(
    name="idle_stopper",
    parse=event.parse,
    config=Config.from_env,
    plan=run.plan,
    act=run.act,
    report=report.mail,
    counts=report.counts,
    # The dollars this run's closed stops saved (the dashboard's "Money saved"); the rest of its
    # numbers are in the run's log line.
    metrics=frozenset({"SavedDollars"}),
)
logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    return runner.handle(AUTOMATION, event, context, logger, metrics)
