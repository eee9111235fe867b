"""The health check's network engine: every site's GET on one event loop, each within one total
deadline, nothing outliving the run.

Why this shape (measured in docs/benchmarks-health-engine.md):
- **One deadline per check** (``asyncio.timeout`` around DNS, connect, TLS, headers and body
  together): a server trickling one byte a second is cut at the site's timeout. requests'
  timeout applied per socket read, so such a site was read for ever and never went DOWN.
- **Nothing leaks across warm invocations**: one event loop per process, reused by every run;
  every connection is closed before ``check_all`` returns (cancelling a check closes its
  socket); the only threads are the loop's DNS resolver pool, at most ``DNS_THREADS``, the same
  ones every run (a hung lookup ties one of them up, never a new one).
- **Cheap TLS**: one SSL context per process (the CA bundle is loaded once, not twice per site),
  and the certificate's expiry is read from the connection that fetched the page (no second
  handshake): ``_PeerRecorder`` keeps the peer certificate of each check's own connection.
- **aiohttp** rather than httpx or bare asyncio streams: its C HTTP parser costs about 1.1x the
  CPU of a bare-streams reference checker per HTTPS site (httpx about 2x), and it already
  handles what real servers send (chunked, gzip, redirects, odd headers), which a hand-made
  parser would get wrong in ways that read as false DOWN.
- **A concurrency bound** (``MAX_CONCURRENCY`` sockets) well inside Lambda's 1,024 descriptors.

The engine knows nothing of AWS. What an answer *means* is ``decide.classify``'s job.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import os
import ssl
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import certifi
from aws_lambda_powertools import Logger

from website_health_check.decide import Probe, Site, scrub
from website_health_check.decide.page import decode

MAX_CONCURRENCY = 256  # sockets open at once (happy eyeballs may briefly open 2 per check)
DNS_THREADS = 8  # the loop's resolver threads, reused by every run
MAX_BODY_BYTES = 1024 * 1024  # the expected text is searched in the first 1 MiB of the body
MAX_REDIRECTS = 5
MAX_HEADER_LINE = 32 * 1024  # long Content-Security-Policy headers are common; 10 MB of them is not
MAX_HEADERS = 256
MIN_CHECK_SECONDS = 0.5  # a check is started only with at least this much of the budget left
USER_AGENT = "ops-autopilot-health-check/2.0"

logger = Logger(child=True)

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_contexts: dict[str, ssl.SSLContext] = {}
_peer: contextvars.ContextVar[_Peer] = contextvars.ContextVar("website_health_check_peer")


@dataclass
class _Peer:
    """The certificate of the last TLS connection this check made (the final URL's)."""

    cert: dict[str, Any] | None = None


class _PeerRecorder(ssl.SSLObject):
    """An SSLObject that hands its peer certificate to the check that opened the connection.

    asyncio runs a connection's callbacks in a copy of the context of the task that created it,
    so the check's ``_Peer`` (set in its own task) is the one this handshake sees."""

    def do_handshake(self) -> None:
        super().do_handshake()
        holder = _peer.get(None)
        if holder is not None:
            holder.cert = self.getpeercert()


@dataclass
class _Progress:
    """How far a check got, for a timeout's reason."""

    phase: str = "connecting"
    received: int = 0
    redirects: int = 0
    host: str = ""

    def timeout_reason(self, seconds: float) -> str:
        limit = f"within {seconds:g} s (timeout)"
        if self.phase == "resolving":
            return f"DNS lookup of {self.host} did not finish {limit}"
        if self.phase == "connecting":
            return f"no connection {limit}"
        if self.phase == "waiting":
            return f"connected, but no answer {limit}"
        return f"answer not complete {limit}: {self.received:,} bytes of the body received (a slow server)"


@dataclass
class Outcome:
    """What ``check_all`` found: a probe per checked site, in the given order, and the sites it
    did not check (not started, or cut short by the budget rather than by their own timeout)."""

    checked: list[tuple[Site, Probe]] = field(default_factory=list)
    not_checked: list[Site] = field(default_factory=list)


def ssl_context() -> ssl.SSLContext:
    """The process's one client SSL context (certifi's CA bundle, or REQUESTS_CA_BUNDLE /
    SSL_CERT_FILE when set, as the tests and a private CA do)."""
    cafile = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE") or certifi.where()
    with _lock:  # one per CA file: tests (and a private CA) point REQUESTS_CA_BUNDLE elsewhere
        if cafile not in _contexts:
            context = ssl.create_default_context(cafile=cafile)
            context.sslobject_class = _PeerRecorder
            _contexts[cafile] = context
        return _contexts[cafile]


def event_loop() -> asyncio.AbstractEventLoop:
    """The process's one event loop (warm invocations reuse it and its DNS threads)."""
    global _loop  # noqa: PLW0603  # one per process
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            loop.set_default_executor(ThreadPoolExecutor(DNS_THREADS, thread_name_prefix="health-dns"))
            _loop = loop
        return _loop


def check_all(sites: Sequence[Site], budget_s: float, now: datetime) -> Outcome:
    """Check ``sites``, started in their order, at most MAX_CONCURRENCY at once, all within
    ``budget_s`` seconds. No AWS call."""
    if not sites:
        return Outcome()
    loop = event_loop()
    return loop.run_until_complete(_check_all(list(sites), budget_s, now, ssl_context()))


async def _check_all(sites: list[Site], budget_s: float, now: datetime, context: ssl.SSLContext) -> Outcome:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget_s
    gate = asyncio.Semaphore(MAX_CONCURRENCY)
    connector = aiohttp.TCPConnector(ssl=context, limit=0, force_close=True, ttl_dns_cache=60)
    async with aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, connect=None, sock_connect=None, sock_read=None),
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate"},
        trace_configs=[_tracing()],
        max_line_size=MAX_HEADER_LINE,
        max_field_size=MAX_HEADER_LINE,
        max_headers=MAX_HEADERS,
        cookie_jar=aiohttp.DummyCookieJar(),
    ) as session:
        tasks = [asyncio.create_task(_gated(session, gate, s, deadline, now)) for s in sites]
        try:
            probes = await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
    outcome = Outcome()
    for site, probe in zip(sites, probes, strict=True):
        if probe is None:
            outcome.not_checked.append(site)
        else:
            outcome.checked.append((site, probe))
    return outcome


