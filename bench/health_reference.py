"""The reference checker for bench.health_engine: about the least a health check can do, in the
stdlib alone - the floor the engine's wall time, CPU and memory are compared with.

Per site, within ``asyncio.timeout(site timeout)`` around all of it: ``asyncio.open_connection``
(TLS with ONE shared ``ssl.SSLContext`` for the run), ``GET`` with ``Connection: close``, the
status line and headers, the body (``Content-Length`` or to EOF, at most 1 MiB), the status
(200-399), the expected text in the body decoded as UTF-8, and for https the certificate's days
left from that same connection (``writer.get_extra_info("peercert")``). At most ``concurrency``
checks at once (an ``asyncio.Semaphore``, the engine's bound). No redirects, no chunked or
compressed bodies, no charset detection: what the local sites do not need and the engine does.

    python -m bench.health_reference < spec.json   # bench.health_engine runs it; prints a report

The spec (JSON on stdin): ``{"sites": [{"url", "expect_text", "timeout"}, ...],
"concurrency": N, "ca": "PEM file or null", "cert_warning_days": 14}``. The report (JSON, one
line on stdout) is :func:`measured`'s: wall and CPU seconds of the check, peak RSS, counts.
"""

from __future__ import annotations

import asyncio
import json
import resource
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

MAX_BODY_BYTES = 1024 * 1024
MAX_HEAD_BYTES = 64 * 1024
USER_AGENT = "ops-autopilot-bench-reference/1.0"
LAMBDA_DESCRIPTORS = 1024  # Lambda's open-file limit, set in each measured process

T = TypeVar("T")


@dataclass(frozen=True)
class Target:
    url: str
    expect_text: str | None
    timeout: float


@dataclass(frozen=True)
class Result:
    url: str
    up: bool
    reason: str
    status: int | None = None
    latency_ms: float | None = None
    cert_days_left: float | None = None


def _head(raw: bytes) -> tuple[int, dict[str, str]]:
    """(status, headers with lower-case names) of an HTTP/1.x answer's head."""
    lines = raw.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    if not version.startswith("HTTP/1."):
        raise ValueError(f"not an HTTP/1.x answer: {lines[0][:80]!r}")
    status = int(rest[:3])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise ValueError("chunked bodies are not read by the reference checker")
    length = headers.get("content-length")
    if length is not None:
        return await reader.readexactly(min(int(length), MAX_BODY_BYTES))
    chunks: list[bytes] = []
    size = 0
    while size < MAX_BODY_BYTES:
        chunk = await reader.read(MAX_BODY_BYTES - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def days_left(cert: Any, now: datetime) -> float | None:
    not_after = cert.get("notAfter") if isinstance(cert, dict) else None
    if not isinstance(not_after, str):
        return None
    return round((ssl.cert_time_to_seconds(not_after) - now.timestamp()) / 86400, 2)


async def check(target: Target, context: ssl.SSLContext | None, now: datetime, warning_days: int) -> Result:
    """One GET of ``target`` within its timeout; UP when the status is 200-399, the expected
    text is in the body and (https) the certificate has at least ``warning_days`` left."""
    parts = urlsplit(target.url)
    https = parts.scheme == "https"
    host = parts.hostname or ""
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUser-Agent: {USER_AGENT}\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n"
    ).encode("ascii")
    loop = asyncio.get_running_loop()
    started = loop.time()
    writer: asyncio.StreamWriter | None = None
    closed = False
    try:
        async with asyncio.timeout(target.timeout):
            reader, writer = await asyncio.open_connection(
                host,
                parts.port or (443 if https else 80),
                ssl=context if https else None,
                server_hostname=host if https else None,
                limit=MAX_HEAD_BYTES,
            )
            writer.write(request)
            await writer.drain()
            status, headers = _head(await reader.readuntil(b"\r\n\r\n"))
            body = await _body(reader, headers)
            latency_ms = (loop.time() - started) * 1000
            cert = writer.get_extra_info("peercert") if https else None
            writer.close()
            await writer.wait_closed()
            closed = True
    except TimeoutError:
        return Result(target.url, False, f"timeout after {target.timeout:g} s")
    except (OSError, EOFError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as err:
        return Result(target.url, False, f"{type(err).__name__}: {err}"[:300])
    finally:
        if writer is not None and not closed:
            writer.transport.abort()
    cert_days = days_left(cert, now) if https else None
    text = body.decode("utf-8", errors="replace")

    def result(up: bool, reason: str) -> Result:
        return Result(target.url, up, reason, status, round(latency_ms, 1), cert_days)

    if not 200 <= status <= 399:
        return result(False, f"HTTP {status}")
    if target.expect_text is not None and target.expect_text not in text:
        return result(False, f"expected text {target.expect_text!r} missing")
    if https and (cert_days is None or cert_days < warning_days):
        return result(False, f"certificate: {cert_days} days left")
    return result(True, f"HTTP {status} in {latency_ms:.0f} ms")


async def check_all(
    targets: list[Target], concurrency: int, cafile: str | None, warning_days: int
) -> list[Result]:
    """Every target, at most ``concurrency`` at once, one SSL context for all (made only when a
    target is https)."""
    context = None
    if any(t.url.startswith("https:") for t in targets):
        context = ssl.create_default_context(cafile=cafile)
    gate = asyncio.Semaphore(concurrency)
    now = datetime.now(UTC)

    async def gated(target: Target) -> Result:
        async with gate:
            return await check(target, context, now, warning_days)

    return list(await asyncio.gather(*(gated(t) for t in targets)))


# -- what each measured process reports (the engine's child uses it too) ---------------------


def as_lambda() -> None:
    """The process's open-file limit as Lambda's (1,024), so a checker that needs more fails here."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(LAMBDA_DESCRIPTORS, hard), hard))


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, MB: Linux's VmHWM, the high-water mark of
    this program's own memory. ``ru_maxrss`` (the fallback) is no good here: Linux carries it
    over fork and exec, so a child of a big parent starts with the parent's peak."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kilobytes = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(kilobytes) / 1024


def measured(check: Callable[[], T]) -> tuple[T, dict[str, float]]:
    """``check()``'s result and its figures: wall seconds (monotonic), CPU seconds (this
    process, every thread), peak RSS before and after (MB)."""
    before = peak_rss_mb()
    wall, cpu = time.monotonic(), time.process_time()
    result = check()
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    figures = {"wall_s": wall, "cpu_s": cpu, "rss_before_mb": before, "peak_rss_mb": peak_rss_mb()}
    return result, figures


def main() -> None:
    as_lambda()
    spec = json.load(sys.stdin)
    targets = [Target(s["url"], s.get("expect_text"), float(s["timeout"])) for s in spec["sites"]]
    concurrency, warning_days = int(spec["concurrency"]), int(spec.get("cert_warning_days", 14))
    results, figures = measured(
        lambda: asyncio.run(check_all(targets, concurrency, spec.get("ca"), warning_days))
    )
    report = {
        "checker": "reference",
        "concurrency": concurrency,
        "sites": len(targets),
        "checked": len(results),
        "up": sum(r.up for r in results),
        "failures": [f"{r.url}: {r.reason}" for r in results if not r.up][:5],
        **figures,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
