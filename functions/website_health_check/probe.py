"""One HTTP(S) check of one site, and the TLS certificate's days left (network, no AWS).

The result says UP, DEGRADED (works, but too slow or its certificate expires soon) or DOWN,
and why, distinguishing DNS failure, connection refused, timeout, TLS error, redirect loop,
unexpected status and missing text.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import certifi
import requests

from website_health_check.sites import Site
from website_health_check.transitions import Status

MAX_BODY_BYTES = 1024 * 1024  # the expected text is searched in the first 1 MiB of the body
MAX_REDIRECTS = 5
USER_AGENT = "ops-autopilot-health-check/1.0"


@dataclass(frozen=True)
class CheckResult:
    url: str
    status: Status
    reason: str  # one line a human understands
    category: str  # ok, slow, cert_expiring, dns, refused, timeout, tls, redirects, status, text, error
    http_status: int | None = None
    latency_ms: float | None = None
    cert_days_left: float | None = None

    @property
    def available(self) -> bool:
        return self.status is not Status.DOWN


def check_site(
    site: Site, budget_s: float, cert_warning_days: int, now: datetime | None = None
) -> CheckResult:
    """Check ``site`` within ``budget_s`` seconds (never more than the site's own timeout)."""
    timeout = max(0.5, min(site.timeout, budget_s))
    started = time.monotonic()
    try:
        with requests.Session() as session:
            session.max_redirects = MAX_REDIRECTS
            session.headers["User-Agent"] = USER_AGENT
            response = session.get(site.url, timeout=timeout, stream=True, allow_redirects=True)
            with response:
                body = _read_capped(response, started + timeout)
                latency_ms = (time.monotonic() - started) * 1000
                final_url = response.url
                http_status = response.status_code
    except requests.exceptions.TooManyRedirects:
        return _down(site, "redirects", f"more than {MAX_REDIRECTS} redirects (redirect loop?)")
    except requests.exceptions.SSLError as err:
        return _down(site, "tls", f"TLS error: {_tls_reason(err)}")
    except (requests.exceptions.Timeout, TimeoutError):
        return _down(site, "timeout", f"no answer within {timeout:g} s (timeout)")
    except requests.exceptions.ConnectionError as err:
        category, reason = _connection_reason(err)
        return _down(site, category, reason)
    except requests.exceptions.RequestException as err:
        return _down(site, "error", f"request failed: {type(err).__name__}: {err}"[:300])

    cert_days = None
    if urlsplit(final_url).scheme == "https":
        cert_days = certificate_days_left(final_url, timeout, now)
    if not site.accepts(http_status):
        return _result(
            site,
            Status.DOWN,
            "status",
            f"HTTP {http_status}, expected {site.accepted}",
            http_status,
            latency_ms,
            cert_days,
        )
    if site.expect_text is not None and site.expect_text not in body:
        return _result(
            site,
            Status.DOWN,
            "text",
            f"expected text {site.expect_text!r} missing (HTTP {http_status}, "
            f"first {len(body):,} characters searched)",
            http_status,
            latency_ms,
            cert_days,
        )
    if site.max_latency_ms is not None and latency_ms > site.max_latency_ms:
        return _result(
            site,
            Status.DEGRADED,
            "slow",
            f"too slow: {latency_ms:.0f} ms, limit {site.max_latency_ms} ms",
            http_status,
            latency_ms,
            cert_days,
        )
    if cert_days is not None and cert_days < cert_warning_days:
        return _result(
            site,
            Status.DEGRADED,
            "cert_expiring",
            f"TLS certificate expires in {cert_days:.1f} days (warning below {cert_warning_days})",
            http_status,
            latency_ms,
            cert_days,
        )
    return _result(
        site,
        Status.UP,
        "ok",
        f"HTTP {http_status} in {latency_ms:.0f} ms",
        http_status,
        latency_ms,
        cert_days,
    )


def _result(
    site: Site,
    status: Status,
    category: str,
    reason: str,
    http_status: int | None,
    latency_ms: float | None,
    cert_days: float | None,
) -> CheckResult:
    return CheckResult(
        site.url,
        status,
        reason,
        category,
        http_status,
        None if latency_ms is None else round(latency_ms, 1),
        cert_days,
    )


def _down(site: Site, category: str, reason: str) -> CheckResult:
    return CheckResult(site.url, Status.DOWN, reason, category)


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
