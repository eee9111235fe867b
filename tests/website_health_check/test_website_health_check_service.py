"""service.py: real HTTP(S) probes against local servers on 127.0.0.1 (every reason is told
apart, judged by decide.classify as a run does), all sites at once within the time budget,
and the site list read from SSM (moto)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest
from cryptography import x509

from autopilot.recorder import CallRecorder
from autopilot.runtime import Deadline
from conftest import REGION
from website_health_check import service
from website_health_check.decide import CheckResult, Site, Status, classify
from website_health_check.service import MAX_BODY_BYTES

pytestmark = pytest.mark.integration


def check_site(
    site: Site, budget_s: float, cert_warning_days: int, now: datetime | None = None
) -> CheckResult:
    """One site as a run checks it at ``now``: the probe (service), then its meaning (decide)."""
    return classify(site, service.probe(site, budget_s, now or datetime.now(UTC)), cert_warning_days)


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


def test_certificate_expiring_in_3_days_is_degraded(tls_web: ThreadingHTTPServer, tmp_path: Path) -> None:
    # The run's "now" is pinned to 3 days before the certificate's expiry (the handshake itself
    # checks the certificate against the real clock, so the certificate is made from it).
    expires = x509.load_pem_x509_certificate((tmp_path / "cert.pem").read_bytes()).not_valid_after_utc
    now = expires - timedelta(days=3)
    result = check_site(site(url(tls_web, "/ok", "https")), budget_s=10, cert_warning_days=14, now=now)
    assert result.status is Status.DEGRADED and result.category == "cert_expiring"
    assert result.cert_days_left == 3.0
    assert result.reason == "TLS certificate expires in 3.0 days (warning below 14)"
    later = check_site(
        site(url(tls_web, "/ok", "https")), 10, cert_warning_days=14, now=now + timedelta(hours=6)
    )
    assert later.cert_days_left == 2.75
    not_yet = check_site(site(url(tls_web, "/ok", "https")), budget_s=10, cert_warning_days=3, now=now)
    assert not_yet.status is Status.UP and not_yet.cert_days_left == 3.0  # warned only below 3 days


def test_untrusted_certificate_is_a_tls_error(untrusted_tls_web: ThreadingHTTPServer) -> None:
    result = check_site(site(url(untrusted_tls_web, "/ok", "https")), budget_s=10, cert_warning_days=14)
    assert result.status is Status.DOWN and result.category == "tls" and "TLS error" in result.reason


def test_a_probe_records_facts_not_judgements(web: ThreadingHTTPServer) -> None:
    found = service.probe(site(url(web, "/wrongtext"), expect_text="Welcome"), 10, datetime.now(UTC))
    assert found.failure is None and found.http_status == 200 and found.text_found is False
    assert found.body_chars == len("Maintenance page") and found.cert_days_left is None
    assert service.probe(site(url(web, "/ok")), 10, datetime.now(UTC)).text_found is None  # nothing expected


def test_all_sites_are_probed_at_once_in_list_order(web: ThreadingHTTPServer) -> None:
    sites = [site(url(web, f"/slow?{i}")) for i in range(8)]  # each answers after 1.5 s
    started = time.monotonic()
    probes = service.probe_all(sites, Deadline(remaining_at_start=60, reserve=0), datetime.now(UTC))
    assert time.monotonic() - started < 5  # in parallel: not 8 x 1.5 s
    assert [s.url for s, _ in probes] == [s.url for s in sites] == [p.url for _, p in probes]


def test_sites_not_done_within_the_budget_are_left_out(web: ThreadingHTTPServer) -> None:
    fast, slow = site(url(web, "/ok")), site(url(web, "/slow"), timeout=30)
    probes = service.probe_all([slow, fast], Deadline(remaining_at_start=0.8, reserve=0), datetime.now(UTC))
    assert [s.url for s, _ in probes] == [fast.url]


def test_no_sites_probes_nothing() -> None:
    assert service.probe_all([], Deadline(remaining_at_start=10), datetime.now(UTC)) == []


def test_the_site_list_is_one_get_parameters_by_path(calls: CallRecorder) -> None:
    boto3.client("ssm", region_name=REGION).put_parameter(
        Name="/t/sites", Value="https://a.example", Type="String"
    )
    assert service.site_lists("/t/sites") == [("/t/sites", "https://a.example")]
    assert calls.by_operation() == {"ssm.GetParametersByPath": 1}


def test_a_list_split_over_parameters_is_read_with_its_folder_and_nothing_else(calls: CallRecorder) -> None:
    ssm = boto3.client("ssm", region_name=REGION)
    for name, value in [
        ("/t/sites", "https://a.example"),
        ("/t/sites/shop", "https://shop.example"),
        ("/t/sites/api/v2", "https://api.example"),
        ("/t/sites-old", "https://old.example"),  # same folder, another name: not the list
        ("/t/other", "https://other.example"),
    ]:
        ssm.put_parameter(Name=name, Value=value, Type="String")
    assert service.site_lists("/t/sites") == [
        ("/t/sites", "https://a.example"),
        ("/t/sites/api/v2", "https://api.example"),
        ("/t/sites/shop", "https://shop.example"),
    ]
    assert calls.by_operation() == {"ssm.GetParametersByPath": 1}


def test_a_missing_site_list_says_so() -> None:
    with pytest.raises(LookupError, match="/t/nothing does not exist"):
        service.site_lists("/t/nothing")


def test_per_site_metrics_are_emf_lines_with_the_site_dimension(capsys: pytest.CaptureFixture[str]) -> None:
    up = CheckResult("https://a.example", Status.UP, "ok", "ok", 200, 12.5, 30.0)
    down = CheckResult("https://b.example", Status.DOWN, "refused", "refused")
    service.emit_site_metrics([up, down])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    seen = {
        (d["site"], m["Name"]): d[m["Name"]]
        for d in lines
        for m in d["_aws"]["CloudWatchMetrics"][0]["Metrics"]
    }
    assert seen == {
        ("https://a.example", "Availability"): [1.0],
        ("https://a.example", "Latency"): [12.5],
        ("https://a.example", "CertificateDaysLeft"): [30.0],
        ("https://b.example", "Availability"): [0.0],  # nothing else was measured
    }
    assert all(d["service"] == "website_health_check" for d in lines)
