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
import json
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aws_lambda_powertools import Logger

from autopilot.runner import Context, Counts, Plan, Run
from website_health_check import service, store
from website_health_check.config import Config
from website_health_check.decide import (
    CheckResult,
    Probe,
    Site,
    SiteConfigError,
    Status,
    advance,
    check_order,
    classify,
    classify_heartbeat,
    parse_site_lists,
    quorum,
    site_key,
)
from website_health_check.event import Trigger

logger = Logger(child=True)


def plan(run: Run[Config, Trigger]) -> Plan:
    """Gather and decide, as this region's part says (decide/quorum.py): alone or home (check,
    judge, keep states, mail), member (check the home's list, store results), outside (none)."""
    config = run.config
    role = config.regions.role(run.common.region)
    if role == "member":
        return _member_plan(run)
    if role == "outside":
        logger.info(
            "not one of the checking regions: nothing to check here", extra={"regions": config.regions.names}
        )
        return Plan(
            None, Counts(), [{"decision": "not a checking region", "regions": list(config.regions.names)}]
        )
    return _plan(run, home=role == "home")


def _plan(run: Run[Config, Trigger], home: bool) -> Plan:
    """Gather (site lists, states, probes) and decide; no change. Calls: 1 GetParameter + 1
    GetParametersByPath (per 10 parameters under the list's) + 1 Scan page (one per 1 MB of
    states: thousands of sites), and one probe per site (+ 1 BatchGetItem at the home of
    several regions)."""
    config = run.config
    lists = service.site_lists(config.sites_parameter)
    items = store.load(config.state_table)
    regional = store.load_regional(config.results_table, config.regions.members) if home else {}
    token = uuid.uuid4().hex[:16]
    known_error = items.get(store.CONFIG_ITEM)
    try:
        sites = parse_site_lists(lists)
    except SiteConfigError as err:
        return _bad_site_list(config, err, lists, known_error, token)

    web = [s for s in sites if s.kind == "web"]
    order_item = items.get(store.ORDER_ITEM)
    ordered = check_order(web, store.not_checked(order_item))
    probes = service.probe_all(ordered, run.deadline, run.now)
    checked_urls = {site.url for site, _ in probes}
    unchecked = [s for s in web if s.url not in checked_urls]
    position = {s.url: i for i, s in enumerate(sites)}
    probes.sort(key=lambda pair: position[pair[0].url])
    checked = [(site, classify(site, probe, config.cert_warning_days)) for site, probe in probes]
    if config.per_site_metrics:
        service.emit_site_metrics([result for _, result in checked])  # this region's own view
    by_region: dict[str, dict[str, Any]] = {}
    silent: list[str] = []
    if home:
        checked, by_region, silent = _judge_by_regions(checked, regional, config, run.now)
    beats, provision = _heartbeats([s for s in sites if s.kind == "heartbeat"], items, config, run.now)
    checked += beats
    results = [result for _, result in checked]
    writes: list[dict[str, Any]] = []
    decisions: list[dict[str, Any]] = [
        {"decision": "heartbeat URL to make", "heartbeat": ident} for ident in provision
    ]
    reported: dict[str, Status] = {s.url: store.to_state(items.get(s.url), s.url).reported for s in sites}
    for site, result in checked:
        item = items.get(site.url)
        before = store.to_state(item, site.url)
        # A heartbeat has no blips: one missed period (+ grace) is DOWN.
        threshold = 1 if site.kind == "heartbeat" else config.failures_before_down
        after, transition = advance(before, result.status, result.reason, threshold, run.now, config.flapping)
        reported[site.url] = after.reported
        decisions.append(
            {
                "decision": "site checked",
                "url": result.url,
                "status": result.status.value,
                "reason": result.reason,
                "category": result.category,
                "latency_ms": result.latency_ms,
                "cert_days_left": result.cert_days_left,
                "reported": after.reported.value,
                "recent": after.recent or None,
                "transition": transition.kind if transition else None,
                **by_region.get(site.url, {}),
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
                    "recent": transition.recent,
                },
                "now": result.reason,  # this check's own words (a RECOVERED mail says them)
            }
        )

    extra = _numbers(config, reported, unchecked, results)
    if home:
        extra["RegionsSilent"] = len(silent)
        decisions += [
            {"decision": "verdict withheld: regions without a result could tip it", "url": url, **facts}
            for url, facts in by_region.items()
            if facts.get("verdict") is False
        ]
    counts = Counts(checked=len(results), skipped=len(unchecked), extra=extra)
    # The list is fine again: forget the complaint about the old one (so a new mistake mails).
    forget = store.version(known_error) if known_error is not None else None
    order = _order_change(order_item, unchecked, token)
    publish = _publish_change(lists, regional.get(store.SITES), run.now) if home else None
    if not writes and forget is None and order is None and not provision and publish is None:
        return Plan(None, counts, decisions)
    intent = {
        "kind": "checks",
        "token": token,
        "at": run.now.isoformat(),
        "failures_before_down": config.failures_before_down,
        "flapping": {"failures": config.flapping.failures, "size": config.flapping.size},
        "writes": writes,
        "forget_site_list_error": forget,
        "order": order,
        "provision": provision,  # heartbeat ids whose URL is to be made (never a token)
        "publish": publish,  # the site list for the member regions, when it changed
    }
    return Plan(intent, counts, decisions)


