"""The health check's decisions, on plain data (no network, no AWS, no clock).

Three of them, in the order a run makes them:

1. **the site list** - :func:`parse_sites` validates the SSM parameter's text into
   :class:`Site` objects, or raises :class:`SiteConfigError` listing every problem;
2. **what one check means** - :func:`classify` turns a :class:`Probe` (what the network said,
   gathered by ``service.probe``) into UP, DEGRADED or DOWN with a reason a human understands;
3. **when that is worth a mail** - :func:`advance` moves a site's :class:`SiteState` after one
   check and says which :class:`Transition` (DOWN, DEGRADED, RECOVERED) to report, if any.

Site list: two forms are accepted:
- comma- or newline-separated URLs: ``https://example.com, https://api.example.com/health``
- a JSON list of objects, one per site::

    [{"url": "https://example.com", "expect_text": "Welcome", "status": "200-299",
      "timeout": 5, "max_latency_ms": 1500, "name": "shop"},
     {"heartbeat": "nightly-backup", "period": "1d", "grace": "1h", "name": "Nightly backup"}]

A **heartbeat** (dead man's switch) is the other way round: a job pings its URL (the stack's
heartbeat function, a secret token in the path) and the check is DOWN when no ping came within
``period`` + ``grace`` of the last one (or of its URL being made), UP again on the next ping -
through the same states, transitions and mails as a web check (one missed period is enough:
a heartbeat has no blips).

States: each site has a *reported* status (what the last mail said; UP for a new site), a
streak (how many checks in a row observed the same different status) and a window of its
recent checks (failed or not, the last ``window.size``). Two rules report a problem:
- **DOWN** (or DEGRADED) after ``threshold`` consecutive checks agree (no mail for one blip);
- **FLAPPING** when at least ``window.failures`` of the last ``window.size`` checks failed
  although never ``threshold`` in a row (a site alternating 503 and 200 fails half its checks
  and would otherwise never be reported). It is RECOVERED only once the window is clean:
  ``window.size`` good checks in a row. A streak of ``threshold`` failures turns it DOWN.
A site is reported UP again (RECOVERED) on its first good check after DOWN or DEGRADED.
Nothing changes while the observed status equals the reported one, so a site that stays down
mails once, not every 5 minutes.

Order: :func:`check_order` puts first the sites the last run did not check (the budget ran
out), so when a run can check at least half of the list, every site is checked at least every
other run.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

DEFAULT_TIMEOUT = 10.0
MAX_TIMEOUT = 60.0
MAX_SITES = 2000  # per stack (docs/website_health_check.md: more sites, more stacks)
_FIELDS = {"url", "name", "expect_text", "status", "timeout", "max_latency_ms"}
_HEARTBEAT_FIELDS = {"heartbeat", "name", "period", "grace"}
HEARTBEAT_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
HEARTBEAT = "heartbeat:"  # a heartbeat's identity in place of a URL: heartbeat:<id>
MIN_PERIOD_SECONDS = 300  # the check runs every 5 minutes: a shorter period cannot be judged
MAX_PERIOD_SECONDS = 35 * 86400
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_RANGE = re.compile(r"^\s*(\d{3})\s*(?:-\s*(\d{3}))?\s*$")


# -- 1. the site list ------------------------------------------------------------------------


class SiteConfigError(ValueError):
    """The site list cannot be used; ``problems`` says every reason."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


# Query parameters whose values are secrets (a heartbeat token, a signed URL's signature).
_SECRET_PARAMETER = re.compile(r"token|key|secret|pass|pwd|sig|auth|cred|session", re.IGNORECASE)
REDACTED = "***"


