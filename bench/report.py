"""Render the measurements as docs/benchmarks.md and the calls-versus-fleet-size chart."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from bench import cost, limits, prices
from bench.common import ROOT, Run
from website_health_check.service import MAX_CONCURRENCY

GOAL = 1.10
MARKDOWN = ROOT / "docs" / "benchmarks.md"
CHART = ROOT / "docs" / "benchmarks-calls.png"

# Every run also makes the shared runner's calls (autopilot.runner): 1 Query for unfinished
# work, the claim's PutItem + UpdateItem, and, for a run with an intent, the outbox entry's
# PutItem + UpdateItem + DeleteItem - the price of "record before acting, mark sent after SNS".
RUNNER = "; plus the runner's 3 DynamoDB calls per run (Query, claim PutItem + UpdateItem), 6 when it acts"
FORMULAS = {
    "website_health_check": "1 GetParametersByPath + 1 Scan per run, whatever the number of sites; "
    "PutItem only per site whose state changed, Publish only on a change (0 in a steady state)" + RUNNER,
    "owner_tagger": "per RunInstances event of N instances: ceil(N/1000) DescribeInstances + ceil(3N/1000) "
    "CreateTags (instance + root volume + ENI, one owner); DescribeTags 0 when the event's launch data "
    "answers it" + RUNNER,
    "patch_sweeper": "per sweep of N instances, B = ceil(N/50): ceil(N/1000)+1 DescribeInstances, ceil(N/50) "
    "DescribeInstanceInformation, B SendCommand, B ListCommandInvocations, B DescribeInstancePatchStates, "
    "ceil(B/25) BatchWriteItem (each command's instance ids, an item each), ceil(B/100) BatchGetItem, "
    "2 PutItem, 2B+3 UpdateItem, 1+B GetItem, 1 Publish; the hourly tick between sweeps 2 GetItem" + RUNNER,
    "snapshot_rotator": "per run over V volumes with S managed snapshots, D expired: 1 DescribeImages, "
    "ceil(S/1000) DescribeSnapshots, 1 DescribeInstances, ceil(V/500) DescribeVolumes, V CreateSnapshot "
    "(no batch API for volumes), D DeleteSnapshot (no batch API); the ledger: ceil(bytes/1 MB) Query, "
    "ceil((V + D)/25) BatchWriteItem (25 writes a call, the API's maximum, records and removals together); "
    "calls paced at EC2's refill "
    "(modelled, not slept: docs/benchmarks-snapshot-scale.md for 10,000 volumes)" + RUNNER,
    "idle_stopper": "per run over N running instances, E = N/100 past StopAfter, cap C = 10: ceil(N/1000) "
    "DescribeInstances, ceil((N-E)/500) GetMetricData for the peak CPU (the network only where the "
    "CPU was quiet: none here), 0 DescribeInstanceAttribute (EC2's refusal "
    "names a stop-protected instance: one StopInstances more per protected one), 1 StopInstances, "
    "1 CreateTags per stop category (idle, lifetime: 1 here), 1 Publish, 1 PutItem (the run's memory of "
    "its stops, for the money saved)" + RUNNER,
}
# owner_backfill has a bench of its own (a simulated CloudTrail history): its measured figures are
# in that bench's document, which this line points to rather than copies.
OWNER_BACKFILL_FORMULA = (
    "(a pass over R untagged resources whose creation calls are among E events of their call names in "
    "CloudTrail's history): ceil(R/1000) each of DescribeInstances, DescribeVolumes, DescribeSnapshots, "
    "DescribeImages; LookupEvents min(ceil(E/50) per call name, 1 per resource) - the API's 50 a page and "
    "one attribute per call - and at most 3x that whatever the history (measured, quiet and busy "
    "histories: docs/benchmarks-owner-backfill.md, `python -m bench.owner_backfill`); ceil(R/200) "
    "DescribeTags (the re-read before writing); CreateTags one per owner value and 1,000 resources; plus "
    "the runner's DynamoDB calls and one Publish per pass"
)

EXPLANATIONS = {
    "patch_sweeper": (
        "**Above 1.1x, not fixed here (function code is outside the benchmark's remit):** per command, "
        "`state.record_sent` writes a `command#<id>` pointer item (PutItem) and each final-status event "
        "reads it back (`state.sweep_of_command`, GetItem) to find the sweep: 2 calls per 50 instances "
        "that need not exist. The SSM status event already carries the sweep id: "
        "`detail.parameters.SnapshotId` is the sweep id (`service.sweep_id_for` sets it). Fix: parse "
        "`SnapshotId` in `patch_sweeper/triggers.py` (`CommandFinished.sweep_id`), use it in "
        "`service.command_finished` instead of `state.sweep_of_command`, and drop the pointer PutItem in "
        "`state.record_sent` (the conditional `DELETE pending :c` UpdateItem already ignores a command "
        "that is not the sweep's). That brings the sweep to the minimum (ratio 1.00)."
    ),
}


def _ops(counts: dict[str, int]) -> str:
    short = sorted((op.split(".", 1)[1], n) for op, n in counts.items() if n)
    return ", ".join(f"{op} {n}" for op, n in short)


def _headline(runs: dict[str, list[Run]]) -> list[str]:
    out = [
        "| automation | size | calls by operation (measured) | total | minimum | ratio | wall (moto) |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for name, rs in runs.items():
        for r in rs:
            out.append(
                f"| {name} | {r.size:,} {r.unit} | {_ops(dict(r.calls))} | {r.total:,} | {r.minimum_total:,} "
                f"| {r.ratio:.2f} | {r.seconds:.2f} s |"
            )
    return out


def _scaling(runs: dict[str, list[Run]]) -> list[str]:
    out = [
        "| automation | sizes | calls growth (x) for size growth (x) | wall growth (x) "
        "| calls per unit at largest |",
        "|---|---|---|---|---|",
    ]
    for name, rs in runs.items():
        if len(rs) < 2:
            continue
        a, b = rs[0], rs[-1]
        out.append(
            f"| {name} | {a.size:,} -> {b.size:,} | {b.total / a.total:.1f}x for {b.size / a.size:.0f}x "
            f"| {b.seconds / max(a.seconds, 1e-9):.1f}x | {b.total / b.size:.3f} |"
        )
    return out


def _limits(runs: dict[str, list[Run]]) -> list[str]:
    out = [
        "| automation | first EC2 bucket to run dry (burst used up within one run) "
        f"| one invocation over {limits.LAMBDA_BUDGET} s (15 min less the 20 s reserve) from "
        "| estimated seconds at the largest size |",
        "|---|---|---|---|",
    ]
    for name, rs in runs.items():
        if name == "website_health_check":
            continue
        biggest = rs[-1]
        if name == "owner_tagger":
            out.append(
                "| owner_tagger | per event, not per fleet: 1 CreateTags (mutating, burst 200, refill 5/s) "
                "per launch event, so more than 5 launch events a second, sustained past 200, are paced by "
                "retries | never for one event (one event of 1,000 instances takes 1 DescribeInstances "
                "and 3 CreateTags) | - |"
            )
            continue
        lim = limits.of(biggest)
        throttled = f"{lim.throttled_from[1]} at ~{lim.throttled_from[0]:,}" if lim.throttled_from else "none"
        over = f"~{lim.lambda_limit:,} {biggest.unit}" if lim.lambda_limit else "beyond 10 million"
        out.append(
            f"| {name} | {throttled} | {over} | {lim.seconds(biggest.size):.0f} s at {biggest.size:,} |"
        )
        if name == "snapshot_rotator":
            # The benchmark's history expires 3 snapshots per volume (a catch-up); a daily steady
            # state expires one per volume per day: the same run with DeleteSnapshot = V.
            calls = Counter({**biggest.calls, "ec2.DeleteSnapshot": biggest.size})
            steady = limits.of(dataclasses.replace(biggest, calls=calls))
            dry = steady.throttled_from[0] if steady.throttled_from else 0
            out.append(
                "| snapshot_rotator, daily steady state (1 new + 1 expired snapshot per volume) "
                f"| ec2.CreateSnapshot and ec2.DeleteSnapshot at ~{dry:,} "
                f"| ~{steady.lambda_limit or 0:,} {biggest.unit} "
                f"| {steady.seconds(biggest.size):.0f} s at {biggest.size:,} |"
            )
    return out


def _cost(
    runs: dict[str, list[Run]], concurrency: list[dict[str, float]], reference: dict[str, int]
) -> list[str]:
    by_size = {name: {r.size: r for r in rs} for name, rs in runs.items()}
    needed = all(reference[n] in by_size.get(n, {}) for n in reference)
    wall_10 = next((c["wall_s"] for c in concurrency if c["sites"] == 10), None)
    if not needed or wall_10 is None:
        return ["(not computed: run all five automations to get the reference account's cost)"]
    from bench import idle_stopper_bill

    idle = idle_stopper_bill.steady_state(reference["idle_stopper"])
    args = (
        by_size["website_health_check"][10],
        wall_10,
        idle,
        by_size["patch_sweeper"][200],
        by_size["snapshot_rotator"][100],
        by_size["owner_tagger"][1],
    )
    out: list[str] = []
    for per_site in (False, True):
        lines = cost.lines(*args, per_site_metrics=per_site)
        setting = "WebsiteHealthCheckPerSiteMetrics=" + ("true" if per_site else "false (the default)")
        out += [
            "",
            f"**{setting}**",
            "",
            "| item | invocations / month | billed s each (model) | AWS calls each | custom metrics sent "
            "| metric-months | Lambda $ | metrics $ | other $ (GetMetricData, DynamoDB, SNS) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        total = 0.0
        for line in lines:
            total += line.lambda_cost + line.metric_cost + line.other_cost
            out.append(
                f"| {line.automation} | {line.invocations:,.0f} | {line.seconds_each:.2f} "
                f"| {line.calls_each:.1f} | {line.metrics_sent} | {line.metric_months:.2f} "
                f"| {line.lambda_cost:.2f} | {line.metric_cost:.2f} | {line.other_cost:.2f} |"
            )
        for item, dollars in cost.fixed_monthly().items():
            total += dollars
            out.append(f"| {item} | | | | | | | | {dollars:.2f} |")
        out.append(f"| **ops-autopilot, total** | | | | | | | | **{total:.2f}** |")
        out.append(
            f"| + the stack's dashboard: free within an account's first 3, else | | | | | | | "
            f"| {prices.CW_DASHBOARD_MONTH:.2f} |"
        )
    out += ["", "The same 10 sites with what people use instead (site checks only):", ""]
    out += ["| alternative | $ / month |", "|---|---:|"]
    for name, dollars in cost.alternatives().items():
        out.append(f"| {name} | {dollars:.2f} |")
    return out


def render(
    runs: dict[str, list[Run]],
    concurrency: list[dict[str, float]],
    cold: dict[str, dict[str, float]],
    packages: dict[str, int] | str,
    reference: dict[str, int],
    *,
    quick: bool,
    elapsed: float,
    regions: list[str] | None = None,
) -> str:
    md: list[str] = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python -m bench`"
        + (" --quick" if quick else "")
        + f"; {elapsed:.0f} s on the machine that ran it). Do not edit by hand.",
        "",
        "Everything runs in-process against moto (`moto.mock_aws`, fake credentials): no AWS account is "
        "touched. **Call counts are the headline**: they are deterministic and are what a run costs in "
        "throttling headroom, time and money in any account. Wall times are moto's, on this machine: read "
        "them only as trends.",
        "",
        "## Calls per run, against the minimum",
        "",
        "The *minimum* is the fewest calls the run can make at that size given the APIs' limits (page "
        "sizes, batch sizes, calls without a batch form) and the product contract; ratio = measured / "
        "minimum, goal <= 1.10.",
        "",
        *_headline(runs),
        "",
        "Minimum formulas:",
        "",
        *[f"- **{name}**: {text}." for name, text in FORMULAS.items() if name in runs],
        f"- **owner_backfill** {OWNER_BACKFILL_FORMULA}.",
        "",
    ]
    for name, rs in runs.items():
        worst = max(rs, key=lambda r: r.ratio)
        if worst.ratio > GOAL:
            extra = ", ".join(f"{op} {m} vs {n}" for op, (m, n) in worst.over().items())
            md += [f"**{name}** is {worst.ratio:.2f}x its minimum at {worst.size:,} ({extra}).", ""]
            md += [EXPLANATIONS.get(name, "**Not explained yet: investigate.**"), ""]
    md += [
        "### Where moto does not cope, and what the benchmark does",
        "",
        "- moto answers DescribeSnapshots and DescribeVolumes in one page whatever MaxResults says, and "
        "pages DescribeInstances by reservation where EC2 counts instances: the benchmark makes all three "
        "page like EC2 (1,000, 500 and 1,000 per page), so the page counts are measured.",
        "- moto looks up every resource's tags by scanning every tag of the account (quadratic: minutes at "
        "10,000 snapshots): replaced by a dict lookup with the same answer.",
        "- moto keeps no CloudWatch metrics for its instances: idle_stopper makes every GetMetricData call, "
        "and judges the instances as having too little data (so only the StopAfter instances stop).",
        "- SIMULATED, patch_sweeper: moto lacks DescribeInstanceInformation, ListCommandInvocations and "
        "DescribeInstancePatchStates, and its SendCommand records every instance of the account per command "
        "(quadratic). These four are answered on the function's own SSM client by a simulated agent (all "
        "Online, all patched); the real code makes every call and the recorder counts it.",
        "- snapshot_rotator stops at 1,000 volumes in moto: seeding moto's backend dominates beyond, and "
        "moto counts an UpdateItem's new attribute on top of the one it replaces, so it refuses the "
        "outbox item of a 3,000-volume run (about 280 KB, within DynamoDB's 400 KB). A week at 10,000 "
        "volumes, in rounds, is simulated against an in-memory EC2: docs/benchmarks-snapshot-scale.md.",
        "",
        "## Scaling",
        "",
        "![calls versus fleet size](benchmarks-calls.png)",
        "",
        *_scaling(runs),
        "",
        "Calls grow linearly or better everywhere (owner_tagger and the health check do not grow with the "
        "fleet at all). Wall time in moto grows faster than the calls in two places, both moto's own cost: "
        "moto scans its whole backend per filtered Describe call (idle_stopper, snapshot_rotator), and "
        "patch_sweeper's sweep record (the ring's sent map and pending set, ~90 bytes per command) is "
        "deep-copied by moto on each of its 2B + 3 UpdateItems. In DynamoDB an UpdateItem is billed by "
        "the item's size (1 WRU per KB); every command's instance ids are an item of their own, so the "
        "record is ~1/25 of what it was when it held every batch (docs/benchmarks-patch-scale.md: "
        "50,000 instances).",
        "",
        "## Limits: Lambda's 15 minutes and EC2's API throttling",
        "",
        "EC2 token buckets (per API, per account and region): non-mutating actions burst 100, refill 20/s; "
        "mutating actions burst 200, refill 5/s "
        "([EC2 API throttling](https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html)). "
        "Estimated time per operation = max(calls x assumed latency, (calls - burst) / refill), summed over "
        "operations, calls extrapolated linearly from the largest measured size "
        f"(assumed latencies: {', '.join(f'{k} {v} s' for k, v in limits.LATENCY.items())}, others "
        f"{limits.DEFAULT_LATENCY} s).",
        "",
        *_limits(runs),
        "",
        "What the suite does then: every automation checks its `Deadline` before each unit of work. "
        "snapshot_rotator queues the rest as the next rounds of the run, which its state machine starts at "
        "once (one API's calls / 5 per day: its creates and deletions overlap, so the sums above are "
        "conservative for it; docs/benchmarks-snapshot-scale.md), "
        "idle_stopper leaves unjudged instances running (the safe side), patch_sweeper raises "
        "`SweepIncomplete` so the retried invocation resumes from its DynamoDB record. Throttled calls are "
        "retried by botocore (standard mode, 8 attempts) and only slow the run down. patch_sweeper's row "
        "counts a whole sweep as if it were one invocation (in fact the results are read by the last of "
        "B + 1 invocations), so its limit is conservative.",
        "",
    ]
    patch_runs = runs.get("patch_sweeper", [])
    if patch_runs:
        big = patch_runs[-1]
        record = int(big.extra["sweep_record_bytes"])
        commands = max(1, int(big.extra["commands"]))
        ceiling = (400 * 1024 / (record / commands)) * 50
        md += [
            f"patch_sweeper's sweep record: {record:,} bytes at {big.size:,} instances "
            f"({commands:,} commands, ~{record / commands:.0f} bytes each); it holds the current ring's "
            "commands only, so it reaches "
            f"DynamoDB's 400 KB item limit at a ring of about {ceiling:,.0f} instances. The instance ids are "
            f"an item per command ({int(big.extra['largest_batch_item_bytes']):,} bytes at most) and the "
            f"outbox entry {int(big.extra['largest_outbox_item_bytes']):,} bytes: neither grows with the "
            "fleet.",
            "",
        ]
    if concurrency:
        md += [
            "## Health check concurrency",
            "",
            "Local sites (another process) that each answer after 200 ms; wall time of one check of all of "
            "them, as a ratio to one site's 200 ms (1.0 = perfectly parallel; the engine keeps at most "
            f"{MAX_CONCURRENCY} connections open). The engine against a reference checker, and HTTPS: "
            "docs/benchmarks-health-engine.md.",
            "",
            f"| sites | wall | ratio to one site | rounds: ceil(sites / {MAX_CONCURRENCY}) |",
            "|---:|---:|---:|---:|",
            *[
                f"| {c['sites']:.0f} | {c['wall_s']:.2f} s | {c['ratio_to_one_site']:.2f} "
                f"| {math.ceil(c['sites'] / MAX_CONCURRENCY)} |"
                for c in concurrency
            ],
            "",
        ]
    if cold:
        md += [
            "## Cold start",
            "",
            "Import of the handler module plus creation of its clients, in a fresh process, against a bare "
            "`import boto3` plus the same clients (median of several interleaved runs).",
            "",
            "| handler | clients | handler s | boto3 only s | ratio |",
            "|---|---|---:|---:|---:|",
        ]
        from bench.coldstart import HANDLERS

        for module, m in cold.items():
            md.append(
                f"| {module} | {', '.join(HANDLERS[module])} | {m['handler_s']:.3f} | {m['boto3_s']:.3f} "
                f"| {m['ratio']:.2f} |"
            )
        md.append("")
    md += ["## Package sizes (sam build, zipped)", ""]
    if isinstance(packages, str):
        md += [packages, ""]
    else:
        md += ["| artifact | zipped |", "|---|---:|"]
        md += [f"| {name} | {size / 1024:,.0f} KiB |" for name, size in packages.items()]
        md += [
            "",
            "Every function's CodeUri is `functions/`, so each function package holds every automation "
            "(the same size); the dependencies (Powertools) live in the shared layer.",
            "",
        ]
    md += [
        "## Monthly cost of the reference account",
        "",
        "10 sites every 5 minutes, 200 instances (idle_stopper hourly, patch_sweeper weekly), 100 backed-up "
        "volumes (daily), 300 single-instance launches a month (assumed). Calls from the rows above at those "
        f"sizes; billed seconds = measured in-process time + calls x {cost.API_ROUND_TRIP} s; 256 MB arm64. "
        f"Prices: {prices.REGION_OF_PRICES}, free tiers ignored.",
        "",
        *_cost(runs, concurrency, reference),
        "",
        "Custom metrics are only what an alarm or the dashboard reads (tests/template/test_metrics_read.py): "
        "the runner's Checked, Changed, Skipped and Failed, each while not zero - Checked by every "
        "completed run, its samples being the silence alarms' runs completed - and the aggregates the "
        "alarms read (SitesDown, SitesNotChecked, CertificatesExpiring, StaleBackups); every other number "
        "is in the run's log line. idle_stopper is priced at its steady state (python -m "
        "bench.idle_stopper_bill's fleet at 200 instances, the hourly runs after the first day).",
        "",
        "Not included: EC2, SSM Run Command and EventBridge calls (no charge), CloudWatch Logs ingestion "
        "(a few tens of MB a month: cents), instance_recovery (a daily run: about $0.01 of metrics) and "
        "EBS snapshot storage "
        f"(${prices.EBS_SNAPSHOT_GB_MONTH}/GB-month): that is the cost of the backups themselves, the same "
        "with any backup tool, not of the automation. Synthetics' own Lambda and S3 charges come on top "
        "of its run price; Route 53 checks every 30 s from many locations but reads no TLS expiry.",
        "",
        *([*regions, ""] if regions else []),
        "Price sources:",
        "",
        *[f"- {what}: {url}" for what, url in prices.SOURCES.items()],
        f"- EC2 API throttling: {limits.__doc__.split('Source: ')[1].split()[0] if limits.__doc__ else ''}",
        "",
    ]
    # `make mutate`'s section (from docs/mutation.json): kept, not measured here.
    from tools.mutate import render_section

    md += render_section()
    return "\n".join(md)


def chart(runs: dict[str, list[Run]]) -> None:
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 3.8), squeeze=False)
    for ax, (name, rs) in zip(axes[0], runs.items(), strict=True):
        sizes = [r.size for r in rs]
        ax.plot(sizes, [r.total for r in rs], "o-", label="measured")
        ax.plot(sizes, [r.minimum_total for r in rs], "x--", label="minimum")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(rs[0].unit, fontsize=8)
        ax.set_ylabel("AWS calls per run", fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(CHART, dpi=110)
    plt.close(fig)


def write(text: str, runs: dict[str, list[Run]]) -> None:
    MARKDOWN.write_text(text + "\n")
    chart(runs)
