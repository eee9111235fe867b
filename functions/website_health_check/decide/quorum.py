"""Checks from several regions with a quorum (WebsiteHealthCheckRegions, WebsiteHealthCheckQuorum),
on plain data: no AWS, no clock (``now`` is given).

The same checker runs in every listed region. The first listed is the **home**: it reads the
site list, publishes it for the others, and alone keeps the sites' states and mails. Every
other region (a **member**) checks the published list and stores its results, one record per
region with the time of its check (its own clock), in the home's results table.

The home judges each site from the fresh results - its own check of this run and each member's
last one, if it is at most ``window`` old (two schedule periods: a member's last run is never
more than one period behind):

- **failing regions** >= quorum: the site is DOWN for this check ("DOWN from eu-west-1 and
  us-east-1; up from ap-southeast-2"), and the usual rules (checks in a row, flapping) decide
  when that is mailed;
- fewer: the site answers; a failure seen from fewer regions is that region's path, not the
  site (the decision log names it).

A region with no fresh result is **silent**: it counts neither way, and it is not a quorum
change nobody hears about - :func:`silent_regions` names it, the run sends ``RegionsSilent``
and its alarm mails. A member's record that cannot be read, or dated ahead of the home's clock,
counts as silent too: nothing is guessed from it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from website_health_check.decide import CheckResult, Status

# A member's record dated this far ahead of the home's clock is not believed (clocks of AWS
# regions agree to well under a second; more is a forged or broken record).
MAX_CLOCK_AHEAD = timedelta(seconds=60)
REASON_CHARS = 160  # of a member's reason, as its record keeps it


class QuorumConfigError(ValueError):
    """The regions or the quorum cannot work (the message says why)."""


@dataclass(frozen=True)
class Regions:
    """The checking regions, the home first, and how many must fail a site for DOWN."""

    names: tuple[str, ...]
    quorum: int

    def __post_init__(self) -> None:
        if len(set(self.names)) != len(self.names):
            raise QuorumConfigError(f"a region is listed twice in {', '.join(self.names)}")
        if self.names and not 1 <= self.quorum <= len(self.names):
            raise QuorumConfigError(
                f"quorum {self.quorum} must be between 1 and the {len(self.names)} regions listed"
            )

    @property
    def home(self) -> str:
        return self.names[0] if self.names else ""

    @property
    def members(self) -> tuple[str, ...]:
        return self.names[1:]

    def role(self, region: str) -> str:
        """alone (no regions listed: one region checks and decides), home, member, or
        outside (listed regions, this one not among them: it checks nothing)."""
        if not self.names:
            return "alone"
        if region == self.home:
            return "home"
        return "member" if region in self.names else "outside"


@dataclass(frozen=True)
class Seen:
    """One region's result for one site: failed (DOWN) or not, and why."""

    failed: bool
    status: Status
    reason: str


@dataclass(frozen=True)
class RegionReport:
    """A member's last record: when it checked (its clock), and what it saw per site URL."""

    region: str
    checked_at: datetime
    results: Mapping[str, Seen]


def result_record(results: Sequence[CheckResult]) -> dict[str, list[str]]:
    """What a member stores of its checks: url -> [status, reason] (the reason cut short)."""
    return {r.url: [r.status.value, r.reason[:REASON_CHARS]] for r in results}


def read_report(region: str, checked_at: str, results: Any) -> RegionReport | None:
    """A member's record as stored, or None when it cannot be read (counted silent)."""
    try:
        when = datetime.fromisoformat(checked_at)
        if when.tzinfo is None or not isinstance(results, dict):
            return None
        seen = {
            str(url): Seen(Status(v[0]) is Status.DOWN, Status(v[0]), str(v[1]))
            for url, v in results.items()
            if isinstance(v, list) and len(v) == 2
        }
    except (ValueError, TypeError, KeyError):
        return None
    return RegionReport(region, when, seen)


def fresh(report: RegionReport | None, now: datetime, window: timedelta) -> bool:
    return report is not None and now - window <= report.checked_at <= now + MAX_CLOCK_AHEAD


def silent_regions(
    regions: Regions, reports: Mapping[str, RegionReport | None], now: datetime, window: timedelta
) -> list[str]:
    """The members (in the list's order) without a fresh, readable record."""
    return [r for r in regions.members if not fresh(reports.get(r), now, window)]


def say(names: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def combine(
    own: CheckResult,
    regions: Regions,
    reports: Mapping[str, RegionReport | None],
    now: datetime,
    window: timedelta,
) -> tuple[CheckResult | None, dict[str, Any]]:
    """The site's result for this run from every region's fresh check (``own`` is the home's),
    or None when the regions without a result could still tip it (no verdict: the state waits),
    and the decision's facts (failing, up, silent regions) for the log."""
    seen: dict[str, Seen] = {regions.home: Seen(own.status is Status.DOWN, own.status, own.reason)}
    silent: list[str] = []
    for region in regions.members:
        report = reports.get(region)
        found = report.results.get(own.url) if report is not None and fresh(report, now, window) else None
        if found is None:
            silent.append(region)
        else:
            seen[region] = found
    ordered = [r for r in regions.names if r in seen]
    failing = [r for r in ordered if seen[r].failed]
    up = [r for r in ordered if not seen[r].failed]
    facts: dict[str, Any] = {"failing_from": failing, "up_from": up, "no_result_from": silent}
    if len(failing) >= regions.quorum:
        words = f"DOWN from {say(failing)}"
        if up:
            words += f"; up from {say(up)}"
        if silent:
            words += f"; no result from {say(silent)}"
        why = "; ".join(f"{r}: {seen[r].reason}" for r in failing)
        return CheckResult(own.url, Status.DOWN, f"{words} ({why})", own.category), facts
    if len(failing) + len(silent) >= regions.quorum:
        return None, facts  # the silent regions decide it: no verdict (RegionsSilent tells)
    if not own.available:
        # The home's own path fails, too few regions agree: judged by a region that reaches it.
        first = up[0]
        reason = f"{seen[first].reason} (from {first}; failing from {say(failing)} only)"
        return CheckResult(own.url, seen[first].status, reason, "ok"), facts
    if failing:
        return CheckResult(
            own.url,
            own.status,
            f"{own.reason} (failing from {say(failing)} only)",
            own.category,
            own.http_status,
            own.latency_ms,
            own.cert_days_left,
        ), facts
    return own, facts
