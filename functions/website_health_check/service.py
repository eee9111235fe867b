"""Every call the health check makes outside the function, except its state table (store.py).

- AWS: the site list, one ``ssm:GetParameter`` per run;
- the network: one HTTP(S) request per site (:func:`probe`; all sites at once,
  :func:`probe_all`) and, for an https site, one TLS handshake to read its certificate's
  expiry. A probe tells apart DNS failure, connection refused, timeout, TLS error, redirect
  loop; what the answer *means* (UP, DEGRADED, DOWN) is ``decide.classify``'s job;
- CloudWatch (EMF lines on stdout, no API call): the per-site metrics.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from urllib.parse import urlsplit

import certifi
import requests
from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from autopilot import aws
from autopilot.runtime import Deadline
from website_health_check.decide import CheckResult, Probe, Site, scrub

MAX_BODY_BYTES = 1024 * 1024  # the expected text is searched in the first 1 MiB of the body
MAX_REDIRECTS = 5
MAX_WORKERS = 64  # checks wait on the network; 64 threads fit in 256 MB
USER_AGENT = "ops-autopilot-health-check/1.0"
AUTOMATION = "website_health_check"
NOT_CHECKED = "time budget spent; sites not checked this run"

logger = Logger(child=True)


def site_list(parameter: str) -> str:
    """The site list's text (1 call: ssm:GetParameter)."""
    value: str = aws.client("ssm").get_parameter(Name=parameter)["Parameter"]["Value"]
    return value


# -- the network -----------------------------------------------------------------------------


def probe(site: Site, budget_s: float, now: datetime) -> Probe:
    """One GET of ``site`` within ``budget_s`` seconds (never more than the site's own timeout),
    following at most 5 redirects, reading at most 1 MiB of the body; then, for an https final
    URL, the certificate's days left (a second connection). No AWS call."""
    timeout = max(0.5, min(site.timeout, budget_s))
    started = time.monotonic()
    try:
        with requests.Session() as session:
            session.max_redirects = MAX_REDIRECTS
            session.headers["User-Agent"] = USER_AGENT
            response = session.get(site.target, timeout=timeout, stream=True, allow_redirects=True)
            with response:
                body = _read_capped(response, started + timeout)
                latency_ms = (time.monotonic() - started) * 1000
                final_url = response.url
                http_status = response.status_code
    except requests.exceptions.TooManyRedirects:
        return Probe(site.url, ("redirects", f"more than {MAX_REDIRECTS} redirects (redirect loop?)"))
    except requests.exceptions.SSLError as err:
        return Probe(site.url, ("tls", scrub(f"TLS error: {_tls_reason(err)}", site.target)))
    except (requests.exceptions.Timeout, TimeoutError):
        return Probe(site.url, ("timeout", f"no answer within {timeout:g} s (timeout)"))
    except requests.exceptions.ConnectionError as err:
        category, reason = _connection_reason(err)
        return Probe(site.url, (category, scrub(reason, site.target)))
    except requests.exceptions.RequestException as err:
        return Probe(
            site.url, ("error", scrub(f"request failed: {type(err).__name__}: {err}", site.target)[:300])
        )

    cert_days = None
    if urlsplit(final_url).scheme == "https":
        cert_days = certificate_days_left(final_url, timeout, now)
    return Probe(
        site.url,
        http_status=http_status,
        latency_ms=latency_ms,
        cert_days_left=cert_days,
        text_found=None if site.expect_text is None else site.expect_text in body,
        body_chars=len(body),
    )


