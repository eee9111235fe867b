"""`make demo` works: ``python -m demo`` (with the Makefile's PYTHONPATH) runs every automation's
demo scenario against its local moto server, exits 0, and prints each automation's heading
followed by at least one of its mails. No network beyond 127.0.0.1: every proxy variable
points at a closed local port (so any other HTTP request fails) and instance metadata is off."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT

# One worker runs both tests (xdist loadgroup), so the demo (about 13 s) runs once, not once per worker.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("demo")]

# The demo scenarios, one per automation (demo/__main__.py runs them in this order).
NAMES = sorted(p.stem for p in (ROOT / "demo" / "scenarios").glob("*.py") if p.stem != "__init__")
AUTOMATIONS = sorted(p.parent.name for p in (ROOT / "functions").glob("*/app.py"))
BAR = "=" * 78
MAIL = "  | Subject: [ops-autopilot-demo] "
CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens there


@pytest.fixture(scope="module")
def demo() -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("AWS_")
        and key.lower() not in {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    }
    env |= {
        "PYTHONPATH": os.pathsep.join(["layers/autopilot/python", "functions", "."]),  # as `make demo`
        "HTTP_PROXY": CLOSED,
        "HTTPS_PROXY": CLOSED,
        "ALL_PROXY": CLOSED,
        "NO_PROXY": "127.0.0.1,localhost",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    return subprocess.run(
        [sys.executable, "-m", "demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_the_demo_exits_0(demo: subprocess.CompletedProcess[str]) -> None:
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert demo.stdout.rstrip().endswith("Demo finished.")


def test_each_automation_shows_its_heading_and_mails(demo: subprocess.CompletedProcess[str]) -> None:
    lines = demo.stdout.splitlines()
    headings = [i + 1 for i, line in enumerate(lines[:-2]) if line == BAR and lines[i + 2] == BAR]
    shown = [lines[i].split(":")[0] for i in headings]
    assert shown == NAMES == AUTOMATIONS, shown  # every automation has a demo, shown once, in order
    for name, start, end in zip(NAMES, headings, [*headings[1:], len(lines)], strict=True):
        section = lines[start:end]
        assert any(line.startswith(MAIL) for line in section), f"{name} showed no mail:\n" + "\n".join(
            section
        )


def test_the_health_check_from_three_regions_mails_only_the_quorums_down(
    demo: subprocess.CompletedProcess[str],
) -> None:
    """One region failing alone mails nothing; two give one DOWN naming both and the region that
    still reaches the site; a silent region is counted for its alarm."""
    out = demo.stdout
    alone = out.index(">> SIMULATED network: only us-east-1")
    quorum = out.index(">> SIMULATED network: us-east-1 and ap-southeast-2")
    assert "(no mail sent)" in out[alone:quorum]
    assert out[quorum:].count("DOWN from us-east-1 and ap-southeast-2; up from eu-west-1") == 1
    assert "RegionsSilent = 1 at the home" in out


def test_two_owners_each_get_one_digest_of_their_own_and_the_operators_get_all(
    demo: subprocess.CompletedProcess[str],
) -> None:
    """idle_stopper's warn-first part: alice's digest names only her instances, payments' only
    its one, and the operators' digest of the same run lists all three."""
    out = demo.stdout
    part = out[out.index(">> Warn first (IdleStopperWarningHours=24)") : out.index(">> alice snoozes")]
    alice = part.split("owner digest through SES, to alice@example.com")[1].split("+--\n")[0]
    payments = part.split("owner digest through SES, to payments-oncall@example.com")[1].split("+--\n")[0]
    operators = part.split("Subject: [ops-autopilot-demo] 3 instances warned: stop planned")[1].split(
        "+--\n"
    )[0]
    assert part.count("owner digest through SES") == 2
    assert "(alice-notebook)" in alice and "(alice-scratch)" in alice and "(pay-worker)" not in alice
    assert "(pay-worker)" in payments and "alice" not in payments.split("What you can do")[0]
    assert all(f"({name})" in operators for name in ("alice-notebook", "alice-scratch", "pay-worker"))
    later = out[out.index(">> alice snoozes") :]
    assert "Now: snoozed until" in later and "2 instances stopped (2 idle)" in later
