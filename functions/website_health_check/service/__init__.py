"""Every call the health check makes outside the function, except its state table (store.py).

- AWS: the site list, one ``ssm:GetParametersByPath`` per run (per 10 parameters, when the
  list is split over several);
- the network: one HTTP(S) GET per site, all sites on one event loop (:func:`probe_all`, the
  engine in service/engine.py), the certificate's expiry read from the same TLS connection. A probe
  tells apart DNS failure, connection refused, timeout, TLS error, redirect loop; what the
  answer *means* (UP, DEGRADED, DOWN) is ``decide.classify``'s job;
- CloudWatch (EMF lines on stdout, no API call): per-site metrics, only when asked for;
- a heartbeat's URL, made once: an SSM SecureString ``<prefix>/<id>`` (the only place its
  token is kept in the clear; never logged).
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from datetime import datetime

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from autopilot import aws
from autopilot.runtime import Deadline
from website_health_check.decide import CheckResult, Probe, Site
from website_health_check.service import engine

AUTOMATION = "website_health_check"
NOT_CHECKED = "time budget spent; sites not checked this run"
MAX_BODY_BYTES = engine.MAX_BODY_BYTES
MAX_CONCURRENCY = engine.MAX_CONCURRENCY

logger = Logger(child=True)


def site_lists(parameter: str) -> list[tuple[str, str]]:
    """(name, text) of the site list parameter, then of every parameter under it
    (``<parameter>/...``, any depth) in name order. Calls: 1 GetParametersByPath per 10
    parameters in the list's folder (``/<stack>/website-health-check``: 1 for up to 10)."""
    folder = parameter.rstrip("/").rsplit("/", 1)[0]
    found: dict[str, str] = {}
    ssm = aws.client("ssm")
    for p in aws.paginate(ssm, "get_parameters_by_path", "Parameters", Path=folder, Recursive=True):
        if p["Name"] == parameter or p["Name"].startswith(parameter + "/"):
            found[p["Name"]] = p["Value"]
    if parameter not in found:
        raise LookupError(f"the site list parameter {parameter} does not exist (or may not be read)")
    return [(parameter, found.pop(parameter)), *sorted(found.items())]


# -- the network -----------------------------------------------------------------------------


def probe(site: Site, budget_s: float, now: datetime) -> Probe:
    """One check of ``site`` within ``budget_s`` seconds (never more than the site's own
    timeout); always a probe, a timeout included. No AWS call."""
    timeout = max(engine.MIN_CHECK_SECONDS, min(site.timeout, budget_s))
    outcome = engine.check_all([_with_timeout(site, timeout)], timeout + 1, now)
    return outcome.checked[0][1]


def _with_timeout(site: Site, timeout: float) -> Site:
    return replace(site, timeout=timeout)


def probe_all(sites: list[Site], deadline: Deadline, now: datetime) -> list[tuple[Site, Probe]]:
    """Check every site (started in the list's order, at most engine.MAX_CONCURRENCY at once),
    within the time budget; a site not started in time, or cut short by the budget rather
    than its own timeout, is left out (its state is untouched) and logged."""
    if not sites:
        return []
    outcome = engine.check_all(sites, deadline.remaining(), now)
    if outcome.not_checked:
        logger.warning(NOT_CHECKED, extra={"urls": [s.url for s in outcome.not_checked]})
    return outcome.checked


# -- CloudWatch --------------------------------------------------------------------------------


def emit_site_metrics(results: list[CheckResult]) -> None:
    """Per site (dimensions service, site): Availability (1/0), Latency (ms) and
    CertificateDaysLeft, as EMF log lines (no API call). Opt-in (PER_SITE_METRICS): each is a
    custom metric, $0.30 a month at list price, 3 per site."""
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


def heartbeat_token(prefix: str, base_url: str, heartbeat_id: str) -> str:
    """The heartbeat's token: read from its SSM SecureString (GetParameter) if its URL was made
    already, else made now and stored as the URL there (PutParameter, never overwriting: a
    second run that made another token at the same time reads the first one's). The URL is
    ``<base_url><id>/<token>``; it is returned only to be hashed, never logged."""
    ssm = aws.client("ssm")
    name = f"{prefix.rstrip('/')}/{heartbeat_id}"

    def stored() -> str | None:
        try:
            value = str(ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"])
        except ssm.exceptions.ParameterNotFound:
            return None
        return value.rstrip("/").rsplit("/", 1)[-1]

    found = stored()
    if found is not None:
        return found
    token = secrets.token_urlsafe(32)
    try:
        ssm.put_parameter(
            Name=name,
            Value=f"{base_url.rstrip('/')}/{heartbeat_id}/{token}",
            Type="SecureString",
            Overwrite=False,
            Description=f"ops-autopilot heartbeat {heartbeat_id}: ping this URL (GET or POST)",
        )
    except ssm.exceptions.ParameterAlreadyExists:
        again = stored()
        if again is None:
            raise
        return again
    return token