def _numbers(
    config: Config, reported: Mapping[str, Status], unchecked: list[Site], results: list[CheckResult]
) -> dict[str, float]:
    """The run's numbers: the alarms' states, and the nearest certificate expiry for its log."""
    cert_days = [r.cert_days_left for r in results if r.cert_days_left is not None]
    extra: dict[str, float] = {
        "SitesDown": sum(status in (Status.DOWN, Status.FLAPPING) for status in reported.values()),
        "SitesNotChecked": len(unchecked),
        # The certificate alarm's metric: sent while one expires within the warning (sites
        # whose certificate could not be read are DOWN or DEGRADED by their check).
        "CertificatesExpiring": sum(days < config.cert_warning_days for days in cert_days),
    }
    if cert_days:
        extra["CertificateDaysLeftMin"] = min(cert_days)  # in the run's log line
    return extra


def _judge_by_regions(
    checked: list[tuple[Site, CheckResult]],
    regional: Mapping[str, Mapping[str, Any]],
    config: Config,
    now: datetime,
) -> tuple[list[tuple[Site, CheckResult]], dict[str, dict[str, Any]], list[str]]:
    """The home's web checks judged with the members' fresh results (decide/quorum.py): the
    judged ones, each site's regions (for its decision line; ``verdict`` False when withheld)
    and the silent members. Heartbeats are the home's alone."""
    reports: dict[str, quorum.RegionReport | None] = {}
    for member in config.regions.members:
        item = regional.get(store.RESULT + member)
        stored = store.region_results(item)
        reports[member] = quorum.read_report(member, *stored) if stored else None
        if item is not None and reports[member] is None:
            logger.error("a region's result record cannot be read; counted silent", extra={"region": member})
    silent = quorum.silent_regions(config.regions, reports, now, config.quorum_window)
    if silent:
        logger.warning(
            "regions without a fresh result: a DOWN needs the quorum from the others",
            extra={"silent": silent, "window_s": config.quorum_window.total_seconds()},
        )
    judged: list[tuple[Site, CheckResult]] = []
    by_region: dict[str, dict[str, Any]] = {}
    for site, own in checked:
        if site.kind != "web":
            judged.append((site, own))
            continue
        result, facts = quorum.combine(own, config.regions, reports, now, config.quorum_window)
        by_region[site.url] = {**facts, "verdict": result is not None}
        if result is not None:
            judged.append((site, result))
    return judged, by_region, silent


def _publish_change(
    lists: list[tuple[str, str]], item: Mapping[str, Any] | None, now: datetime
) -> dict[str, Any] | None:
    """The published site list's new record when the home's list is not the one published."""
    digest, old_version = store.published(item)
    if digest == store.lists_digest(lists):
        return None
    return store.publish_record(lists, old_version, now)


def _member_plan(run: Run[Config, Trigger]) -> Plan:
    """A member region: check the site list the home published and store the results in the
    home's table for its verdict (no state, no mail here). Calls: 1 GetItem (home region) and
    one probe per web site; act: 1 PutItem (home region)."""
    config, home = run.config, run.config.regions.home
    try:
        found = store.read_published(config.results_table, home)
    except ValueError as err:  # a damaged record: nothing is guessed from it
        logger.error("the home region's published site list cannot be read", extra={"error": str(err)})
        return Plan(None, Counts(failed=1), [{"decision": "published site list unreadable", "home": home}])
    if found is None:
        logger.warning(
            "the home region has published no site list yet: nothing to check", extra={"home": home}
        )
        return Plan(None, Counts(), [{"decision": "no site list from the home region", "home": home}])
    digest, lists = found
    try:
        web = [s for s in parse_site_lists(lists) if s.kind == "web"]
    except SiteConfigError as err:  # the home checks it before publishing: a damaged record
        logger.error("the home region's published site list is malformed", extra={"problems": err.problems})
        return Plan(None, Counts(failed=1), [{"decision": "published site list malformed", "home": home}])
    probes: list[tuple[Site, Probe]] = service.probe_all(web, run.deadline, run.now)
    results = [classify(site, probe, config.cert_warning_days) for site, probe in probes]
    if config.per_site_metrics:
        service.emit_site_metrics(results)
    record = store.result_record(run.common.region, run.now, digest, quorum.result_record(results))
    decisions = [
        {"decision": "site checked", "url": r.url, "status": r.status.value, "reason": r.reason}
        for r in results
    ]
    skipped = len(web) - len(results)
    counts = Counts(checked=len(results), skipped=skipped, extra={"SitesNotChecked": skipped})
    intent = {"kind": "regional_result", "token": uuid.uuid4().hex[:16], "home": home, "record": record}
    return Plan(intent, counts, decisions)


