"""Real HTTP(S) checks against local servers on 127.0.0.1: every reason is told apart."""

from __future__ import annotations

from http.server import ThreadingHTTPServer

import pytest

from website_health_check.probe import MAX_BODY_BYTES, check_site
from website_health_check.sites import Site
from website_health_check.transitions import Status

pytestmark = pytest.mark.integration


def url(server: ThreadingHTTPServer, path: str, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{server.server_port}{path}"


def site(u: str, **options: object) -> Site:
    return Site(url=u, name=u, **options)  # type: ignore[arg-type]


def test_healthy_site_is_up_with_latency(web: ThreadingHTTPServer) -> None:
    result = check_site(site(url(web, "/ok"), expect_text="Welcome"), budget_s=10, cert_warning_days=14)
    assert result.status is Status.UP and result.category == "ok" and result.http_status == 200
    assert result.latency_ms is not None and result.latency_ms > 0 and result.cert_days_left is None


def test_server_error_is_down_with_the_status(web: ThreadingHTTPServer) -> None:
    result = check_site(site(url(web, "/error")), budget_s=10, cert_warning_days=14)
    assert result.status is Status.DOWN and result.category == "status"
    assert "HTTP 500" in result.reason and "200-399" in result.reason


def test_missing_text_is_down(web: ThreadingHTTPServer) -> None:
    result = check_site(
        site(url(web, "/wrongtext"), expect_text="Welcome"), budget_s=10, cert_warning_days=14
    )
    assert result.status is Status.DOWN and result.category == "text" and "'Welcome' missing" in result.reason


def test_text_is_searched_in_the_whole_capped_body_not_the_first_5kb(web: ThreadingHTTPServer) -> None:
    # /big puts the text after 2 MiB: beyond the 1 MiB cap, so it is reported missing ...
    result = check_site(site(url(web, "/big"), expect_text="Welcome"), budget_s=10, cert_warning_days=14)
    assert result.category == "text" and f"{MAX_BODY_BYTES:,}" in result.reason
    # ... while text far past 5 KB but inside the cap is found.
    result = check_site(site(url(web, "/big"), expect_text="xxxxx"), budget_s=10, cert_warning_days=14)
    assert result.status is Status.UP


def test_slow_beyond_timeout_is_a_timeout(web: ThreadingHTTPServer) -> None:
    result = check_site(site(url(web, "/slow"), timeout=0.5), budget_s=10, cert_warning_days=14)
    assert result.status is Status.DOWN and result.category == "timeout"


def test_the_time_budget_caps_the_site_timeout(web: ThreadingHTTPServer) -> None:
    result = check_site(site(url(web, "/slow"), timeout=30), budget_s=0.5, cert_warning_days=14)
    assert result.category == "timeout"


def test_slow_within_timeout_but_over_latency_limit_is_degraded(web: ThreadingHTTPServer) -> None:
    result = check_site(site(url(web, "/slow"), max_latency_ms=200), budget_s=10, cert_warning_days=14)
    assert result.status is Status.DEGRADED and result.category == "slow" and "limit 200 ms" in result.reason


def test_redirects_are_followed_and_loops_detected(web: ThreadingHTTPServer) -> None:
    assert check_site(site(url(web, "/moved")), budget_s=10, cert_warning_days=14).status is Status.UP
    result = check_site(site(url(web, "/redirect-loop")), budget_s=10, cert_warning_days=14)
    assert result.status is Status.DOWN and result.category == "redirects"


def test_connection_refused(closed_port: int) -> None:
    result = check_site(site(f"http://127.0.0.1:{closed_port}/"), budget_s=10, cert_warning_days=14)
    assert result.status is Status.DOWN and result.category == "refused"


def test_dns_failure() -> None:
    # .invalid never resolves (RFC 2606); the lookup fails locally, no traffic leaves the machine.
    result = check_site(site("http://no-such-host.invalid/"), budget_s=10, cert_warning_days=14)
    assert result.status is Status.DOWN and result.category == "dns"


def test_certificate_expiring_in_3_days_is_degraded(tls_web: ThreadingHTTPServer) -> None:
    result = check_site(site(url(tls_web, "/ok", "https")), budget_s=10, cert_warning_days=14)
    assert result.status is Status.DEGRADED and result.category == "cert_expiring"
    assert result.cert_days_left is not None and 2.9 < result.cert_days_left <= 3.0
    assert (
        check_site(site(url(tls_web, "/ok", "https")), budget_s=10, cert_warning_days=2).status is Status.UP
    )


def test_untrusted_certificate_is_a_tls_error(untrusted_tls_web: ThreadingHTTPServer) -> None:
    result = check_site(site(url(untrusted_tls_web, "/ok", "https")), budget_s=10, cert_warning_days=14)
    assert result.status is Status.DOWN and result.category == "tls" and "TLS error" in result.reason
