"""website_health_check's network engine against a reference asyncio checker, side by side on
the same local sites: wall time, CPU and peak memory of checking N sites.

The sites (bench.health_sites) run in a process of their own and answer every request after
200 ms with a ~2 KB page. Each measurement is one fresh process, so its peak RSS is its own:
- **the engine**: ``website_health_check.service.probe_all`` with a 100 s budget (Lambda's 120 s
  timeout less the handler's 20 s reserve), in a process that first imports the Lambda handler
  (``website_health_check.app``: boto3, Powertools), so its memory is the function's; every
  site classified (``decide.classify``, 14 days' certificate warning) must come back UP;
- **the reference** (bench.health_reference): stdlib asyncio streams, one SSL context, the
  engine's concurrency bound, the same checks (status, expected text, certificate days left).
Both measured processes have Lambda's 1,024 open files. Wall time is ``time.monotonic`` and
CPU ``time.process_time`` (every thread) around the check alone; peak memory is the process's
high-water mark after it (imports included, as in Lambda; VmHWM, see
bench.health_reference.peak_rss_mb for why not ``ru_maxrss``). Medians of 3 runs by default.

    PYTHONPATH=layers/autopilot/python:functions:. .venv/bin/python -m bench.health_engine  # ~40 s
    ... -m bench.health_engine --quick                  # 10 and 100 http, 100 https, 1 run (~10 s)
    ... -m bench.health_engine --sizes 10,1000 --https-sizes '' --repeat 1 --no-write
    ... -m bench.health_engine --engine-root /tmp/old   # another checkout's engine (functions/, layers/)

Writes docs/benchmarks-health-engine.md (unless --no-write).
"""

# Only the stdlib and bench.health_reference (stdlib) at the top: this module is also the
# engine's measured process (--child), whose memory must be the engine's and the handler's.
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import ssl
import statistics
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.health_reference import as_lambda, measured

if TYPE_CHECKING:
    from bench.health_sites import LocalSites

ROOT = Path(__file__).resolve().parent.parent
MARKDOWN = ROOT / "docs" / "benchmarks-health-engine.md"
HTTP_SIZES = (10, 100, 1000)
HTTPS_SIZES = (1000,)
QUICK_HTTP, QUICK_HTTPS = (10, 100), (100,)
BUDGET_S = 100.0  # Lambda's 120 s timeout less the handler's 20 s reserve
SITE_TIMEOUT_S = 10.0  # decide.DEFAULT_TIMEOUT
CERT_WARNING_DAYS = 14
LAMBDA_TIMEOUT_S, LAMBDA_RESERVE_S = 120, 20
LAMBDA_FULL_VCPU_MB = 1769  # Lambda gives one vCPU at 1,769 MB, proportionally less below
LAMBDA_MEMORY_MB = (256, 512, 1024)
# Where the engine's concurrency bound may be, first found wins (the threaded engine had
# service.MAX_WORKERS threads; the asyncio one has engine.MAX_CONCURRENCY sockets).
BOUNDS = (
    ("website_health_check.service", "MAX_CONCURRENCY"),
    ("website_health_check.service.engine", "MAX_CONCURRENCY"),
    ("website_health_check.engine", "MAX_CONCURRENCY"),
    ("website_health_check.service", "MAX_WORKERS"),
)
DEFAULT_BOUND = 256
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


# -- the engine's measured process (python -m bench.health_engine --child ...) ----------------


def _child_bound() -> None:
    """Print the engine's concurrency bound and where it was found."""
    import importlib

    for module, name in BOUNDS:
        try:
            value = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if isinstance(value, int):
            print(json.dumps({"concurrency": value, "source": f"{module}.{name}"}))
            return
    print(json.dumps({"concurrency": DEFAULT_BOUND, "source": "none found; default"}))


