"""owner_tagger handler: an EC2 creation call from CloudTrail -> owner tag on what it created.

Triggered by the EventBridge rule in template.yaml (section ``owner_tagger``). Parses the event
by lookup table (owner_tagger.trail), resolves the owner (owner_tagger.identity), decides per
resource (owner_tagger.plan) and tags in as few calls as the API allows (owner_tagger.ec2).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from autopilot.events import BadEvent, accept, reject
from autopilot.runtime import Deadline
from owner_tagger.config import OwnerTaggerConfig
from owner_tagger.service import Outcome, digest, execute
from owner_tagger.trail import parse_creation_event

# Every IAM action this function calls; the template grants exactly these (tested).
PERMISSIONS = frozenset({"ec2:DescribeInstances", "ec2:DescribeTags", "ec2:CreateTags", "sns:Publish"})

logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    config = OwnerTaggerConfig.from_env()
    try:
        creation = accept(event, context, parse_creation_event)
    except BadEvent as err:
        return reject(err, event, logger, metrics)
    outcome = execute(config, creation, Deadline.from_context(context))
    _record(outcome)
    mail = digest(config, outcome)
    if mail is not None:
        message, subject, text = mail
        message.send(config.common.topic_arn, subject, text, "warning")
    result = outcome.summary()
    logger.info("done", extra=result)
    return result


def _record(outcome: Outcome) -> None:
    plan = outcome.plan
    count = {
        "Checked": len(plan.decisions),
        "Changed": len(outcome.tagged),
        "ResourcesTagged": len(outcome.tagged),
        "Skipped": len(plan.of("keep")) + len(outcome.gone) + (1 if outcome.skipped_reason else 0),
        "OwnersUnresolved": len(plan.of("unresolved")),
        "Failed": len(outcome.failures) + len(outcome.volumes_missing),
    }
    for name, value in count.items():
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
