"""patch_sweeper at 50,000 instances: one weekly sweep, start to digest, through the real handler.

The same run as bench/patch_sweeper.py (EC2, DynamoDB and SNS are moto; the four SSM calls moto
lacks are answered by a simulated agent, every instance Online, every patch run a success), at a
size where the old design broke: the sweep's intent held every instance id, 553 KB compressed,
over DynamoDB's 400 KB item limit. Now each command's instance ids are an item of their own and
neither the sweep record nor the outbox entry grows with the fleet. One ring (no PatchRing
tags): the largest ring, so the largest sweep record there can be.

    PYTHONPATH=layers/autopilot/python:functions:. .venv/bin/python -m bench.patch_sweeper_scale [N]

writes docs/benchmarks-patch-scale.md. The "minimum" is what the APIs allow (bench/patch_sweeper.py's
docstring: page and batch maxima of each API), never the project's own choice.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from bench.common import offline_environment

LIMIT = 400 * 1024  # DynamoDB's item size limit


def render(
    count: int, seconds: float, calls: dict[str, int], minimum: dict[str, int], extra: dict[str, int]
) -> str:
    lines = [
        f"# patch_sweeper at {count:,} instances: one sweep, start to digest",
        "",
        (__doc__ or "").split("\n\n")[1].replace("\n", " "),
        "",
        f"{extra['commands']:,} commands, {1 + extra['commands']:,} invocations (the schedule, then one per "
        f"command's final event); {extra['changed']:,} instances patched; {seconds:,.0f} s wall time in moto "
        "(a trend only).",
        "",
        "| operation | calls | minimum (what the API allows) |",
        "|---|---:|---:|",
    ]
    for operation in sorted(set(calls) | set(minimum)):
        lines.append(f"| {operation} | {calls.get(operation, 0):,} | {minimum.get(operation, 0):,} |")
    total, least = sum(calls.values()), sum(minimum.values())
    lines += [
        f"| **total** | **{total:,}** | **{least:,}** |",
        "",
        "| item | largest size | of the 400 KB limit |",
        "|---|---:|---:|",
        f"| sweep record (`sweep#<id>`: the ring's sent map and pending set) "
        f"| {extra['sweep_record_bytes']:,} B | {extra['sweep_record_bytes'] / LIMIT:.1%} |",
        f"| a command's item (its at most 50 instance ids) "
        f"| {extra['largest_batch_item_bytes']:,} B | {extra['largest_batch_item_bytes'] / LIMIT:.1%} |",
        f"| outbox entry (intent, result and mail, compressed) | {extra['largest_outbox_item_bytes']:,} B "
        f"| {extra['largest_outbox_item_bytes'] / LIMIT:.1%} |",
        "",
        "Before (one sweep item holding every batch, the intent holding every id): the sweep item "
        "reached the limit at about 13,500 instances and the outbox intent at about 35,000.",
    ]
    return "\n".join(lines) + "\n"


def main(count: int) -> None:
    offline_environment()
    from bench import patch_sweeper

    started = time.monotonic()
    run = patch_sweeper.run(count)
    seconds = time.monotonic() - started
    extra = {k: int(v) for k, v in run.extra.items() if isinstance(v, int | float)}
    text = render(count, seconds, dict(run.calls), dict(run.minimum), extra)
    Path(__file__).resolve().parent.parent.joinpath("docs", "benchmarks-patch-scale.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000)