def _child_engine() -> None:
    """Check the spec's sites (stdin) with the engine's probe_all; print the report."""
    as_lambda()
    import website_health_check.app  # noqa: F401  # the handler's imports: its memory is the function's
    from autopilot.runtime import Deadline
    from website_health_check.decide import Site, Status, classify
    from website_health_check.service import probe_all

    spec = json.load(sys.stdin)
    sites = [
        Site(url=s["url"], name=s["name"], expect_text=s["expect_text"], timeout=float(s["timeout"]))
        for s in spec["sites"]
    ]
    now = datetime.now(UTC)
    probes, figures = measured(
        lambda: probe_all(sites, Deadline(remaining_at_start=float(spec["budget_s"]), reserve=0), now)
    )
    results = [classify(site, probe, CERT_WARNING_DAYS) for site, probe in probes]
    report = {
        "checker": "engine",
        "sites": len(sites),
        "checked": len(results),
        "up": sum(r.status is Status.UP for r in results),
        "failures": [f"{r.url}: {r.status} {r.reason}" for r in results if r.status is not Status.UP][:5],
        "libraries": [m for m in ("aiohttp", "httpx", "requests") if m in sys.modules],
        **figures,
    }
    print(json.dumps(report))


# -- the parent: runs, medians, the report ---------------------------------------------------


@dataclass(frozen=True)
class Figures:
    wall_s: float
    cpu_s: float
    rss_before_mb: float  # after the imports, before the check
    peak_rss_mb: float

    @property
    def check_mb(self) -> float:
        """What the check itself added to the peak."""
        return self.peak_rss_mb - self.rss_before_mb

    @classmethod
    def median(cls, reports: list[dict[str, Any]]) -> Figures:
        return cls(**{f.name: statistics.median(r[f.name] for r in reports) for f in fields(cls)})


@dataclass(frozen=True)
class Row:
    scheme: str
    size: int
    engine: Figures
    reference: Figures
    server_cpu_s: float  # the sites' process, the most of any one measured run
    libraries: list[str]

    @property
    def label(self) -> str:
        return f"{self.size:,} {self.scheme}"


@dataclass(frozen=True)
class Engine:
    root: Path
    label: str
    concurrency: int
    source: str

    def environment(self) -> dict[str, str]:
        python_path = [self.root / "layers/autopilot/python", self.root / "functions", ROOT]
        return {**_environment(), "PYTHONPATH": ":".join(map(str, python_path))}


def _environment() -> dict[str, str]:
    """The parent's (offline) environment for a measured process, without proxies."""
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARIABLES and k != "REQUESTS_CA_BUNDLE"}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def _run_child(command: list[str], spec: dict[str, Any] | None, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, *command],
        input=json.dumps(spec) if spec is not None else "",
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BUDGET_S + 120,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    try:
        report: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise RuntimeError(
            f"{' '.join(command)} exited {done.returncode} without a report\n"
            f"stdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-4000:]}"
        ) from None
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}\nstderr: {done.stderr[-4000:]}")
    return report


def _engine(root: Path, label: str | None, concurrency: int | None) -> Engine:
    """The engine in ``root``, its concurrency bound asked of its own modules (a fresh process)."""
    engine = Engine(root, label or _describe(root), concurrency or DEFAULT_BOUND, "--concurrency")
    if concurrency:
        return engine
    found = _run_child(["-m", "bench.health_engine", "--child", "bound"], None, engine.environment())
    return replace(engine, concurrency=int(found["concurrency"]), source=str(found["source"]))


def _describe(root: Path) -> str:
    """The engine's checkout: its commit, whether the engine has uncommitted changes, and a
    digest of its files (to tell two runs' engines apart)."""
    paths = ["functions/website_health_check", "layers/autopilot/python"]
    files = sorted(
        p for folder in paths for p in (root / folder).rglob("*.py") if "__pycache__" not in p.parts
    )
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()[:12]
    try:
        commit = _git(root, "rev-parse", "--short", "HEAD").strip()
        changed = _git(root, "status", "--porcelain", "--untracked-files=all", "--", *paths).splitlines()
    except (OSError, subprocess.CalledProcessError):
        return f"{root} (not a git checkout; engine files sha256 {digest})"
    state = f"{len(changed)} files with uncommitted changes" if changed else "clean"
    return f"commit {commit}, {state} (engine files sha256 {digest})"


def _git(root: Path, *arguments: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), *arguments], capture_output=True, text=True, check=True
    ).stdout


def _verified(report: dict[str, Any], size: int, what: str) -> dict[str, Any]:
    """The report, if every site was checked and UP; otherwise the run fails, loudly."""
    if report["checked"] != size or report["up"] != size:
        failures = "\n  ".join(report.get("failures") or ["(none reported)"])
        raise SystemExit(
            f"{what}: {report['up']} of {size} sites UP, {report['checked']} checked - "
            f"the measurement is void. First failures:\n  {failures}"
        )
    return report


