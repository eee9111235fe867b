"""`make bench`: measure, print and write docs/benchmarks.md and docs/benchmarks-calls.png.

    make bench                                  # everything (about 11 minutes on 2 cores)
    make bench BENCH_ARGS=--quick               # reference sizes, 3 cold-start runs, no sam build (~1 min)
    make bench BENCH_ARGS="idle_stopper owner_tagger --no-build"

Offline: moto in-process (moto.mock_aws) with fake credentials; nothing reaches AWS.
Call counts are the headline (deterministic); wall times are moto's, shown only as trends.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from bench.common import Run, offline_environment

FULL: dict[str, tuple[int, ...]] = {
    "website_health_check": (10, 50, 200),
    "owner_tagger": (1, 10, 100, 1000),
    "patch_sweeper": (100, 200, 1000, 10_000),
    "snapshot_rotator": (100, 1000),  # 10,000: python -m bench.snapshot_rotator_scale (simulated)
    "idle_stopper": (100, 200, 1000, 10_000),
}
QUICK: dict[str, tuple[int, ...]] = {
    "website_health_check": (10, 50),
    "owner_tagger": (1, 100),
    "patch_sweeper": (200, 1000),
    "snapshot_rotator": (100, 300),
    "idle_stopper": (200, 1000),
}
REFERENCE = {
    "website_health_check": 10,
    "owner_tagger": 1,
    "patch_sweeper": 200,
    "snapshot_rotator": 100,
    "idle_stopper": 200,
}


def _runner(name: str) -> Callable[[int], Run]:
    # Imported late: the modules import the functions, which read the environment set above.
    from bench import health_check, idle_stopper, owner_tagger, patch_sweeper, snapshot_rotator

    return {
        "website_health_check": health_check.calls_run,
        "owner_tagger": owner_tagger.run,
        "patch_sweeper": patch_sweeper.run,
        "snapshot_rotator": snapshot_rotator.run,
        "idle_stopper": idle_stopper.run,
    }[name]


def _extra_sections(chosen: list[str]) -> list[str]:
    """The sections measured apart (health checks from three regions, owner digests)."""
    found: list[str] = []
    if "website_health_check" in chosen:
        from bench import health_regions

        found += health_regions.lines(health_regions.measure())
    if "idle_stopper" in chosen:
        from bench import idle_stopper_owners

        found += [""] if found else []
        found += idle_stopper_owners.lines(idle_stopper_owners.measure())
    print("\n".join(found))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("automations", nargs="*", help=f"any of {', '.join(FULL)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes, 3 cold-start runs, no sam build")
    parser.add_argument("--no-build", action="store_true", help="skip sam build (package sizes)")
    parser.add_argument("--no-coldstart", action="store_true", help="skip the cold-start measurement")
    parser.add_argument("--no-write", action="store_true", help="print only; do not rewrite docs/")
    args = parser.parse_args()
    unknown = set(args.automations) - set(FULL)
    if unknown:
        parser.error(f"unknown automation(s): {', '.join(sorted(unknown))}")
    offline_environment()
    from bench import coldstart, health_check, report

    started = time.perf_counter()
    chosen = args.automations or list(FULL)
    sizes = QUICK if args.quick else FULL
    runs: dict[str, list[Run]] = {}
    for name in chosen:
        wanted = sorted(set(sizes[name]) | {REFERENCE[name]})
        runs[name] = []
        for size in wanted:
            run = _runner(name)(size)
            runs[name].append(run)
            print(f"{name:22} {size:>6} {run.unit:36} calls {run.total:>6}  minimum {run.minimum_total:>6}  "
                  f"ratio {run.ratio:5.2f}  {run.seconds:7.2f} s")  # fmt: skip

    concurrency: list[dict[str, float]] = []
    if "website_health_check" in chosen:
        for n in (1, 10, 50, 200):
            concurrency.append(health_check.wall_ratio(n))
            print("health check concurrency", concurrency[-1])
    regions = _extra_sections(chosen)

    cold: dict[str, dict[str, float]] = {}
    if not args.no_coldstart:
        for module, services in coldstart.HANDLERS.items():
            if module.split(".")[0] in chosen:
                cold[module] = coldstart.measure(module, services, runs=3 if args.quick else 7)
                print("cold start", module, cold[module])
    packages: dict[str, int] | str = "not measured (--no-build or --quick)"
    if not (args.no_build or args.quick):
        packages = coldstart.package_sizes()
        print("package sizes", packages)

    elapsed = time.perf_counter() - started
    text = report.render(
        runs, concurrency, cold, packages, REFERENCE, quick=args.quick, elapsed=elapsed, regions=regions
    )
    print(text)
    if not args.no_write:
        report.write(text, runs)
        median = statistics.median(r.seconds for rs in runs.values() for r in rs)
        print(f"wrote {report.MARKDOWN} and {report.CHART} in {elapsed:.0f} s (median run {median:.1f} s)")

    if "website_health_check" in chosen:  # the engine against a reference checker: its own doc
        from bench import health_engine

        health_engine.main([f for f, on in (("--quick", args.quick), ("--no-write", args.no_write)) if on])


if __name__ == "__main__":
    main()
