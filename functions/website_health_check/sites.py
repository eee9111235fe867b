"""The site list: parsed and validated from the SSM parameter's text (pure).

Two forms are accepted:
- comma- or newline-separated URLs: ``https://example.com, https://api.example.com/health``
- a JSON list of objects, one per site::

    [{"url": "https://example.com", "expect_text": "Welcome", "status": "200-299",
      "timeout": 5, "max_latency_ms": 1500, "name": "shop"}]

Every problem is collected and reported together, naming the site and the field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

DEFAULT_TIMEOUT = 10.0
MAX_TIMEOUT = 60.0
MAX_SITES = 500
_FIELDS = {"url", "name", "expect_text", "status", "timeout", "max_latency_ms"}
_RANGE = re.compile(r"^\s*(\d{3})\s*(?:-\s*(\d{3}))?\s*$")


class SiteConfigError(ValueError):
    """The site list cannot be used; ``problems`` says every reason."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Site:
    url: str
    name: str
    expect_text: str | None = None
    status_ranges: tuple[tuple[int, int], ...] = ((200, 399),)
    timeout: float = DEFAULT_TIMEOUT
    max_latency_ms: int | None = None

    def accepts(self, status: int) -> bool:
        return any(low <= status <= high for low, high in self.status_ranges)

    @property
    def accepted(self) -> str:
        return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in self.status_ranges)


def parse_sites(text: str) -> list[Site]:
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
    if len(entries) > MAX_SITES:
        problems.append(f"{len(entries)} sites listed; at most {MAX_SITES} per stack")
    for index, entry in enumerate(entries, start=1):
        site = _parse_entry(entry, f"site {index}", problems)
        if site:
            sites.append(site)
    seen: set[str] = set()
    for site in sites:
        if site.url in seen:
            problems.append(f"{site.url} is listed twice")
        seen.add(site.url)
    if problems:
        raise SiteConfigError(problems)
    return sites


def _parse_entry(entry: Any, where: str, problems: list[str]) -> Site | None:
    if isinstance(entry, str):
        entry = {"url": entry}
    if not isinstance(entry, dict):
        problems.append(f"{where} must be a URL or an object, not {type(entry).__name__}")
        return None
    before = len(problems)
    unknown = set(entry) - _FIELDS
    if unknown:
        problems.append(f"{where} has unknown field(s) {', '.join(sorted(unknown))}")
    url = entry.get("url")
    if not isinstance(url, str) or not _valid_url(url):
        problems.append(f"{where}: url {url!r} is not an http:// or https:// URL with a host")
        return None
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
        name=name.strip(),
        expect_text=expect,
        status_ranges=ranges,
        timeout=float(timeout),
        max_latency_ms=latency,
    )


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
