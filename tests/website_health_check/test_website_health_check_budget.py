"""The time budget of a run (the Lambda context's remaining time less the runner's 20 s reserve,
autopilot.runtime.Deadline): the real handler with a nearly spent budget checks the sites
that answer in time, leaves the others unchecked - counted as Skipped, logged, their state
untouched, not mailed - and never marks a site it could not check DOWN."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from typing import Any

import pytest

from conftest import FakeContext
from demo.websites import SiteHandler
from website_health_check import app
from website_health_check.decide import DEFAULT_TIMEOUT

pytestmark = pytest.mark.integration
Mailbox = Callable[[], list[dict[str, Any]]]
Sites = Callable[[str], None]
States = Callable[[], dict[str, str]]
RESERVE_MS = 20_000  # the runner keeps 20 s for reporting (Deadline.from_context)
NOT_CHECKED = "time budget spent; sites not checked this run"


class Handler(SiteHandler):
    """SiteHandler, plus /hang (answers only when the test ends) and a log of the requests."""

    def do_GET(self) -> None:
        self.server.requests.append(self.path)  # type: ignore[attr-defined]
        if self.path.startswith("/hang"):
            self.server.release.wait(60)  # type: ignore[attr-defined]
        super().do_GET()


@pytest.fixture
def web() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.requests = []  # type: ignore[attr-defined]
    server.release = threading.Event()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.release.set()  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


@pytest.fixture
def run(
    health_env: dict[str, str],
    scheduled: Callable[[], dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> Callable[[int], dict[str, Any]]:
    """run(budget_ms): one scheduled run whose context has the reserve plus ``budget_ms`` left;
    one failed check makes a site DOWN (so an unchecked site taken for failed would show)."""
    monkeypatch.setenv("FAILURES_BEFORE_DOWN", "1")
    caplog.set_level(logging.INFO)

    def invoke(budget_ms: int) -> dict[str, Any]:
        result: dict[str, Any] = app.lambda_handler(
            scheduled(), FakeContext(remaining_ms=RESERVE_MS + budget_ms)
        )  # type: ignore[arg-type]
        return result

    return invoke


def not_checked(caplog: pytest.LogCaptureFixture) -> list[list[str]]:
    """The URLs of each "not checked" warning, sorted."""
    return [sorted(r.urls) for r in caplog.records if r.getMessage() == NOT_CHECKED]  # type: ignore[attr-defined]


def base(web: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{web.server_port}"


def test_a_nearly_spent_budget_checks_what_fits_and_leaves_the_rest_unchecked(
    web: ThreadingHTTPServer,
    run: Callable[[int], dict[str, Any]],
    sites: Sites,
    states: States,
    mailbox: Mailbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ok, error, hang = f"{base(web)}/ok", f"{base(web)}/error", f"{base(web)}/hang"
    sites(f"{ok}, {hang}, {error}")
    started = time.monotonic()
    result = run(1_500)
    assert time.monotonic() - started < DEFAULT_TIMEOUT  # it did not wait for the site's own timeout
    assert (result["Checked"], result["Skipped"], result.get("SitesDown", 0), result["Changed"]) == (
        2,
        1,
        1,
        1,
    )
    assert not_checked(caplog) == [[hang]]
    assert states() == {error: "DOWN"}  # the unchecked site has no state: not DOWN, not a failure
    (mail,) = mailbox()
    assert mail["subject"] == f"[ops-autopilot-test] DOWN: {error} - HTTP 500, expected 200-399"
    assert hang not in mail["body"]
    assert sorted(web.requests) == ["/error", "/hang", "/ok"]  # type: ignore[attr-defined]


def test_a_probe_the_budget_cut_short_is_not_a_timeout_of_the_site(
    web: ThreadingHTTPServer,
    run: Callable[[int], dict[str, Any]],
    sites: Sites,
    states: States,
    mailbox: Mailbox,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A check's timeout is capped at the budget left. Its "no answer within 1.5 s" is the
    budget's, not the site's (whose own timeout is 10 s): the site is not checked. A site whose
    own timeout is the shorter one did time out: that is a check, and it fails."""
    cut, own = f"{base(web)}/hang?cut", f"{base(web)}/hang?own"
    sites(json.dumps([{"url": cut}, {"url": own, "timeout": 0.5}]))
    result = run(1_500)
    assert (result["Checked"], result["Skipped"], result.get("SitesDown", 0)) == (1, 1, 1)
    assert not_checked(caplog) == [[cut]]
    assert states() == {own: "DOWN"}
    (mail,) = mailbox()
    assert mail["subject"].startswith(f"[ops-autopilot-test] DOWN: {own} - ")
    assert "connected, but no answer within 0.5 s (timeout)" in mail["body"]
    assert cut not in mail["body"]


def test_a_spent_budget_checks_nothing_and_sends_no_request(
    web: ThreadingHTTPServer,
    run: Callable[[int], dict[str, Any]],
    sites: Sites,
    states: States,
    mailbox: Mailbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    listed = [f"{base(web)}/ok", f"{base(web)}/error"]
    sites(", ".join(listed))
    result = run(-5_000)  # less than the reserve left: no time for any check
    assert (result["Checked"], result["Skipped"], result.get("SitesDown", 0), result["Changed"]) == (
        0,
        2,
        0,
        0,
    )
    assert not_checked(caplog) == [sorted(listed)]
    assert states() == {} and mailbox() == []
    time.sleep(0.5)  # a probe started anyway would reach the local server within milliseconds
    assert web.requests == []  # type: ignore[attr-defined]
