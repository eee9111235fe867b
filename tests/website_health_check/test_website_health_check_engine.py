"""The network engine against hostile servers (hostile.py, in a subprocess): every check ends
within its timeout + 1 s however the server trickles, stalls, resets or floods, all checks run
at once; nothing (thread, socket) outlives a run across warm invocations; pages are decoded as
browsers decode them, so the expected text is found whatever charset the server forgot to name."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from autopilot.runtime import Deadline
from website_health_check import service
from website_health_check.decide import Probe, Site, Status, classify

pytestmark = pytest.mark.integration

HOSTILE = Path(__file__).with_name("hostile.py")
# Servers that never give a complete answer in time: their checks must time out.
TIMING_OUT = ("slow_header", "slow_body_length", "slow_body_close", "slow_chunked", "silent")
# Every behaviour that must end as a failure (endless_chunked may also succeed, its body capped).
FAILING = (*TIMING_OUT, "reset", "huge_headers")
HOSTILE_SITES = (*FAILING, "endless_chunked")
CHARSET_PAGES = {
    "utf8_no_charset": "Größe",
    "latin1_no_type": "Café crème",
    "meta_1252": "naïve ‘quotes’",
}
CERT_WARNING_DAYS = 14
Invoke = Callable[..., dict[str, Any]]
Sites = Callable[[str], None]


@pytest.fixture(scope="module")
def hostile() -> Iterator[dict[str, int]]:
    """The hostile servers (hostile.py) in their own process: behaviour -> port on 127.0.0.1."""
    process = subprocess.Popen([sys.executable, str(HOSTILE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None
    try:
        line = process.stdout.readline()
        assert line, f"hostile.py exited before listening (status {process.poll()})"
        ports: dict[str, int] = json.loads(line)
        yield ports
    finally:
        process.stdin.close()  # hostile.py exits when its stdin closes
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()


def site(ports: dict[str, int], name: str, timeout: float, expect_text: str | None = None) -> Site:
    return Site(url=f"http://127.0.0.1:{ports[name]}/", name=name, timeout=timeout, expect_text=expect_text)


def check(sites: list[Site]) -> tuple[dict[str, Probe], float]:
    """name -> probe, every site checked at once within a generous budget (60 s, nothing
    reserved), and the seconds it took."""
    started = time.monotonic()
    checked = service.probe_all(sites, Deadline(remaining_at_start=60, reserve=0), datetime.now(UTC))
    elapsed = time.monotonic() - started
    return {s.name: p for s, p in checked}, elapsed


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_every_hostile_check_ends_within_its_timeout_plus_one_second(hostile: dict[str, int]) -> None:
    sites = [site(hostile, name, timeout=2.0) for name in HOSTILE_SITES]
    sites.append(site(hostile, "ok", timeout=2.0, expect_text="Welcome"))  # a good site among them
    probes, elapsed = check(sites)
    assert elapsed < 2.0 + 1.0, f"probe_all took {elapsed:.1f} s for checks of 2 s run at once"
    assert sorted(probes) == sorted(s.name for s in sites), "sites left out of the run"
    for name in FAILING:
        assert probes[name].failure is not None, f"{name}: {probes[name]}"
    for name in TIMING_OUT:
        assert probes[name].failure[0] == "timeout", f"{name}: {probes[name].failure}"
    assert probes["reset"].failure[0] in ("error", "refused"), probes["reset"].failure
    endless = probes["endless_chunked"]
    if endless.failure is None:  # read up to the body limit, then let go
        assert endless.http_status == 200 and 0 < endless.body_chars <= service.MAX_BODY_BYTES
    good = probes["ok"]
    assert good.failure is None and good.http_status == 200 and good.text_found is True


@pytest.mark.slow
def test_warm_invocations_leak_no_thread_and_no_socket(
    hostile: dict[str, int], invoke: Invoke, sites: Sites
) -> None:
    listed = [{"url": f"http://127.0.0.1:{hostile[n]}/", "name": n, "timeout": 1} for n in HOSTILE_SITES]
    listed.append({"url": f"http://127.0.0.1:{hostile['ok']}/", "name": "ok", "expect_text": "Welcome"})
    sites(json.dumps(listed))
    seen: list[tuple[int, int]] = []
    for _ in range(20):
        result = invoke()
        assert result["Checked"] == len(listed)
        gc.collect()  # what is still open is held by something, not garbage waiting for the collector
        seen.append((threading.active_count(), open_descriptors()))
    # The first run may make what every run reuses (the event loop, clients); none adds to it.
    # Every run is compared, not only the 20th: a thread stuck on a trickling server may end
    # some runs later (a per-read timeout), so a leaking engine is not always caught at the 20th.
    assert seen[-1] == seen[0], f"(threads, open file descriptors) after each run: {seen}"
    assert all(after == seen[0] for after in seen), f"(threads, open file descriptors) after each run: {seen}"


def test_pages_are_decoded_as_browsers_decode_them(hostile: dict[str, int]) -> None:
    sites = [site(hostile, name, timeout=5.0, expect_text=text) for name, text in CHARSET_PAGES.items()]
    probes, _ = check(sites)
    for s in sites:
        probe = probes[s.name]
        assert probe.failure is None and probe.text_found is True, f"{s.name}: {probe}"
        result = classify(s, probe, CERT_WARNING_DAYS)
        assert result.status is Status.UP, f"{s.name}: {result.reason}"


def test_a_silent_server_is_down_for_its_timeout(hostile: dict[str, int]) -> None:
    quiet = site(hostile, "silent", timeout=1.0)
    result = classify(quiet, service.probe(quiet, 10, datetime.now(UTC)), CERT_WARNING_DAYS)
    assert result.status is Status.DOWN and result.category == "timeout"
    assert "timeout" in result.reason.lower() or "timed out" in result.reason.lower(), result.reason