def measure(sites: LocalSites, engine: Engine, scheme: str, size: int, repeat: int) -> Row:
    """``repeat`` runs of each checker on ``size`` sites (alternating which goes first), medians."""
    targets = sites.targets(scheme, size, SITE_TIMEOUT_S)
    ca = sites.ca_file if scheme == "https" else None
    engine_env = engine.environment()
    if ca:
        engine_env["REQUESTS_CA_BUNDLE"] = ca  # the engine trusts extra CAs through this
    runs: dict[str, list[dict[str, Any]]] = {"engine": [], "reference": []}
    server_cpu = 0.0
    for attempt in range(repeat):
        order = ["engine", "reference"] if attempt % 2 == 0 else ["reference", "engine"]
        for checker in order:
            before = sites.cpu_seconds()
            if checker == "engine":
                spec = {"sites": targets, "budget_s": BUDGET_S}
                report = _run_child(["-m", "bench.health_engine", "--child", "engine"], spec, engine_env)
            else:
                spec = {
                    "sites": targets,
                    "concurrency": engine.concurrency,
                    "ca": ca,
                    "cert_warning_days": CERT_WARNING_DAYS,
                }
                report = _run_child(["-m", "bench.health_reference"], spec, _reference_environment())
            server_cpu = max(server_cpu, sites.cpu_seconds() - before)
            runs[checker].append(_verified(report, size, f"{checker}, {size:,} {scheme} sites"))
    return Row(
        scheme,
        size,
        Figures.median(runs["engine"]),
        Figures.median(runs["reference"]),
        server_cpu,
        runs["engine"][0]["libraries"],
    )


def _reference_environment() -> dict[str, str]:
    return {**_environment(), "PYTHONPATH": str(ROOT)}  # bench/ only: the engine is not importable


def _seconds(value: float) -> str:
    return f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"


def _ratio(engine: float, reference: float) -> str:
    return f"{engine / reference:.2f}" if reference > 0 else "-"


def line(row: Row) -> str:
    e, r = row.engine, row.reference
    return (
        f"{row.label:>11}  engine wall {e.wall_s:7.2f} s  CPU {e.cpu_s:6.3f} s  peak {e.peak_rss_mb:6.1f} MB"
        f"  | reference wall {r.wall_s:6.2f} s  CPU {r.cpu_s:6.3f} s  peak {r.peak_rss_mb:6.1f} MB"
        f"  | engine/reference wall {_ratio(e.wall_s, r.wall_s)}  CPU {_ratio(e.cpu_s, r.cpu_s)}"
        f"  memory {_ratio(e.peak_rss_mb, r.peak_rss_mb)}  (sites' process CPU {row.server_cpu_s:.2f} s)"
    )


