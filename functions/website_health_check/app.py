"""website_health_check: check every configured site; mail on DOWN, DEGRADED and RECOVERED.

Trigger: EventBridge schedule. Reads the site list from an SSM parameter on every run (edits
apply at the next run), checks all sites concurrently within the invocation's time budget,
keeps each site's state in a small DynamoDB table and mails only on a change of state.
A site being down is a finding, not an error: the function succeeds. A bug, or AWS failing,
raises and trips the function's Errors alarm.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.typing import LambdaContext

from autopilot import aws, console
from autopilot.config import CommonConfig, env_int, env_str
from autopilot.events import BadEvent, accept, parse_scheduled, reject
from autopilot.notify import Digest, Item, plural
from autopilot.runtime import Deadline
from website_health_check import store
from website_health_check.probe import CheckResult, check_site
from website_health_check.sites import Site, SiteConfigError, parse_sites
from website_health_check.transitions import SiteState, Status, Transition, advance

AUTOMATION = "website_health_check"
PERMISSIONS = frozenset(
    {"ssm:GetParameter", "dynamodb:Scan", "dynamodb:PutItem", "dynamodb:DeleteItem", "sns:Publish"}
)
MAX_WORKERS = 64  # checks wait on the network; 64 threads fit in 256 MB

logger = Logger()
metrics = Metrics()


@dataclass(frozen=True)
class Config:
    common: CommonConfig
    sites_parameter: str
    state_table: str
    failures_before_down: int
    cert_warning_days: int

    @classmethod
    def from_env(cls) -> Config:
        return cls(
            common=CommonConfig.from_env(),
            sites_parameter=env_str("SITES_PARAMETER"),
            state_table=env_str("STATE_TABLE"),
            failures_before_down=env_int("FAILURES_BEFORE_DOWN", default=2, minimum=1, maximum=10),
            cert_warning_days=env_int("CERT_WARNING_DAYS", default=14, minimum=1, maximum=365),
        )


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    config = Config.from_env()
    try:
        run = accept(event, context, parse_scheduled)
    except BadEvent as err:
        return reject(err, event, logger, metrics)
    logger.info("health check run", extra={"run_id": run.id, "scheduled": run.time.isoformat()})
    return execute(config, Deadline.from_context(context, reserve=10.0))


def execute(config: Config, deadline: Deadline, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    text = aws.client("ssm").get_parameter(Name=config.sites_parameter)["Parameter"]["Value"]
    items = store.load(config.state_table)
    try:
        sites = parse_sites(text)
    except SiteConfigError as err:
        return _report_bad_site_list(config, err, text, items)
    if store.CONFIG_ITEM in items:  # the list was fixed: forget the old complaint
        store.delete(config.state_table, store.CONFIG_ITEM)

    results = check_all(sites, deadline, config.cert_warning_days)
    transitions: list[tuple[Transition, SiteState, SiteState]] = []
    for result in results:
        before = store.to_state(items.get(result.url), result.url)
        after, transition = advance(before, result.status, result.reason, config.failures_before_down, now)
        if after != before and not store.save(config.state_table, after):
            logger.info(
                "state changed by a concurrent run; leaving this site to it", extra={"url": result.url}
            )
            continue
        if transition:
            transitions.append((transition, before, after))
        logger.info(
            "site checked",
            extra={
                "url": result.url,
                "status": result.status.value,
                "reason": result.reason,
                "category": result.category,
                "latency_ms": result.latency_ms,
                "cert_days_left": result.cert_days_left,
                "transition": transition and transition.kind,
            },
        )
    _emit_metrics(results, len(sites), len(transitions))
    if transitions:
        names = {s.url: s.name for s in sites}
        _mail(
            config,
            [t for t, _, _ in transitions],
            {r.url: r for r in results},
            names,
            now,
            rollback=transitions,
        )
    unchecked = len(sites) - len(results)
    return {
        "status": "ok",
        "sites": len(sites),
        "checked": len(results),
        "unchecked": unchecked,
        "down": sum(r.status is Status.DOWN for r in results),
        "degraded": sum(r.status is Status.DEGRADED for r in results),
        "transitions": [f"{t.kind} {t.url}" for t, _, _ in transitions],
    }


def check_all(sites: list[Site], deadline: Deadline, cert_warning_days: int) -> list[CheckResult]:
    """Check every site concurrently; sites not finished within the time budget are left out
    (their state is untouched) and logged."""
    if not sites:
        return []
    pool = ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(sites)))
    futures = {pool.submit(check_site, s, deadline.remaining(), cert_warning_days): s for s in sites}
    done, pending = wait(futures, timeout=deadline.remaining())
    pool.shutdown(wait=False, cancel_futures=True)
    if pending:
        logger.warning(
            "time budget spent; sites not checked this run", extra={"urls": [futures[f].url for f in pending]}
        )
    order = {s.url: i for i, s in enumerate(sites)}
    return sorted((f.result() for f in done), key=lambda r: order[r.url])


def _emit_metrics(results: list[CheckResult], configured: int, changed: int) -> None:
    for r in results:
        for name, unit, value in (
            ("Availability", MetricUnit.Count, 1.0 if r.available else 0.0),
            ("Latency", MetricUnit.Milliseconds, r.latency_ms),
            ("CertificateDaysLeft", MetricUnit.Count, r.cert_days_left),
        ):
            if value is None:
                continue
            with single_metric(name=name, unit=unit, value=value) as metric:
                metric.add_dimension(name="service", value=AUTOMATION)
                metric.add_dimension(name="site", value=r.url[:250])
    metrics.add_metric(name="Checked", unit=MetricUnit.Count, value=len(results))
    metrics.add_metric(name="Skipped", unit=MetricUnit.Count, value=configured - len(results))
    metrics.add_metric(name="Changed", unit=MetricUnit.Count, value=changed)
    metrics.add_metric(name="Failed", unit=MetricUnit.Count, value=0)
    metrics.add_metric(
        name="FailingSites", unit=MetricUnit.Count, value=sum(r.status is Status.DOWN for r in results)
    )
    cert_days = [r.cert_days_left for r in results if r.cert_days_left is not None]
    if cert_days:
        metrics.add_metric(name="CertificateDaysLeftMin", unit=MetricUnit.Count, value=min(cert_days))


def _mail(
    config: Config,
    transitions: list[Transition],
    results: dict[str, CheckResult],
    names: dict[str, str],
    now: datetime,
    rollback: list[tuple[Transition, SiteState, SiteState]],
) -> None:
    common = config.common
    digest = Digest(AUTOMATION, common.stack_name, common.region)
    for kind in ("DOWN", "DEGRADED", "RECOVERED"):
        chosen = [t for t in transitions if t.kind == kind]
        if chosen:
            items = [_item(t, results[t.url], names.get(t.url, t.url), config, now) for t in chosen]
            digest.section(f"{kind} ({len(chosen)})", items)
    problems = any(t.kind != "RECOVERED" for t in transitions)
    digest.advice = [
        "Open the site and check the reason above." if problems else "Nothing to do: the site answers again.",
        "You get another mail only when a site's state changes again.",
        f"Change the list of sites: edit the SSM parameter {config.sites_parameter} (read every run).",
        f"Function log: {console.log_group(common.region, '/aws/lambda/' + _function_name())}",
    ]
    subject, severity = _subject(transitions)
    summary = ", ".join(
        plural(n, "site") + f" {kind}"
        for kind in ("DOWN", "DEGRADED", "RECOVERED")
        if (n := sum(t.kind == kind for t in transitions))
    )
    try:
        digest.send(common.topic_arn, subject, f"Website health check: {summary}.", severity)
    except Exception:
        # The mail could not be sent: undo the state change so the retry mails it, then fail.
        for _, before, after in rollback:
            store.save(config.state_table, replace(before, version=after.version + 1))
        raise


def _item(t: Transition, r: CheckResult, name: str, config: Config, now: datetime) -> Item:
    details = [t.reason if t.kind != "RECOVERED" else f"now: {r.reason}"]
    if t.kind == "DOWN":
        details.append(f"failed {config.failures_before_down} checks in a row")
    if t.kind == "RECOVERED" and t.down_since:
        since = datetime.fromisoformat(t.down_since)
        details.append(f"was {t.old.value} since {since:%Y-%m-%d %H:%M} UTC ({_duration(now - since)})")
    return Item(title=t.url if name == t.url else f"{name}: {t.url}", details=details)


def _subject(transitions: list[Transition]) -> tuple[str, Any]:
    severity = (
        "critical"
        if any(t.kind == "DOWN" for t in transitions)
        else ("warning" if any(t.kind == "DEGRADED" for t in transitions) else "info")
    )
    if len(transitions) == 1:
        t = transitions[0]
        return (f"{t.kind}: {t.url}" + (f" - {t.reason}" if t.kind != "RECOVERED" else "")), severity
    counts = [
        f"{sum(t.kind == k for t in transitions)} {k}"
        for k in ("DOWN", "DEGRADED", "RECOVERED")
        if any(t.kind == k for t in transitions)
    ]
    return f"{len(transitions)} sites changed state: " + ", ".join(counts), severity


def _report_bad_site_list(
    config: Config, err: SiteConfigError, text: str, items: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    logger.error(
        "site list is malformed; no site was checked",
        extra={"parameter": config.sites_parameter, "problems": err.problems},
    )
    metrics.add_metric(name="Failed", unit=MetricUnit.Count, value=1)
    fingerprint = hashlib.sha256(text.encode()).hexdigest()
    known = items.get(store.CONFIG_ITEM)
    already_mailed = known is not None and known.get("digest", {}).get("S") == fingerprint
    version = int(known["version"]["N"]) if known else 0
    if not already_mailed and store.save_config_error(config.state_table, fingerprint, version):
        common = config.common
        digest = Digest(AUTOMATION, common.stack_name, common.region)
        digest.section("Problems", text=[f"- {p}" for p in err.problems])
        digest.advice = [
            f"Fix the SSM parameter {config.sites_parameter}; the next run uses it. "
            "Formats: comma-separated URLs, or a JSON list (see the README)."
        ]
        digest.send(
            common.topic_arn,
            f"Site list is malformed: {len(err.problems)} problem(s), no site checked",
            "The website health check could not read its site list, so no site was checked.",
            "critical",
        )
    return {"status": "config_error", "problems": err.problems}


def _duration(delta: Any) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


def _function_name() -> str:
    return os.environ.get("AWS_LAMBDA_FUNCTION_NAME", AUTOMATION)