def probe_all(sites: list[Site], deadline: Deadline, now: datetime) -> list[tuple[Site, Probe]]:
    """Probe every site concurrently (up to 64 at a time), in the list's order; sites not
    finished within the time budget are left out (their state is untouched) and logged. So is
    a site whose probe timed out only because the budget cut its own timeout short (however
    late this thread wakes up), and every site when the budget is spent before the first probe."""
    if not sites:
        return []
    if deadline.expired():
        logger.warning(NOT_CHECKED, extra={"urls": [s.url for s in sites]})
        return []
    pool = ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(sites)))
    futures: dict[Future[Probe], tuple[Site, float]] = {}
    for s in sites:
        budget = deadline.remaining()
        futures[pool.submit(probe, s, budget, now)] = (s, budget)
    done, pending = wait(futures, timeout=deadline.remaining())
    pool.shutdown(wait=False, cancel_futures=True)
    cut_short = {f for f in done if _timed_out(f.result()) and futures[f][0].timeout > futures[f][1]}
    if pending or cut_short:
        urls = [futures[f][0].url for f in (*pending, *cut_short)]
        logger.warning(NOT_CHECKED, extra={"urls": urls})
    order = {s.url: i for i, s in enumerate(sites)}
    checked = ((futures[f][0], f.result()) for f in done - cut_short)
    return sorted(checked, key=lambda pair: order[pair[0].url])


def _timed_out(found: Probe) -> bool:
    return found.failure is not None and found.failure[0] == "timeout"


def _read_capped(response: requests.Response, deadline: float) -> str:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(chunk_size=64 * 1024):
        chunks.append(chunk)
        size += len(chunk)
        if size >= MAX_BODY_BYTES:
            break
        if time.monotonic() > deadline:
            raise TimeoutError("body not received in time")
    data = b"".join(chunks)[:MAX_BODY_BYTES]
    return data.decode(response.encoding or "utf-8", errors="replace")


def _chain(err: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    todo: list[object] = [err]
    while todo:
        current = todo.pop()
        if not isinstance(current, BaseException) or any(current is s for s in seen):
            continue
        seen.append(current)
        todo += [current.__cause__, current.__context__, getattr(current, "reason", None)]
        todo += [a for a in current.args if isinstance(a, BaseException)]
    return seen


def _connection_reason(err: BaseException) -> tuple[str, str]:
    chain = _chain(err)
    if any(isinstance(e, socket.gaierror) or type(e).__name__ == "NameResolutionError" for e in chain):
        return "dns", "DNS lookup failed (name does not resolve)"
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "refused", "connection refused (nothing listening on that port)"
    if any(isinstance(e, TimeoutError | socket.timeout) or "timed out" in str(e) for e in chain):
        return "timeout", "connection timed out"
    if any(isinstance(e, ssl.SSLError) for e in chain):
        return "tls", f"TLS error: {_tls_reason(err)}"
    if any(isinstance(e, ConnectionResetError) for e in chain):
        return "error", "connection reset by the server"
    return "error", f"connection failed: {err}"[:300]


def _tls_reason(err: BaseException) -> str:
    for e in _chain(err):
        if isinstance(e, ssl.SSLCertVerificationError):
            return str(e.verify_message or e.reason or e)
        if isinstance(e, ssl.SSLError) and e.reason:
            return str(e.reason)
    return str(err)[:200]


def certificate_days_left(url: str, timeout: float, now: datetime | None = None) -> float | None:
    """Days until the certificate served at ``url`` expires (None if it cannot be read)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    context = ssl.create_default_context(cafile=os.environ.get("REQUESTS_CA_BUNDLE") or certifi.where())
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as sock,
            context.wrap_socket(sock, server_hostname=host) as tls,
        ):
            cert = tls.getpeercert()
    except (OSError, ssl.SSLError):
        return None
    not_after = cert.get("notAfter") if cert else None
    if not isinstance(not_after, str):
        return None
    expires = datetime.fromtimestamp(ssl.cert_time_to_seconds(not_after), UTC)
    return round(((expires - (now or datetime.now(UTC))).total_seconds()) / 86400, 2)


# -- CloudWatch --------------------------------------------------------------------------------


def emit_site_metrics(results: list[CheckResult]) -> None:
    """Per site (dimensions service, site): Availability (1/0), Latency (ms) and
    CertificateDaysLeft, as EMF log lines (no API call)."""
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
