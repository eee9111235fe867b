"""website_health_check: check every configured site; mail on DOWN, DEGRADED and RECOVERED.

Trigger: EventBridge schedule. Reads the site list from an SSM parameter on every run (edits
apply at the next run), checks all sites concurrently within the invocation's time budget,
keeps each site's state in a small DynamoDB table and mails only on a change of state.
A site being down is a finding, not an error: the function succeeds. A bug, or AWS failing,
raises and trips the function's Errors alarm; the next run finishes the recorded work.
The rooms: event, config, service, decide, store, run (plan/act), report; the runner
(autopilot.runner) sequences them.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.typing import LambdaContext

from autopilot import runner
from autopilot.runner import Automation
from website_health_check import event, report, run
from website_health_check.config import Config

PERMISSIONS = runner.PERMISSIONS | frozenset(
    {
        "ssm:GetParametersByPath",
        "dynamodb:Scan",
        "dynamodb:PutItem",
        "dynamodb:DeleteItem",
        "ssm:GetParameter",  # a heartbeat's URL, read back to hash its token
        "ssm:PutParameter",  # ... made once (service.heartbeat_token)
        "dynamodb:BatchGetItem",  # several regions, the home: the members' results
        "dynamodb:GetItem",  # ... a member: the home's published site list
    }
)
AUTOMATION = Automation(
    name="website_health_check",
    parse=event.parse,
    config=Config.from_env,
    plan=run.plan,
    act=run.act,
    report=report.mail,
    counts=report.counts,
    # Each read by an alarm, each sent while not zero (a state: its alarm reads an hour of no
    # data as all clear; RegionsSilent only at the home of several regions). CertificateDaysLeftMin
    # is in the run's log line.
    metrics=frozenset({"SitesDown", "SitesNotChecked", "CertificatesExpiring", "RegionsSilent"}),
)
logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return runner.handle(AUTOMATION, event, context, logger, metrics)