async def _gated(
    session: aiohttp.ClientSession, gate: asyncio.Semaphore, site: Site, deadline: float, now: datetime
) -> Probe | None:
    async with gate:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining < MIN_CHECK_SECONDS:
            return None
        timeout = min(site.timeout, remaining)
        found = await probe(session, site, timeout, now)
        if timeout < site.timeout and found.failure is not None and found.failure[0] == "timeout":
            return None  # the budget cut it short, not the site: not checked this run
        return found


async def probe(session: aiohttp.ClientSession, site: Site, timeout: float, now: datetime) -> Probe:
    """One GET of ``site`` (redirects followed, at most 5; the first 1 MiB of the body read and
    decoded), everything within ``timeout`` seconds; the certificate's days left for an https
    final URL, from the same connection. Never raises for anything the site does."""
    holder = _Peer()
    _peer.set(holder)
    progress = _Progress(host=urlsplit(site.target).hostname or "")
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with asyncio.timeout(timeout):
            async with session.get(
                site.target, allow_redirects=True, max_redirects=MAX_REDIRECTS, trace_request_ctx=progress
            ) as response:
                progress.phase = "body"
                body = await _read(response, progress)
                latency_ms = (loop.time() - started) * 1000
                http_status, final_url = response.status, str(response.url)
                content_type = response.headers.get("Content-Type")
    except TimeoutError:
        return Probe(site.url, ("timeout", progress.timeout_reason(timeout)))
    except aiohttp.ClientError as err:
        return Probe(site.url, _failure(err, site.target))
    except (OSError, ValueError, UnicodeError) as err:
        # Anything else a hostile answer can provoke below aiohttp (a Location header yarl
        # cannot parse, a socket error aiohttp did not wrap): this site's failure, not the run's.
        reason = scrub(f"check failed: {type(err).__name__}: {err}", site.target)[:300]
        logger.warning("unexpected failure of one check", extra={"url": site.url, "reason": reason})
        return Probe(site.url, ("error", reason))
    text = decode(body, content_type)
    cert_days = None
    if urlsplit(final_url).scheme == "https":
        cert_days = days_left(holder.cert, now)
    return Probe(
        site.url,
        http_status=http_status,
        latency_ms=latency_ms,
        cert_days_left=cert_days,
        text_found=None if site.expect_text is None else site.expect_text in text,
        body_chars=len(text),
    )


