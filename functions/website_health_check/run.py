"""One health-check run for autopilot.runner: ``plan`` checks and decides, ``act`` writes.

``plan`` (changes nothing): reads the site list (1 ssm:GetParameter) and every site's state
(1 dynamodb:Scan), probes every site concurrently within the time budget (no AWS call),
classifies each answer and advances each site's state (decide.py). The intent is every
state write the checks call for - the transitions (DOWN, DEGRADED, RECOVERED) and the
streaks that are still building - each as the exact item to store, with a token for this
run. None when nothing changed: a healthy steady-state run costs those 2 calls and the
runner's 3, and records nothing.

The runner records the intent *before* ``act`` writes anything, so a run killed between two
state writes is finished by the next invocation (``ctx.resumed``) and its transitions are
mailed, once: ``act`` repeats each write conditionally (one PutItem per site); a site whose
item already carries this run's token counts as done, one changed by another run is left to
that run (which mails it). ``report.mail`` then tells about the transitions ``act`` applied.

Dry run (``ctx.dry_run``) changes nothing here: the health check changes nothing in the
account, and its state table is its own memory (like the runner's outbox). Without it, a
site would never reach its second failed check in a row and the check would go mute.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools import Logger

from autopilot.runner import Context, Counts, Plan, Run
from website_health_check import service, store
from website_health_check.config import Config
from website_health_check.decide import SiteConfigError, Status, advance, classify, parse_sites
from website_health_check.event import Trigger

logger = Logger(child=True)


def plan(run: Run[Config, Trigger]) -> Plan:
    """Gather (site list, states, probes) and decide; no change. Calls: 1 GetParameter + 1
    Scan page (one per 1 MB of states: a few thousand sites), and one probe per site."""
    config = run.config
    text = service.site_list(config.sites_parameter)
    items = store.load(config.state_table)
    token = uuid.uuid4().hex[:16]
    known_error = items.get(store.CONFIG_ITEM)
    try:
        sites = parse_sites(text)
    except SiteConfigError as err:
        return _bad_site_list(config, err, text, known_error, token)

    probes = service.probe_all(sites, run.deadline, run.now)
    results = [classify(site, probe, config.cert_warning_days) for site, probe in probes]
    service.emit_site_metrics(results)
    writes: list[dict[str, Any]] = []
    decisions: list[dict[str, Any]] = []
    for (site, _), result in zip(probes, results, strict=True):
        item = items.get(site.url)
        before = store.to_state(item, site.url)
        after, transition = advance(
            before, result.status, result.reason, config.failures_before_down, run.now
        )
        decisions.append(
            {
                "decision": "site checked",
                "url": result.url,
                "status": result.status.value,
                "reason": result.reason,
                "category": result.category,
                "latency_ms": result.latency_ms,
                "cert_days_left": result.cert_days_left,
                "transition": transition.kind if transition else None,
            }
        )
        if after == before:
            continue
        writes.append(
            {
                "url": site.url,
                "site_name": site.name,
                "record": store.state_record(after, token, store.writers(item)),
                "transition": None
                if transition is None
                else {
                    "kind": transition.kind,
                    "old": transition.old.value,
                    "reason": transition.reason,
                    "down_since": transition.down_since,
                },
                "now": result.reason,  # this check's own words (a RECOVERED mail says them)
            }
        )

    cert_days = [r.cert_days_left for r in results if r.cert_days_left is not None]
    extra: dict[str, float] = {"FailingSites": sum(r.status is Status.DOWN for r in results)}
    if cert_days:
        extra["CertificateDaysLeftMin"] = min(cert_days)
    counts = Counts(checked=len(results), skipped=len(sites) - len(results), extra=extra)
    # The list is fine again: forget the complaint about the old one (so a new mistake mails).
    forget = store.version(known_error) if known_error is not None else None
    if not writes and forget is None:
        return Plan(None, counts, decisions)
    intent = {
        "kind": "checks",
        "token": token,
        "at": run.now.isoformat(),
        "failures_before_down": config.failures_before_down,
        "writes": writes,
        "forget_site_list_error": forget,
    }
    return Plan(intent, counts, decisions)


def act(ctx: Context[Config], intent: Mapping[str, Any]) -> dict[str, Any]:
    """Store the planned states, idempotently. Calls: one conditional PutItem per planned
    write (+ 1 DeleteItem when a fixed site list's old complaint is forgotten). Repeating it
    on the same intent (``ctx.resumed``) writes nothing twice: its own earlier writes come
    back as ``already``."""
    table, token = ctx.config.state_table, str(intent["token"])
    if intent.get("kind") == "site_list":
        return {"site_list": store.write(table, intent["record"], token)}
    done: dict[str, list[str]] = {"written": [], "already": [], "conflict": []}
    for write in intent["writes"]:
        outcome = store.write(table, write["record"], token)
        done[outcome].append(write["url"])
        if outcome == "conflict":
            logger.info(
                "state changed by a concurrent run; leaving this site to it", extra={"url": write["url"]}
            )
    forgotten = False
    if intent.get("forget_site_list_error") is not None:
        forgotten = store.forget(table, store.CONFIG_ITEM, int(intent["forget_site_list_error"]))
    return {**done, "forgot_site_list_error": forgotten}


def _bad_site_list(
    config: Config, err: SiteConfigError, text: str, known: Mapping[str, Any] | None, token: str
) -> Plan:
    """No site is checked. The first run that sees this exact text mails the problems; the
    item remembering its fingerprint keeps the following runs quiet until the text changes."""
    logger.error(
        "site list is malformed; no site was checked",
        extra={"parameter": config.sites_parameter, "problems": err.problems},
    )
    fingerprint = hashlib.sha256(text.encode()).hexdigest()
    already_mailed = known is not None and known.get("digest", {}).get("S") == fingerprint
    decisions = [
        {"decision": "site list malformed", "problems": len(err.problems), "mail": not already_mailed}
    ]
    counts = Counts(failed=1)
    if already_mailed:
        return Plan(None, counts, decisions)
    intent = {
        "kind": "site_list",
        "token": token,
        "parameter": config.sites_parameter,
        "problems": err.problems,
        "record": store.config_error_record(fingerprint, store.version(known), token, store.writers(known)),
    }
    return Plan(intent, counts, decisions)
