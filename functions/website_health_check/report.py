"""The health check's mail and numbers, from the recorded intent and what ``act`` did (pure).

One digest per run: the transitions ``act`` applied (written now, or found written by this
same intent's earlier, interrupted attempt), in sections DOWN, FLAPPING, DEGRADED, RECOVERED,
every site named (2,000 fit: a long section lists one line per site). A site
another run changed first is that run's to mail, and a streak still building is not news:
neither appears. A malformed site list gets its own mail, once per distinct text.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from autopilot import console
from autopilot.notify import Digest, Item, Severity, plural
from autopilot.outbox import Mail
from autopilot.runner import Context, Counts
from website_health_check.config import AUTOMATION, Config
from website_health_check.decide import HEARTBEAT

KINDS = ("DOWN", "FLAPPING", "DEGRADED", "RECOVERED")
COMPACT_OVER = 100  # sites in a section; above, one line each (2,000 x ~100 bytes fit a mail)


def mailed(intent: Mapping[str, Any], result: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The planned writes with a transition that ``act`` applied, in the list's order."""
    applied = set(result.get("written", [])) | set(result.get("already", []))
    return [w for w in intent.get("writes", []) if w["transition"] and w["url"] in applied]


def counts(intent: Mapping[str, Any], result: Mapping[str, Any]) -> Counts:
    """Changed: the transitions applied (a malformed list is counted Failed by the plan)."""
    return Counts(changed=len(mailed(intent, result)))


def mail(ctx: Context[Config], intent: Mapping[str, Any], result: Mapping[str, Any]) -> Mail | None:
    if intent.get("kind") == "site_list":
        return _site_list_mail(ctx, intent, result)
    writes = mailed(intent, result)
    if not writes:
        return None
    config, common = ctx.config, ctx.common
    at = datetime.fromisoformat(str(intent["at"]))
    digest = Digest(AUTOMATION, common.stack_name, common.region)
    for kind in KINDS:
        chosen = [w for w in writes if w["transition"]["kind"] == kind]
        if chosen:
            compact = len(chosen) > COMPACT_OVER
            items = [_item(w, intent, at, compact) for w in chosen]
            digest.section(f"{kind} ({len(chosen)})", items, limit=len(items))
    problems = any(w["transition"]["kind"] != "RECOVERED" for w in writes)
    digest.advice = [
        "Open the site and check the reason above." if problems else "Nothing to do: the site answers again.",
        "You get another mail only when a site's state changes again.",
        f"Change the list of sites: edit the SSM parameter {config.sites_parameter} (read every run).",
        f"Function log: {console.log_group(common.region, '/aws/lambda/' + config.function_name)}",
    ]
    if any(str(w["url"]).startswith(HEARTBEAT) for w in writes):
        digest.advice.insert(
            1,
            "A heartbeat is DOWN when its job's ping did not come within its period and grace, UP "
            "again with the next ping; its URL is in SSM, under the stack's heartbeats folder.",
        )
    subject, severity = _subject(writes)
    summary = ", ".join(
        plural(n, "site") + f" {kind}"
        for kind in KINDS
        if (n := sum(w["transition"]["kind"] == kind for w in writes))
    )
    return digest.mail(subject, f"Website health check: {summary}.", severity, now=ctx.now)


def _item(write: Mapping[str, Any], intent: Mapping[str, Any], at: datetime, compact: bool) -> Item:
    t, url, name = write["transition"], write["url"], write["site_name"]
    title = url if name == url else f"{name}: {url}"
    reason = t["reason"] if t["kind"] != "RECOVERED" else f"now: {write['now']}"
    if compact:
        return Item(title=f"{title} - {reason}")
    details = [reason]
    heartbeat = str(url).startswith(HEARTBEAT)
    if t["kind"] == "DOWN" and heartbeat:
        details.append("its job did not ping its URL in time: check that the job runs, and its log")
    elif t["kind"] == "DOWN":
        details.append(f"failed {int(intent['failures_before_down'])} checks in a row")
    if t["kind"] == "FLAPPING":
        recent = str(t.get("recent", ""))
        window = intent.get("flapping", {})
        details.append(
            f"failed {recent.count('x')} of its last {len(recent)} checks, never "
            f"{int(intent['failures_before_down'])} in a row; oldest first: {history(recent)}"
        )
        details.append(
            f"reported RECOVERED after {int(window.get('size', len(recent)))} good checks in a row"
        )
    if t["kind"] == "RECOVERED" and t["down_since"]:
        since = datetime.fromisoformat(t["down_since"])
        details.append(f"was {t['old']} since {since:%Y-%m-%d %H:%M} UTC ({duration(at - since)})")
    return Item(title=title, details=details)


def history(recent: str) -> str:
    """``x.x.`` as ``FAIL ok FAIL ok`` (oldest first)."""
    return " ".join("FAIL" if c == "x" else "ok" for c in recent)


def _subject(writes: list[Mapping[str, Any]]) -> tuple[str, Severity]:
    kinds = [w["transition"]["kind"] for w in writes]
    severity: Severity = (
        "critical" if {"DOWN", "FLAPPING"} & set(kinds) else ("warning" if "DEGRADED" in kinds else "info")
    )
    if len(writes) == 1:
        t = writes[0]["transition"]
        return (
            f"{t['kind']}: {writes[0]['url']}" + (f" - {t['reason']}" if t["kind"] != "RECOVERED" else "")
        ), severity
    tally = [f"{kinds.count(k)} {k}" for k in KINDS if k in kinds]
    return f"{len(writes)} sites changed state: " + ", ".join(tally), severity


def _site_list_mail(
    ctx: Context[Config], intent: Mapping[str, Any], result: Mapping[str, Any]
) -> Mail | None:
    if result.get("site_list") not in ("written", "already"):
        return None  # another run recorded (and mails) this very list first
    problems = list(intent["problems"])
    digest = Digest(AUTOMATION, ctx.common.stack_name, ctx.common.region)
    digest.section("Problems", text=[f"- {p}" for p in problems])
    digest.advice = [
        f"Fix the SSM parameter {intent['parameter']}; the next run uses it. "
        "Formats: comma-separated URLs, or a JSON list (see the README)."
    ]
    return digest.mail(
        f"Site list is malformed: {len(problems)} problem(s), no site checked",
        "The website health check could not read its site list, so no site was checked.",
        "critical",
        now=ctx.now,
    )


def duration(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"