async def _read(response: aiohttp.ClientResponse, progress: _Progress) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < MAX_BODY_BYTES:
        chunk = await response.content.read(MAX_BODY_BYTES - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        progress.received = size
    return b"".join(chunks)


def days_left(cert: dict[str, Any] | None, now: datetime) -> float | None:
    """Days until ``cert`` (ssl's getpeercert() form) expires; None without one."""
    not_after = cert.get("notAfter") if cert else None
    if not isinstance(not_after, str):
        return None
    expires = datetime.fromtimestamp(ssl.cert_time_to_seconds(not_after), UTC)
    return round((expires - now).total_seconds() / 86400, 2)


def _failure(err: aiohttp.ClientError, target: str) -> tuple[str, str]:
    """(category, reason) for a check aiohttp could not complete, in words a person reads."""
    if isinstance(err, aiohttp.TooManyRedirects):
        return "redirects", f"more than {MAX_REDIRECTS} redirects (redirect loop?)"
    if isinstance(err, aiohttp.NonHttpUrlRedirectClientError | aiohttp.InvalidUrlRedirectClientError):
        where = str(getattr(err, "url", "") or err)
        return "redirects", scrub(f"redirected to {where[:200]}, which is not an http(s) address", target)
    if isinstance(err, aiohttp.ClientConnectorDNSError):
        return "dns", "DNS lookup failed (name does not resolve)"
    if isinstance(err, aiohttp.ClientConnectorCertificateError):
        cert_error = err.certificate_error
        message = getattr(cert_error, "verify_message", None) or getattr(cert_error, "reason", None)
        return "tls", scrub(f"TLS error: {message or cert_error}", target)[:300]
    if isinstance(err, aiohttp.ClientConnectorSSLError | aiohttp.ClientSSLError):
        reason = getattr(err.os_error, "reason", None) or err.os_error
        return "tls", scrub(f"TLS error: {reason}", target)[:300]
    if isinstance(err, aiohttp.ClientConnectorError):
        code = getattr(err.os_error, "errno", None)
        if code == errno.ECONNREFUSED:
            return "refused", "connection refused (nothing listening on that port)"
        if isinstance(err.os_error, TimeoutError) or code == errno.ETIMEDOUT:
            return "timeout", "connection timed out"
        strerror = getattr(err.os_error, "strerror", None) or err.os_error
        return "error", scrub(f"could not connect: {strerror}", target)[:300]
    if isinstance(err, aiohttp.ServerDisconnectedError):
        return "error", "the server closed the connection without a complete answer"
    if isinstance(err, aiohttp.ClientOSError):
        if getattr(err, "errno", None) == errno.ECONNRESET or isinstance(err.__cause__, ConnectionResetError):
            return "error", "connection reset by the server"
        return "error", scrub(f"connection failed: {err}", target)[:300]
    if isinstance(err, aiohttp.ClientPayloadError):
        return "error", scrub(f"the body was cut off or malformed: {err}", target)[:300]
    if isinstance(err, aiohttp.ClientResponseError):
        return "error", scrub(f"invalid HTTP answer: {err.message}", target)[:300]
    return "error", scrub(f"request failed: {type(err).__name__}: {err}", target)[:300]


def _tracing() -> aiohttp.TraceConfig:
    """Marks each check's phase (for a timeout's reason) and counts its redirects."""
    config = aiohttp.TraceConfig()

    async def dns_start(_: Any, ctx: SimpleNamespace, __: Any) -> None:
        ctx.trace_request_ctx.phase = "resolving"

    async def connecting(_: Any, ctx: SimpleNamespace, __: Any) -> None:
        ctx.trace_request_ctx.phase = "connecting"

    async def connected(_: Any, ctx: SimpleNamespace, __: Any) -> None:
        ctx.trace_request_ctx.phase = "waiting"

    async def redirected(_: Any, ctx: SimpleNamespace, __: Any) -> None:
        ctx.trace_request_ctx.redirects += 1
        ctx.trace_request_ctx.phase = "connecting"

    config.on_dns_resolvehost_start.append(dns_start)
    config.on_dns_resolvehost_end.append(connecting)
    config.on_connection_create_end.append(connected)
    config.on_request_redirect.append(redirected)
    return config
