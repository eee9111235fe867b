"""idle_stopper handler: on schedule, stop running instances that are idle or past StopAfter.

Decide (idle_stopper.decision, pure) then act (idle_stopper.service, thin AWS calls); the
mail and the numbers come from idle_stopper.report.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from autopilot.events import BadEvent, ScheduledRun, accept, parse_scheduled, reject
from autopilot.runtime import Deadline
from idle_stopper import service
from idle_stopper.config import IdleStopperConfig
from idle_stopper.decision import Outcome, assess, conclude, finish
from idle_stopper.report import RunOutcome, build_digest, stopped_tags, summary_line

# Every IAM action this function calls; the template grants exactly these.
PERMISSIONS = frozenset(
    {
        "ec2:DescribeInstances",
        "ec2:DescribeInstanceAttribute",
        "cloudwatch:GetMetricData",
        "ec2:StopInstances",
        "ec2:CreateTags",
        "sns:Publish",
    }
)

logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    config = IdleStopperConfig.from_env()
    try:
        run = accept(event, context, parse_scheduled)
    except BadEvent as err:
        return reject(err, event, logger, metrics)
    outcome = execute(config, run, Deadline.from_context(context))
    return {"status": "done", "dry_run": outcome.dry_run, **outcome.metrics()}


def execute(config: IdleStopperConfig, run: ScheduledRun, deadline: Deadline) -> RunOutcome:
    policy = config.policy
    now = run.time
    dry_run = config.common.dry_run

    # Decide: facts, then the pure decision; metrics only for instances that still need them.
    assessed = [assess(instance, policy, now) for instance in service.running_instances()]
    need = [a.instance.instance_id for a in assessed if a.outcome is Outcome.NEEDS_METRICS]
    series = service.fetch_metrics(need, policy, now, deadline) if need else {}
    concluded = [conclude(a, series.get(a.instance.instance_id, ()), policy, now) for a in assessed]
    failures: list[service.Failure] = []
    plan = finish(concluded, policy, lambda instance_id: service.is_stop_protected(instance_id, failures))
    outcome = RunOutcome(plan=plan, policy=policy, now=now, dry_run=dry_run, failures=failures)

    # Act: stop first, then tag only what really stopped (the tags never claim a stop that did
    # not happen). A stopped instance is no longer running, so the next run never picks it again.
    if dry_run:
        outcome.stopped = list(plan.stop)
    elif plan.stop:
        stopped_ids, stop_failures = service.stop_instances([a.instance.instance_id for a in plan.stop])
        failures += stop_failures
        done = set(stopped_ids)
        outcome.stopped = [a for a in plan.stop if a.instance.instance_id in done]
        tags = {
            a.instance.instance_id: stopped_tags(a, config.common.stack_name, now) for a in outcome.stopped
        }
        failures += service.tag_instances(tags)

    report(config, outcome)
    return outcome


def report(config: IdleStopperConfig, outcome: RunOutcome) -> None:
    stopped_ids = {a.instance.instance_id for a in outcome.stopped}
    for a in outcome.plan.all:
        if a.stops or a.outcome in (Outcome.STOP_PROTECTED, Outcome.OVER_CAP) or a.stop_after_error:
            logger.info(
                "decision",
                extra={
                    "instance_id": a.instance.instance_id,
                    "outcome": a.outcome.value,
                    "reason": a.reason,
                    "stopped": a.instance.instance_id in stopped_ids and not outcome.dry_run,
                    "stop_after_error": a.stop_after_error,
                },
            )
    for failure in outcome.failures:
        logger.error(
            "instance not handled",
            extra={
                "instance_id": failure.instance_id,
                "action": failure.action,
                "code": failure.code,
                "error": failure.message,
            },
        )
    numbers = outcome.metrics()
    for name, value in numbers.items():
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    logger.info("run finished", extra={"dry_run": outcome.dry_run, **numbers})
    if outcome.should_mail():
        digest, subject, severity = build_digest(
            outcome, config.common.stack_name, config.common.region, config.owner_tag_key
        )
        digest.send(config.common.topic_arn, subject, summary_line(outcome), severity)
