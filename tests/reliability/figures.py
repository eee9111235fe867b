"""The figures of the whole test session: what the reliability suites counted (bad inputs
tried, faults injected) and the observed-IAM judgement (tests/reliability/observed.py).

Every process that runs tests counts its own share: the one pytest process, or each
pytest-xdist worker. At the end of the session each worker hands its share to the controller
(tests/conftest.py, through xdist's ``workeroutput``), and the process that ends the session
adds the shares up, judges IAM once on the sum and prints the figures. So no test depends on
which other tests ran before it, or on the same worker.

    TRIED = figures.counter("bad input tried")    # module level in a test module
    TRIED[name] += 1                              # in a test
    report.append("faults ...")                   # the reliability_report fixture: one line
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from reliability import observed

# This process's counters (kind -> key -> count), report lines and the tests it ran.
counters: defaultdict[str, Counter[str]] = defaultdict(Counter)
lines: list[str] = []
ran: set[str] = set()

FAULT_KINDS = ("throttling", "timeout+5xx", "per-resource")
FAULT_FIGURES = (
    "operations_attempted",
    "http_attempts",
    "retried",
    "faults_injected",
    "completed",
    "refused_per_resource",
    "lost",
)


def counter(kind: str) -> Counter[str]:
    """The session counter of ``kind`` in this process (summed over processes at the end)."""
    return counters[kind]


def share(complete: set[str] | None, collected: list[str] | None) -> dict[str, Any]:
    """This process's share, in plain types (xdist sends it between processes). ``complete``:
    the test folders this process collected in full, ``collected`` the node ids (both None when
    it collected nothing: the xdist controller)."""
    return {
        "collected": collected,
        "ran": sorted(ran),
        "counters": {kind: dict(values) for kind, values in counters.items()},
        "lines": list(lines),
        "observed": {name: sorted(actions) for name, actions in observed.observed.items()},
        "calls_seen": dict(observed.calls_seen),
        "complete": None if complete is None else sorted(complete),
    }


@dataclass
class Totals:
    counters: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    lines: list[str] = field(default_factory=list)
    observed: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    calls_seen: Counter[str] = field(default_factory=Counter)
    complete: set[str] | None = None  # the folders every process collected in full
    collected: set[str] = field(default_factory=set)
    ran: set[str] = field(default_factory=set)

    @property
    def not_run(self) -> set[str]:
        return self.collected - self.ran


def add_up(shares: Iterable[dict[str, Any]]) -> Totals:
    totals = Totals()
    for part in shares:
        for kind, values in part["counters"].items():
            totals.counters[kind].update(values)
        totals.lines += part["lines"]
        for name, actions in part["observed"].items():
            totals.observed[name].update(actions)
        totals.calls_seen.update(part["calls_seen"])
        totals.collected.update(part.get("collected") or ())
        totals.ran.update(part.get("ran", ()))
        if part["complete"] is not None:
            mine = set(part["complete"])
            totals.complete = mine if totals.complete is None else totals.complete & mine
    totals.lines.sort()  # the same summary whichever worker ran which test
    return totals


def summary(totals: Totals) -> list[str]:
    """The counted figures, after the lines the tests added."""
    found = list(totals.lines)
    tried = totals.counters.get("bad input tried", Counter())
    if tried:
        for name in sorted(tried):  # the automations whose bad-input tests ran
            mutations = totals.counters["bad input mutations"][name]
            raises = totals.counters["bad input raises"][name]
            found.append(
                f"bad input {name:<21} {tried[name]} malformed events tried, "
                f"{mutations} mutations, {raises} raises"
            )
    faults = totals.counters.get("faults", Counter())
    for kind in FAULT_KINDS:
        if faults[f"{kind}.operations_attempted"]:  # the kinds of fault tests that ran
            figures = " ".join(f"{k}={faults[f'{kind}.{k}']}" for k in FAULT_FIGURES)
            found.append(f"faults TOTAL {kind:<12} {figures}")
    return found


@dataclass
class Verdict:
    lines: list[str]
    failures: dict[str, str]  # automation -> what is wrong with its role


def judge_iam(totals: Totals, can_judge: str | None) -> Verdict:
    """Each function's role must grant exactly the actions its code was seen calling. Judged
    only for an automation whose tests/<name>/ and tests/reliability/ ran in full in this
    session (and only when ``can_judge`` gives no reason not to): anything less proves nothing."""
    complete = totals.complete or set()
    judged = [] if can_judge else [n for n in sorted(observed.AUTOMATIONS) if {n, "reliability"} <= complete]
    found: list[str] = []
    failures: dict[str, str] = {}
    for name in judged:
        seen = totals.observed.get(name, set())
        allowed = observed.granted(name)
        found.append(
            f"IAM {name}: {len(allowed)} actions granted, {len(seen)} observed "
            f"({totals.calls_seen.get(name, 0)} calls): {', '.join(sorted(seen))}"
        )
        wrong = []
        if seen - allowed:
            wrong.append(f"{name} called actions its role does not grant: {sorted(seen - allowed)}")
        if allowed - seen:
            wrong.append(
                f"{name}'s role grants actions no test saw it call: {sorted(allowed - seen)} - "
                "exercise them in a test (or drop the grant)"
            )
        if wrong:
            failures[name] = "\n".join(wrong)
            found[-1] += " - MISMATCH (see ERRORS above)"
    skipped = sorted(observed.AUTOMATIONS - set(judged))
    if skipped:
        reason = can_judge or "their tests/<name>/ or tests/reliability/ did not run in full in this session"
        found.append(f"IAM not judged for {', '.join(skipped)}: {reason}")
    return Verdict(found, failures)
