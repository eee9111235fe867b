"""website_health_check from several regions: 10 sites checked every 5 minutes from 3 regions
(the home eu-west-1, members us-east-1 and ap-southeast-2, quorum 2) - the calls of each
region's steady-state run through the real handler (moto, in-process; the sites local, each
answering after 200 ms) and the month's cost next to CloudWatch Synthetics and Route 53.

    PYTHONPATH=layers/autopilot/python:functions:. .venv/bin/python -m bench.health_regions

prints the figures; `make bench` puts them in docs/benchmarks.md.

Minimum calls per run (the API's, whatever the number of sites S up to 2,000):
- home: what one region alone makes (1 GetParametersByPath, 1 Scan, the runner's Query, claim
  PutItem + UpdateItem) + 1 BatchGetItem (the published list and every member's results: one
  call for up to 100 keys);
- member: 1 GetItem (the home's published list, in the home region), the runner's Query and
  claim (PutItem + UpdateItem), and its result: the outbox entry (PutItem + UpdateItem +
  DeleteItem: record before acting) + 1 PutItem in the home region. Its results are one item
  per run, whatever S.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from collections import Counter
from typing import Any
from unittest import mock

import boto3

from bench import cost, prices
from bench.common import STACK, LambdaContext, measured, metrics_sent, offline_environment, sandbox
from bench.health_check import _event, _start_sites, _table

HOME, MEMBERS = "eu-west-1", ("us-east-1", "ap-southeast-2")
REGIONS = (HOME, *MEMBERS)
SITES = 10
RUNS_A_MONTH = cost.MONTH_MINUTES / 5
# Assumption: a member's two calls to the home region cross an ocean (ap-southeast-2 to
# eu-west-1 is ~250 ms round trip); same-region calls as bench.cost.
CROSS_REGION_ROUND_TRIP = 0.3
CROSS_REGION_GB = 0.02  # inter-region data transfer, USD per GB (list price, most region pairs)
RESULTS = "ops-autopilot-health-results"


def _tables(region: str, home: bool) -> dict[str, str]:
    """One region's stack in the sandbox: its outbox, state table and topic (the home's results
    table too)."""
    if home:
        _table(RESULTS, ["pk"], region)
    return {
        "OUTBOX_TABLE": _table("bench-outbox", ["pk", "sk"], region),
        "STATE_TABLE": _table("bench-health", ["url"], region),
        "TOPIC_ARN": boto3.client("sns", region_name=region).create_topic(Name="bench")["TopicArn"],
    }


def measure() -> dict[str, Any]:
    """Per region: its steady-state run's calls by operation (and which went to the home
    region), wall seconds, metrics sent, the results item's size."""
    from autopilot import aws
    from website_health_check import app

    process, port = _start_sites()
    figures: dict[str, Any] = {}
    try:
        with sandbox():
            parameter = "/bench/website-health-check/sites"
            urls = [{"url": f"http://127.0.0.1:{port}/s{i}", "expect_text": "Welcome"} for i in range(SITES)]
            boto3.client("ssm", region_name=HOME).put_parameter(
                Name=parameter, Type="String", Value=json.dumps(urls)
            )
            stacks = {r: _tables(r, r == HOME) for r in REGIONS}
            common = {
                "STACK_NAME": STACK,
                "DRY_RUN": "false",
                "OWNER_TAG_KEY": "Owner",
                "SITES_PARAMETER": parameter,
                "FAILURES_BEFORE_DOWN": "2",
                "CERT_WARNING_DAYS": "14",
                "SCHEDULE": "rate(5 minutes)",
                "HEALTH_CHECK_REGIONS": ",".join(REGIONS),
                "HEALTH_CHECK_QUORUM": "2",
                "RESULTS_TABLE": RESULTS,
            }

            def run(region: str) -> tuple[dict[str, Any], Counter[str], Counter[str], float]:
                env = {**common, **stacks[region], "AWS_REGION": region, "AWS_DEFAULT_REGION": region}
                aws.reset_clients()
                with (
                    mock.patch.dict(os.environ, env),
                    contextlib.redirect_stdout(io.StringIO()),
                    measured() as (calls, elapsed),
                ):
                    result = app.lambda_handler(_event(region), LambdaContext(120_000))
                # A member's calls to the home region are the ones on the home's results table.
                remote = Counter(
                    f"{c.service}.{c.operation}"
                    for c in calls.calls
                    if region != HOME and c.params.get("TableName") == RESULTS
                )
                return result, calls.by_operation(), remote, elapsed[0]

            for _ in range(2):  # the first round publishes the list and fills the results
                for region in REGIONS:
                    run(region)
            for region in REGIONS:
                result, calls, remote, seconds = run(region)
                figures[region] = {
                    "calls": dict(sorted(calls.items())),
                    "to_home": dict(sorted(remote.items())),
                    "seconds": round(seconds, 3),
                    "metrics_sent": metrics_sent(result),
                    "checked": result["Checked"],
                }
            item = boto3.client("dynamodb", region_name=HOME).get_item(
                TableName=RESULTS, Key={"pk": {"S": f"result#{MEMBERS[0]}"}}
            )["Item"]
            figures["result_item_bytes"] = sum(len(k) + len(next(iter(v.values()))) for k, v in item.items())
    finally:
        process.terminate()
    return figures