def _heartbeats(
    heartbeats: list[Site], items: Mapping[str, Mapping[str, Any]], config: Config, now: datetime
) -> tuple[list[tuple[Site, CheckResult]], list[str]]:
    """Each heartbeat judged by its ping item (read with the states: no call of its own), and
    the ids of those that have no URL yet (made by ``act``; judged from then on)."""
    judged: list[tuple[Site, CheckResult]] = []
    provision: list[str] = []
    for site in heartbeats:
        made, last = store.ping_times(items.get(store.ping_key(site.heartbeat_id)))
        if made is None:
            if config.heartbeat_url and config.heartbeat_parameters:
                provision.append(site.heartbeat_id)
            else:
                logger.error(
                    "heartbeat listed but no heartbeat function configured", extra={"site": site.url}
                )
            continue
        judged.append((site, classify_heartbeat(site, last, made, now)))
    return judged, provision


def _order_change(item: Mapping[str, Any] | None, unchecked: list[Site], token: str) -> dict[str, Any] | None:
    """The write that makes the next run check ``unchecked`` first: the order item's new record,
    or its deletion once every site was checked; None when it stays as it is."""
    keys = {site_key(s.url) for s in unchecked}
    if keys == store.not_checked(item):
        return None
    if not keys:
        return {"forget": store.version(item)}
    return {"record": store.order_record(sorted(keys), store.version(item), token, store.writers(item))}


def act(ctx: Context[Config], intent: Mapping[str, Any]) -> dict[str, Any]:
    """Store the planned states, idempotently. Calls: one conditional PutItem per planned
    write (+ 1 DeleteItem when a fixed site list's old complaint is forgotten). Repeating it
    on the same intent (``ctx.resumed``) writes nothing twice: its own earlier writes come
    back as ``already``."""
    table, token = ctx.config.state_table, str(intent["token"])
    if intent.get("kind") == "regional_result":
        return {"stored": store.put_result(ctx.config.results_table, str(intent["home"]), intent["record"])}
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
    made = []
    for ident in intent.get("provision", []):  # the token goes from SSM to its hash, nowhere else
        token = service.heartbeat_token(ctx.config.heartbeat_parameters, ctx.config.heartbeat_url, str(ident))
        if store.provision_ping(table, str(ident), token, ctx.now):
            made.append(str(ident))
    forgotten = False
    if intent.get("forget_site_list_error") is not None:
        forgotten = store.forget(table, store.CONFIG_ITEM, int(intent["forget_site_list_error"]))
    order = intent.get("order") or {}
    if "record" in order:
        done["order"] = [store.write(table, order["record"], token)]
    elif "forget" in order:
        done["order"] = [
            "written" if store.forget(table, store.ORDER_ITEM, int(order["forget"])) else "conflict"
        ]
    published = bool(intent.get("publish")) and store.publish_sites(
        ctx.config.results_table, intent["publish"]
    )
    return {**done, "forgot_site_list_error": forgotten, "heartbeats_made": made, "published": published}


def _bad_site_list(
    config: Config,
    err: SiteConfigError,
    lists: list[tuple[str, str]],
    known: Mapping[str, Any] | None,
    token: str,
) -> Plan:
    """No site is checked. The first run that sees this exact text mails the problems; the
    item remembering its fingerprint keeps the following runs quiet until the text changes."""
    logger.error(
        "site list is malformed; no site was checked",
        extra={"parameter": config.sites_parameter, "problems": err.problems},
    )
    # One parameter: its text's digest, as before lists could be split (no mail again on upgrade).
    text = lists[0][1] if len(lists) == 1 else json.dumps(lists)
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