def redact_url(url: str) -> str:
    """The URL as logs, metrics, mails and the state table show it: without the user and
    password of ``https://user:password@host/`` and with the values of secret-looking query
    parameters (token, key, signature, ...) replaced by ``***``. Everything else is kept."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(_SECRET_PARAMETER.search(k) for k, _ in pairs):
        query = urlencode([(k, REDACTED if _SECRET_PARAMETER.search(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def secrets_of(url: str) -> list[str]:
    """The secret parts of ``url`` (user, password, secret query values), longest first, to be
    cut out of any text about it (an exception's message may quote the URL)."""
    parts = urlsplit(url)
    found = [p for p in (parts.username, parts.password) if p]
    found += [
        v for k, v in parse_qsl(parts.query, keep_blank_values=True) if v and _SECRET_PARAMETER.search(k)
    ]
    found += [quote(f, safe="") for f in found] + [unquote(f) for f in found]
    return sorted({f for f in found if len(f) >= 3}, key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    """``text`` with every secret part of ``url`` replaced by ``***``."""
    for secret in secrets_of(url):
        text = text.replace(secret, REDACTED)
    return text


@dataclass(frozen=True)
class Site:
    # The URL as shown everywhere (redact_url); the request itself goes to request_url.
    url: str
    name: str
    expect_text: str | None = None
    status_ranges: tuple[tuple[int, int], ...] = ((200, 399),)
    timeout: float = DEFAULT_TIMEOUT
    max_latency_ms: int | None = None
    request_url: str = ""  # the URL as configured, credentials included ("" = url)
    kind: str = "web"  # web | heartbeat (url is then heartbeat:<id>)
    period_seconds: int = 0  # a heartbeat: a ping is expected at least this often ...
    grace_seconds: int = 0  # ... give or take this

    @property
    def heartbeat_id(self) -> str:
        return self.url.removeprefix(HEARTBEAT)

    @property
    def target(self) -> str:
        """Where the request goes (the only use of the configured URL itself)."""
        return self.request_url or self.url

    def accepts(self, status: int) -> bool:
        return any(low <= status <= high for low, high in self.status_ranges)

    @property
    def accepted(self) -> str:
        return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in self.status_ranges)


def parse_site_lists(lists: list[tuple[str, str]]) -> list[Site]:
    """Sites from several parameters' texts ((name, text), as ``service.site_lists`` reads
    them), one list; raises SiteConfigError listing every problem, each naming its parameter
    when there is more than one."""
    problems: list[str] = []
    sites: list[Site] = []
    for name, text in lists:
        try:
            sites += parse_sites(text, check_size=False)
        except SiteConfigError as err:
            problems += [f"{name}: {p}" if len(lists) > 1 else p for p in err.problems]
    problems += _list_problems(sites, len(sites))
    if problems:
        raise SiteConfigError(problems)
    return sites


def _list_problems(sites: list[Site], listed: int) -> list[str]:
    problems: list[str] = []
    if listed > MAX_SITES:
        problems.append(
            f"{listed:,} sites listed; at most {MAX_SITES:,} per stack (deploy another stack for the rest)"
        )
    seen: set[str] = set()
    for site in sites:
        if site.url in seen:
            problems.append(f"{site.url} is listed twice")
        seen.add(site.url)
    return problems


def parse_sites(text: str, *, check_size: bool = True) -> list[Site]:
    """Sites from the parameter text; raises SiteConfigError listing every problem."""
    text = text.strip()
    if not text or text == "[]":
        return []
    if text.startswith("[") or text.startswith("{"):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as err:
            raise SiteConfigError([f"site list is not valid JSON: {err.msg} at line {err.lineno}"]) from None
        if not isinstance(raw, list):
            raise SiteConfigError(["site list JSON must be a list of site objects"])
        entries: list[Any] = raw
    else:
        entries = [u.strip() for u in re.split(r"[,\n]", text) if u.strip()]
    problems: list[str] = []
    sites: list[Site] = []
    for index, entry in enumerate(entries, start=1):
        site = _parse_entry(entry, f"site {index}", problems)
        if site:
            sites.append(site)
    problems += _list_problems(sites, len(entries) if check_size else 0)
    if problems:
        raise SiteConfigError(problems)
    return sites


def parse_duration(value: Any) -> int | None:
    """Seconds from 3600, "90m", "8h", "2d" (a whole number and s, m, h or d); None if not."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    match = _DURATION.match(value) if isinstance(value, str) else None
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)] if match else None


def say_duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _parse_heartbeat(entry: dict[str, Any], where: str, problems: list[str]) -> Site | None:
    before = len(problems)
    unknown = set(entry) - _HEARTBEAT_FIELDS
    if unknown:
        problems.append(f"{where} has unknown field(s) {', '.join(sorted(unknown))}")
    ident = entry.get("heartbeat")
    if not isinstance(ident, str) or not HEARTBEAT_ID.match(ident):
        problems.append(f"{where}: heartbeat must be an id of lower-case letters, digits and -, at most 63")
        return None
    where = f"heartbeat {ident}"
    period = parse_duration(entry.get("period"))
    if period is None or not MIN_PERIOD_SECONDS <= period <= MAX_PERIOD_SECONDS:
        problems.append(f"{where}: period must be a duration like 1h or 1d, between 5m and 35d")
    grace = parse_duration(entry.get("grace", "0"))
    if grace is None or grace > MAX_PERIOD_SECONDS:
        problems.append(f"{where}: grace must be a duration like 30m (0 or more, at most 35d)")
    name = entry.get("name", ident)
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{where}: name must be a non-empty string")
    if len(problems) > before or period is None or grace is None or not isinstance(name, str):
        return None
    return Site(
        url=HEARTBEAT + ident, name=name.strip(), kind="heartbeat", period_seconds=period, grace_seconds=grace
    )


def _parse_entry(entry: Any, where: str, problems: list[str]) -> Site | None:
    if isinstance(entry, str):
        entry = {"url": entry}
    if isinstance(entry, dict) and "heartbeat" in entry:
        return _parse_heartbeat(entry, where, problems)
    if not isinstance(entry, dict):
        problems.append(f"{where} must be a URL or an object, not {type(entry).__name__}")
        return None
    before = len(problems)
    unknown = set(entry) - _FIELDS
    if unknown:
        problems.append(f"{where} has unknown field(s) {', '.join(sorted(unknown))}")
    configured = entry.get("url")
    if not isinstance(configured, str) or not _valid_url(configured):
        shown = _shown(configured)
        problems.append(f"{where}: url {shown!r} is not an http:// or https:// URL with a host")
        return None
    url = redact_url(configured)
    where = url
    expect = entry.get("expect_text")
    if expect is not None and (not isinstance(expect, str) or not expect):
        problems.append(f"{where}: expect_text must be a non-empty string")
    timeout = entry.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= MAX_TIMEOUT:
        problems.append(f"{where}: timeout must be a number of seconds between 0 and {MAX_TIMEOUT:g}")
        timeout = DEFAULT_TIMEOUT
    latency = entry.get("max_latency_ms")
    if latency is not None and (isinstance(latency, bool) or not isinstance(latency, int) or latency <= 0):
        problems.append(f"{where}: max_latency_ms must be a positive whole number")
    ranges = _parse_status(entry.get("status", "200-399"), where, problems)
    name = entry.get("name", url)
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{where}: name must be a non-empty string")
        name = url
    if len(problems) > before:
        return None
    return Site(
        url=url,
        name=scrub(name.strip(), configured),
        expect_text=expect,
        status_ranges=ranges,
        timeout=float(timeout),
        max_latency_ms=latency,
        request_url=configured if configured != url else "",
    )


def _shown(value: object) -> object:
    """An invalid url entry as a problem message may quote it: its secrets cut out if it can be
    read as a URL at all, else only its type."""
    if not isinstance(value, str):
        return value
    try:
        return redact_url(value)
    except ValueError:
        return f"(a string of {len(value)} characters that is no URL)"


def _valid_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a bad port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not any(c.isspace() for c in url)


def _parse_status(value: Any, where: str, problems: list[str]) -> tuple[tuple[int, int], ...]:
    items = value if isinstance(value, list) else str(value).split(",")
    ranges: list[tuple[int, int]] = []
    for item in items:
        match = _RANGE.match(str(item))
        low, high = (int(match.group(1)), int(match.group(2) or match.group(1))) if match else (0, 0)
        if not match or not 100 <= low <= high <= 599:
            problems.append(f"{where}: status {item!r} is not a code or range like 200-399")
            return ((200, 399),)
        ranges.append((low, high))
    return tuple(ranges)


# -- 2. what one check means -----------------------------------------------------------------


class Status(StrEnum):
    UP = "UP"
    DEGRADED = "DEGRADED"
    DOWN = "DOWN"
    FLAPPING = "FLAPPING"  # reported only (advance's window rule); a single check is never FLAPPING


@dataclass(frozen=True)
class Probe:
    """What one request to a site showed (``service.probe``), before any judgement.

    ``failure`` is set when no answer came: (category, reason) with category one of dns,
    refused, timeout, tls, redirects, error. Otherwise the answer's facts are set."""

    url: str
    failure: tuple[str, str] | None = None
    http_status: int | None = None
    latency_ms: float | None = None
    cert_days_left: float | None = None  # of the certificate served at the final https URL
    text_found: bool | None = None  # the site's expect_text in the body (None: no text expected)
    body_chars: int = 0  # how much of the body was searched (at most service.MAX_BODY_BYTES)


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


def classify(site: Site, probe: Probe, cert_warning_days: int) -> CheckResult:
    """UP, DEGRADED (works, but too slow or its certificate expires soon) or DOWN, and why:
    no answer (the probe's own reason), an unexpected status, the expected text missing."""
    if probe.failure is not None or probe.http_status is None:
        category, reason = probe.failure or ("error", "no answer")
        return CheckResult(site.url, Status.DOWN, reason, category)
    status, latency, cert_days = probe.http_status, probe.latency_ms or 0.0, probe.cert_days_left

    def result(state: Status, category: str, reason: str) -> CheckResult:
        return CheckResult(site.url, state, reason, category, status, round(latency, 1), cert_days)

    if not site.accepts(status):
        return result(Status.DOWN, "status", f"HTTP {status}, expected {site.accepted}")
    if site.expect_text is not None and not probe.text_found:
        return result(
            Status.DOWN,
            "text",
            f"expected text {site.expect_text!r} missing (HTTP {status}, "
            f"first {probe.body_chars:,} characters searched)",
        )
    if site.max_latency_ms is not None and latency > site.max_latency_ms:
        return result(Status.DEGRADED, "slow", f"too slow: {latency:.0f} ms, limit {site.max_latency_ms} ms")
    if cert_days is not None and cert_days < cert_warning_days:
        return result(
            Status.DEGRADED,
            "cert_expiring",
            f"TLS certificate expires in {cert_days:.1f} days (warning below {cert_warning_days})",
        )
    return result(Status.UP, "ok", f"HTTP {status} in {latency:.0f} ms")


def classify_heartbeat(site: Site, last_ping: datetime | None, since: datetime, now: datetime) -> CheckResult:
    """DOWN when no ping came within period + grace of the last one (or of ``since``, when its
    URL was made, if none ever came); UP otherwise. ``now`` is the clock's."""
    last = last_ping or since
    due = last + timedelta(seconds=site.period_seconds + site.grace_seconds)
    expected = f"expected every {say_duration(site.period_seconds)}, grace {say_duration(site.grace_seconds)}"
    when = last.strftime("%Y-%m-%d %H:%M UTC")
    if now > due:
        what = f"no ping since {when}" if last_ping else f"no ping at all since its URL was made ({when})"
        return CheckResult(site.url, Status.DOWN, f"{what}; {expected}", "missed")
    return CheckResult(
        site.url, Status.UP, f"last ping {when}" if last_ping else "waiting for its first ping", "ok"
    )


# -- 3. when that is worth a mail ------------------------------------------------------------

FAILED, PASSED = "x", "."  # one check in SiteState.recent


@dataclass(frozen=True)
class Window:
    """The flapping rule: FLAPPING when ``failures`` of the last ``size`` checks failed.
    ``failures`` 0 turns the rule off."""

    failures: int = 4
    size: int = 10

    def __post_init__(self) -> None:
        if not (self.failures == 0 or 1 <= self.failures <= self.size <= MAX_WINDOW):
            raise ValueError(f"window: 0 or 1 <= failures <= size <= {MAX_WINDOW}")


MAX_WINDOW = 50
NO_WINDOW = Window(failures=0, size=1)


@dataclass(frozen=True)
class SiteState:
    url: str
    reported: Status = Status.UP
    since: str = ""
    streak_status: Status = Status.UP
    streak: int = 0
    reason: str = ""
    version: int = 0  # of the stored item (store.py's optimistic lock); 0: never stored
    # The last checks, oldest first (FAILED / PASSED), kept while one of them failed or the
    # site is FLAPPING; "" otherwise, so a healthy site's item never changes.
    recent: str = ""


@dataclass(frozen=True)
class Transition:
    url: str
    old: Status
    new: Status
    reason: str
    down_since: str  # when the problem was first reported (for RECOVERED mails)
    recent: str = ""  # the window at this check (FLAPPING mails show it)

    @property
    def kind(self) -> str:
        if self.new is Status.UP:
            return "RECOVERED"
        return self.new.value


def advance(
    state: SiteState,
    observed: Status,
    reason: str,
    threshold: int,
    now: datetime,
    window: Window = NO_WINDOW,
) -> tuple[SiteState, Transition | None]:
    """The site's next state after one check, and the transition to report, if any.
    A site seen for the first time starts from ``SiteState(url)`` (reported UP)."""
    if threshold < 1:
        raise ValueError("threshold must be at least 1")
    failed = observed is Status.DOWN
    # While DOWN the window is frozen (the failures that led there stay in it, and a site that
    # stays down writes nothing); every other check is appended.
    frozen = state.reported is Status.DOWN and failed
    recent = state.recent if frozen else (state.recent + (FAILED if failed else PASSED))[-window.size :]
    if FAILED not in recent and state.reported is not Status.FLAPPING:
        recent = ""
    streak = state.streak + 1 if observed == state.streak_status else 1

    def report(new: Status, why: str) -> tuple[SiteState, Transition]:
        kept = "" if new is not Status.FLAPPING and FAILED not in recent else recent
        moved = replace(
            state,
            reported=new,
            since=now.isoformat(),
            streak_status=observed,
            streak=0,
            reason=why,
            recent=kept,
        )
        return moved, Transition(state.url, state.reported, new, why, state.since, recent)

    if state.reported is Status.FLAPPING:
        if failed and streak >= threshold:
            return report(Status.DOWN, reason)
        if window.failures == 0 or (len(recent) >= window.size and FAILED not in recent):
            return report(observed, reason)  # the window is clean: RECOVERED (or DEGRADED)
        return replace(state, streak_status=observed, streak=streak, recent=recent), None
    flapping = (
        failed
        and window.failures > 0
        and state.reported is not Status.DOWN
        and recent.count(FAILED) >= window.failures
    )
    if observed == state.reported:
        return replace(state, streak_status=observed, streak=0, recent=recent), None
    needed = 1 if observed is Status.UP else threshold
    if streak < needed:
        if flapping:
            return report(Status.FLAPPING, reason)
        return replace(state, streak_status=observed, streak=streak, reason=reason, recent=recent), None
    return report(observed, reason)


def check_order(sites: list[Site], not_checked_last_run: set[str]) -> list[Site]:
    """The sites the last run did not check first (in the list's order), then the others: when
    every run checks at least half of the list, no site waits more than one run."""
    first = [s for s in sites if site_key(s.url) in not_checked_last_run]
    return first + [s for s in sites if site_key(s.url) not in not_checked_last_run]


def site_key(url: str) -> str:
    """A short stable key for a site's URL (the order item stores these, not URLs)."""
    return hashlib.sha256(url.encode()).hexdigest()[:12]