def table(rows: list[Row]) -> list[str]:
    lines = [
        "| sites | wall s: engine | reference | engine/ref | CPU s: engine | reference | engine/ref "
        "| peak MB: engine | reference | engine/ref | the check's own MB: engine | reference |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        e, r = row.engine, row.reference
        lines.append(
            f"| {row.label} | {_seconds(e.wall_s)} | {_seconds(r.wall_s)} | {_ratio(e.wall_s, r.wall_s)} "
            f"| {_seconds(e.cpu_s)} | {_seconds(r.cpu_s)} | {_ratio(e.cpu_s, r.cpu_s)} "
            f"| {e.peak_rss_mb:.1f} | {r.peak_rss_mb:.1f} | {_ratio(e.peak_rss_mb, r.peak_rss_mb)} "
            f"| {e.check_mb:.1f} | {r.check_mb:.1f} |"
        )
    return lines


def lambda_sizing(rows: list[Row]) -> list[str]:
    """The largest https run's estimated Lambda wall time and memory share per memory size."""
    https = [r for r in rows if r.scheme == "https"]
    if not https:
        return ["Not measured (no https run: add `--https-sizes 1000`)."]
    row = max(https, key=lambda r: r.size)
    e = row.engine
    budget = LAMBDA_TIMEOUT_S - LAMBDA_RESERVE_S
    lines = [
        f"From the {row.label} run (engine: {e.wall_s:.2f} s wall, {e.cpu_s:.2f} s CPU, "
        f"{e.peak_rss_mb:.1f} MB peak). Lambda gives one vCPU at {LAMBDA_FULL_VCPU_MB:,} MB and "
        "proportionally less below, so the estimate of the wall time is max(local wall, engine CPU / "
        f"(memory / {LAMBDA_FULL_VCPU_MB:,})); the function has {LAMBDA_TIMEOUT_S} s, less "
        f"{LAMBDA_RESERVE_S} s kept for reporting: {budget} s to check in.",
        "",
        "| memory | vCPU share | estimated wall s | fits in 100 s | peak memory, % of memory |",
        "|---:|---:|---:|---|---:|",
    ]
    for memory in LAMBDA_MEMORY_MB:
        share = memory / LAMBDA_FULL_VCPU_MB
        wall = max(e.wall_s, e.cpu_s / share)
        fits = "yes" if wall <= budget else "**no**"
        lines.append(
            f"| {memory:,} MB | {share:.3f} | {wall:.1f} | {fits} | {100 * e.peak_rss_mb / memory:.0f} % |"
        )
    lines += [
        "",
        "An estimate, not a measurement in Lambda: it assumes the CPU time is the same on Lambda's "
        "cores as here and that the throttled CPU, not the network, sets the pace. Real sites answer "
        "slower than 200 ms on loopback, which adds wall time but little CPU.",
    ]
    return lines


def _wrap(line: str) -> str:
    """A prose line of the report wrapped at 96 columns (tables, headings and code as they are)."""
    if not line or line.startswith(("|", "#", "```", "PYTHONPATH")):
        return line
    indent = "  " if line.startswith("- ") else ""
    return textwrap.fill(line, 96, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False)


def render(rows: list[Row], engine: Engine, repeat: int, quick: bool) -> str:
    from bench import health_sites as sites

    libraries = (
        ", ".join(sorted({lib for row in rows for lib in row.libraries}))
        or "none of aiohttp, httpx, requests"
    )
    most_server = max((row.server_cpu_s for row in rows), default=0.0)
    runs = "one run" if repeat == 1 else f"the median of {repeat} runs"
    quick_note = " (`--quick`: small sizes only)" if quick else ""
    lines = [
        "# Website health check: the engine against a reference asyncio checker",
        "",
        "Written by `python -m bench.health_engine` (bench/health_engine.py); do not edit by hand.",
        "",
        "The same local sites checked by the health check's engine and by a minimal asyncio checker, "
        "side by side in one run, for wall time, CPU and peak memory.",
        "",
        "- **the sites** (bench/health_sites.py): an asyncio server in a process of its own (its CPU "
        f"is not the checker's), {sites.PORTS} ports per scheme on {sites.HOST}, each `/site/<i>` "
        f"answering after {sites.LATENCY * 1000:.0f} ms with a {sites.PAGE_BYTES:,}-byte HTML page and "
        f"`Connection: close`; https with an ECDSA P-256 certificate for IP {sites.HOST} from a local "
        f"CA, valid {sites.CERT_DAYS} days;",
        "- **the engine**: `website_health_check.service.probe_all(sites, Deadline(100 s), now)` "
        "(Lambda's 120 s timeout less the handler's 20 s reserve), each site's result through "
        f"`decide.classify` ({CERT_WARNING_DAYS} days' certificate warning); the process first "
        "imports the Lambda handler (`website_health_check.app`: boto3, Powertools), so its memory "
        "is the function's; the local CA is trusted through REQUESTS_CA_BUNDLE;",
        "- **the reference** (bench/health_reference.py): stdlib asyncio streams, one SSL context, "
        "`asyncio.timeout` per check, the same checks (status 200-399, the expected text in the body "
        "decoded as UTF-8, the certificate's days left from the same connection), the engine's "
        "concurrency bound; no redirects, no chunked or compressed bodies (the sites send none);",
        "- every site must come back UP from both, or the run fails; each measured process is fresh, "
        "with Lambda's 1,024 open files: wall time (`time.monotonic`) and CPU (`time.process_time`, "
        "every thread) around the check alone - a cold start: the engine builds its event loop and "
        "SSL context inside it, as on Lambda's first invocation; peak memory is the process's "
        "high-water mark after the check (Linux VmHWM: `ru_maxrss` would start at the parent's "
        "peak, which Linux carries over fork and exec), imports included;",
        "- *the check's own MB*: the peak less the process's size after its imports (the engine's "
        "process starts bigger, with the handler's imports).",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d} on this machine: {os.cpu_count()} cores (`nproc`), "
        f"Python {platform.python_version()}, {ssl.OPENSSL_VERSION}; the sites in another process "
        f"(at most {most_server:.2f} s of its CPU in any measured run). Engine: {engine.label}; "
        f"HTTP client loaded by the engine: {libraries}; concurrency bound {engine.concurrency} "
        f"({engine.source}), the reference's too. Each figure is {runs}{quick_note}. "
        "Other machines give other absolute figures; the ratios travel better.",
        "",
        *table(rows),
        "",
        "For https, most of both checkers' memory is asyncio's: its TLS transport gives every "
        "connection a 256 KiB read buffer (asyncio/sslproto.py), so that memory grows with the "
        "connections open at once (the concurrency bound), not with the number of sites. At 10 and "
        "100 sites the CPU figures are tens of milliseconds, mostly what a run sets up (an HTTP "
        "session, an SSL context and its CA bundle); the 1,000-site rows compare the work per site.",
        "",
        "## Lambda sizing",
        "",
        *lambda_sizing(rows),
        "",
        "## Reproduce",
        "",
        "```",
        "PYTHONPATH=layers/autopilot/python:functions:. .venv/bin/python -m bench.health_engine",
        "```",
        "",
        "`--quick` (10 and 100 http sites, 100 https), `--sizes` and `--https-sizes` (comma-separated "
        "counts), `--repeat N` (medians of N runs), `--engine-root DIR` (the engine of another "
        "checkout, e.g. `git worktree add DIR <commit>`), `--no-write` (print only).",
        "",
    ]
    return "\n".join(_wrap(line) for line in lines)