def _alarms() -> tuple[int, int]:
    """The health check's own alarms in (the home, a member): template.yaml's WebsiteHealthCheck*
    alarms at the default parameters, the home's RegionsSilent alarm only at the home."""
    from samcli.yamlhelper import yaml_parse

    from bench.common import ROOT
    from tools.render import expand_foreach

    resources = expand_foreach(yaml_parse((ROOT / "template.yaml").read_text())["Resources"])
    names = [
        n
        for n, r in resources.items()
        if n.startswith("WebsiteHealthCheck") and r["Type"] == "AWS::CloudWatch::Alarm"
    ]
    home = [
        n
        for n in names
        if resources[n].get("Condition")
        in (None, "WebsiteHealthCheckSilenceAlarmOn", "WebsiteHealthCheckHomeRegion")
    ]
    member = [n for n in home if resources[n].get("Condition") != "WebsiteHealthCheckHomeRegion"]
    return len(home), len(member)


def monthly(figures: dict[str, Any]) -> dict[str, Any]:
    """Dollars a month, ours per region and in total, and the two AWS services that check from
    several places."""
    home_alarms, member_alarms = _alarms()
    ours: dict[str, float] = {}
    for region in REGIONS:
        f = figures[region]
        calls = sum(f["calls"].values())
        remote = sum(f["to_home"].values())
        seconds = f["seconds"] + (calls - remote) * cost.API_ROUND_TRIP + remote * CROSS_REGION_ROUND_TRIP
        writes = sum(
            v for k, v in f["calls"].items() if k.split(".")[1] in ("PutItem", "UpdateItem", "DeleteItem")
        )
        reads = sum(v for k, v in f["calls"].items() if k.split(".")[1] in ("Scan", "Query", "GetItem"))
        reads += 1 + len(MEMBERS) if "dynamodb.BatchGetItem" in f["calls"] else 0  # 1 RRU per item read
        line = cost.Line(
            f"website_health_check {region}",
            RUNS_A_MONTH,
            seconds,
            calls,
            metrics_sent=f["metrics_sent"],
            memory_gb=0.5,
            ddb_writes=writes,
            ddb_reads=reads,
        )
        transfer = (
            RUNS_A_MONTH * figures["result_item_bytes"] / 1e9 * CROSS_REGION_GB if region in MEMBERS else 0.0
        )
        alarms = (home_alarms if region == HOME else member_alarms) * prices.CW_ALARM_MONTH
        ours[region] = line.lambda_cost + line.other_cost + line.metric_cost + transfer + alarms
    route53_each = (
        prices.ROUTE53_HEALTH_CHECK_NON_AWS_MONTH + 2 * prices.ROUTE53_OPTIONAL_FEATURE_NON_AWS_MONTH
    )
    return {
        "ours": {k: round(v, 2) for k, v in ours.items()},
        "ours_total": round(sum(ours.values()), 2),
        "alarms": {"home": home_alarms, "member": member_alarms},
        "synthetics": round(SITES * len(REGIONS) * RUNS_A_MONTH * prices.SYNTHETICS_CANARY_RUN, 2),
        "route53": round(SITES * route53_each, 2),
    }


def lines(figures: dict[str, Any]) -> list[str]:
    """The section of docs/benchmarks.md."""
    money = monthly(figures)
    out = [
        "## Health checks from three regions (quorum 2)",
        "",
        f"{SITES} sites every 5 minutes from {', '.join(REGIONS)} (the first the home), steady state, "
        "through the real handler in each region (`python -m bench.health_regions`). Calls are one "
        "run's; a member's results are one item a run whatever the number of sites "
        f"({figures['result_item_bytes']:,} bytes here).",
        "",
        "| Region | Calls a run (of them to the home region) | Metrics sent | USD a month |",
        "|---|---|---|---|",
    ]
    for region in REGIONS:
        f = figures[region]
        ops = ", ".join(f"{k} {v}" for k, v in f["calls"].items())
        remote = sum(f["to_home"].values())
        out.append(
            f"| {region}{' (home)' if region == HOME else ''} | {sum(f['calls'].values())}: {ops} "
            f"({remote}) | {f['metrics_sent']} | {money['ours'][region]:.2f} |"
        )
    out += [
        f"| **ops-autopilot, 3 regions** | | | **{money['ours_total']:.2f}** |",
        "",
        "| Alternative, the same 10 sites from several places | USD a month |",
        "|---|---|",
        "| CloudWatch Synthetics: 1 canary per site in each of the 3 regions, every 5 min | "
        f"{money['synthetics']:.2f} |",
        f"| Route 53 health checks (non-AWS endpoint + HTTPS + string matching) | {money['route53']:.2f} |",
        "",
        "Each region's figure: Lambda (512 MB arm64; billed seconds = measured in-process time + "
        f"same-region calls x {cost.API_ROUND_TRIP} s + calls to the home x {CROSS_REGION_ROUND_TRIP} s), "
        "DynamoDB requests, the custom metrics it sends, the inter-region transfer of its results "
        f"(${CROSS_REGION_GB}/GB) and the health check's own alarms ({money['alarms']['home']} at the "
        f"home with RegionsSilent, {money['alarms']['member']} at a member, ${prices.CW_ALARM_MONTH} each) - "
        "the alarms are most of it. Synthetics' own Lambda and S3 charges come on top of its run "
        "price. Route 53 checks every 30 s from at least 3 of its locations and is the cheapest "
        'way to ask "is it up from several places", but reaches no private endpoint, reads no '
        "TLS expiry and mails through alarms per check.",
    ]
    return out


def main() -> None:
    offline_environment()
    figures = measure()
    print(json.dumps(figures, indent=2))
    print(json.dumps(monthly(figures), indent=2))
    print("\n".join(lines(figures)))
    assert all(figures[r]["checked"] == SITES for r in REGIONS), "every region checked every site"
    assert math.isfinite(figures["result_item_bytes"])


if __name__ == "__main__":
    main()