def _sizes(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.health_engine", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="10 and 100 http sites, 100 https")
    parser.add_argument("--sizes", type=_sizes, help="http site counts, e.g. 10,100,1000")
    parser.add_argument("--https-sizes", type=_sizes, help="https site counts, e.g. 1000 ('' for none)")
    parser.add_argument("--repeat", type=int, help="runs per checker and size, medians (default 3, quick 1)")
    parser.add_argument("--engine-root", type=Path, default=ROOT, help="checkout with functions/, layers/")
    parser.add_argument("--label", help="how the report names the engine (default: its git commit)")
    parser.add_argument("--concurrency", type=int, help="the reference's bound (default: the engine's)")
    parser.add_argument("--no-write", action="store_true", help=f"print only; do not write {MARKDOWN.name}")
    parser.add_argument("--child", choices=("engine", "bound"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "engine":
        return _child_engine()
    if args.child == "bound":
        return _child_bound()

    from bench.common import offline_environment
    from bench.health_sites import LocalSites

    offline_environment()  # the measured processes inherit it: fake credentials, quiet Powertools
    http = args.sizes if args.sizes is not None else (QUICK_HTTP if args.quick else HTTP_SIZES)
    https = args.https_sizes if args.https_sizes is not None else (QUICK_HTTPS if args.quick else HTTPS_SIZES)
    repeat = max(1, args.repeat or (1 if args.quick else 3))
    engine = _engine(args.engine_root.resolve(), args.label, args.concurrency)
    print(f"engine: {engine.label}; concurrency {engine.concurrency} ({engine.source})")
    rows: list[Row] = []
    with (
        tempfile.TemporaryDirectory(prefix="ops-autopilot-health-bench-") as folder,
        LocalSites(Path(folder)) as sites,
    ):
        for scheme, sizes in (("http", http), ("https", https)):
            for size in sizes:
                rows.append(measure(sites, engine, scheme, size, repeat))
                print(line(rows[-1]), flush=True)
    text = render(rows, engine, repeat, args.quick)
    print(text)
    if not args.no_write:
        MARKDOWN.write_text(text)
        print(f"wrote {MARKDOWN.relative_to(ROOT)}")
    return None


if __name__ == "__main__":
    main()
