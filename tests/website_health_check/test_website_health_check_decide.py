"""decide.py, pure: the site list parser, what a probe means, and the state machine (no network,
no AWS, no clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from website_health_check.decide import (
    Probe,
    Site,
    SiteConfigError,
    SiteState,
    Status,
    advance,
    classify,
    parse_sites,
    scrub,
)

pytestmark = pytest.mark.unit
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def test_comma_separated_urls_get_defaults() -> None:
    sites = parse_sites(" https://example.com ,\nhttp://intranet.local:8080/health ")
    assert [s.url for s in sites] == ["https://example.com", "http://intranet.local:8080/health"]
    assert sites[0].accepts(200) and sites[0].accepts(399) and not sites[0].accepts(404)
    assert sites[0].timeout == 10 and sites[0].expect_text is None


def test_json_list_with_every_option() -> None:
    (site,) = parse_sites(
        '[{"url": "https://shop.example.com", "name": "shop", "expect_text": "Welcome",'
        ' "status": "200, 301-302", "timeout": 5, "max_latency_ms": 800}]'
    )
    assert site.name == "shop" and site.expect_text == "Welcome" and site.timeout == 5
    assert site.status_ranges == ((200, 200), (301, 302)) and site.max_latency_ms == 800
    assert site.accepts(302) and not site.accepts(201)


@pytest.mark.parametrize("text", ["", "   ", "[]"])
def test_empty_list_means_no_sites(text: str) -> None:
    assert parse_sites(text) == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[{", "not valid JSON"),
        ('{"url": "https://a.com"}', "must be a list"),
        ("ftp://files.example.com", "not an http:// or https:// URL"),
        ("https://", "not an http:// or https:// URL"),
        ('[{"url": "https://a.com", "timeout": 0}]', "timeout must be"),
        ('[{"url": "https://a.com", "timeout": "5"}]', "timeout must be"),
        ('[{"url": "https://a.com", "status": "2xx"}]', "status '2xx'"),
        ('[{"url": "https://a.com", "status": "399-200"}]', "status"),
        ('[{"url": "https://a.com", "max_latency_ms": -1}]', "max_latency_ms"),
        ('[{"url": "https://a.com", "expect": "x"}]', "unknown field(s) expect"),
        ('[{"url": "https://a.com", "expect_text": ""}]', "expect_text"),
        ("https://a.com, https://a.com", "listed twice"),
        ("[42]", "must be a URL or an object"),
    ],
)
def test_malformed_lists_name_the_problem(text: str, problem: str) -> None:
    with pytest.raises(SiteConfigError) as err:
        parse_sites(text)
    assert problem in str(err.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SiteConfigError) as err:
        parse_sites('[{"url": "nope"}, {"url": "https://ok.com", "timeout": 999}]')
    assert len(err.value.problems) == 2


def run(state: SiteState, statuses: list[Status], threshold: int = 2) -> list[str]:
    kinds = []
    for i, status in enumerate(statuses):
        state, transition = advance(state, status, f"reason {i}", threshold, NOW + timedelta(minutes=5 * i))
        kinds.append(transition.kind if transition else "-")
    return kinds


def test_down_after_threshold_then_recovered_once() -> None:
    s = SiteState(url="u")
    assert run(s, [Status.DOWN, Status.DOWN, Status.DOWN, Status.DOWN, Status.UP, Status.UP]) == [
        "-", "DOWN", "-", "-", "RECOVERED", "-",
    ]  # fmt: skip


def test_a_single_blip_mails_nothing() -> None:
    s = SiteState(url="u")
    assert run(s, [Status.UP, Status.DOWN, Status.UP, Status.DOWN, Status.UP]) == ["-"] * 5


def test_threshold_one_reports_immediately() -> None:
    assert run(SiteState(url="u"), [Status.DOWN, Status.UP], threshold=1) == ["DOWN", "RECOVERED"]


def test_degraded_and_down_are_separate_states() -> None:
    kinds = run(SiteState(url="u"), [Status.DEGRADED, Status.DEGRADED, Status.DOWN, Status.DOWN, Status.UP])
    assert kinds == ["-", "DEGRADED", "-", "DOWN", "RECOVERED"]


def test_recovered_carries_when_it_went_down() -> None:
    state, _ = advance(SiteState(url="u"), Status.DOWN, "refused", 1, NOW)
    _, transition = advance(state, Status.UP, "ok", 1, NOW + timedelta(minutes=30))
    assert transition is not None and transition.down_since == NOW.isoformat()
    assert transition.old is Status.DOWN and transition.kind == "RECOVERED"


@given(
    statuses=st.lists(st.sampled_from(list(Status)), max_size=40),
    threshold=st.integers(min_value=1, max_value=5),
)
def test_mails_only_on_changes_and_never_twice_in_a_row_for_the_same_state(
    statuses: list[Status], threshold: int
) -> None:
    state = SiteState(url="u")
    reported = Status.UP
    for i, status in enumerate(statuses):
        state, transition = advance(state, status, "r", threshold, NOW + timedelta(minutes=i))
        if transition:
            assert transition.old == reported != transition.new == status
            reported = transition.new
        assert state.reported == reported
    # A problem is reported only after `threshold` consecutive observations of it.
    for i in range(len(statuses)):
        state = SiteState(url="u")
        for j, status in enumerate(statuses[: i + 1]):
            state, transition = advance(state, status, "r", threshold, NOW)
            if transition and transition.new is not Status.UP:
                window = statuses[max(0, j - threshold + 1) : j + 1]
                assert len(window) == threshold and set(window) == {transition.new}


# -- classify: what one probe means --------------------------------------------------------


def answer(**facts: object) -> Probe:
    defaults: dict[str, object] = {"http_status": 200, "latency_ms": 120.04, "body_chars": 900}
    return Probe("https://shop.example.com", **{**defaults, **facts})  # type: ignore[arg-type]


SHOP = Site("https://shop.example.com", "shop")


def test_a_good_answer_is_up_with_its_numbers() -> None:
    result = classify(SHOP, answer(cert_days_left=80.5), cert_warning_days=14)
    assert (result.status, result.category, result.reason) == (Status.UP, "ok", "HTTP 200 in 120 ms")
    assert result.latency_ms == 120.0 and result.cert_days_left == 80.5 and result.available


def test_no_answer_is_down_with_the_probes_own_reason() -> None:
    result = classify(SHOP, Probe(SHOP.url, ("refused", "connection refused")), cert_warning_days=14)
    assert (result.status, result.category, result.reason) == (Status.DOWN, "refused", "connection refused")
    assert result.http_status is None and result.latency_ms is None and not result.available


def test_an_unaccepted_status_is_down_naming_what_was_expected() -> None:
    site = Site(SHOP.url, "shop", status_ranges=((200, 200), (301, 302)))
    result = classify(site, answer(http_status=503), cert_warning_days=14)
    assert result.status is Status.DOWN and result.reason == "HTTP 503, expected 200, 301-302"
    assert result.http_status == 503


def test_missing_text_is_down_and_says_how_much_was_searched() -> None:
    site = Site(SHOP.url, "shop", expect_text="Welcome")
    result = classify(site, answer(text_found=False, body_chars=1_048_576), cert_warning_days=14)
    assert result.status is Status.DOWN and result.category == "text"
    assert result.reason == "expected text 'Welcome' missing (HTTP 200, first 1,048,576 characters searched)"
    assert classify(site, answer(text_found=True), cert_warning_days=14).status is Status.UP


def test_the_status_is_judged_before_the_text_and_the_text_before_the_speed() -> None:
    site = Site(SHOP.url, "shop", expect_text="Welcome", max_latency_ms=100)
    assert classify(site, answer(http_status=500, text_found=False), 14).category == "status"
    assert classify(site, answer(text_found=False, latency_ms=900), 14).category == "text"
    assert classify(site, answer(text_found=True, latency_ms=900, cert_days_left=1), 14).category == "slow"


def test_slow_and_expiring_certificates_are_degraded() -> None:
    slow = classify(Site(SHOP.url, "shop", max_latency_ms=200), answer(latency_ms=230.6), 14)
    assert slow.status is Status.DEGRADED and slow.reason == "too slow: 231 ms, limit 200 ms"
    expiring = classify(SHOP, answer(cert_days_left=3.04), cert_warning_days=14)
    assert expiring.status is Status.DEGRADED and expiring.category == "cert_expiring"
    assert expiring.reason == "TLS certificate expires in 3.0 days (warning below 14)"
    assert classify(SHOP, answer(cert_days_left=3.04), cert_warning_days=2).status is Status.UP


@pytest.mark.parametrize(
    ("configured", "shown"),
    [
        ("https://example.com/health", "https://example.com/health"),
        ("https://user:pass@example.com:8443/x", "https://example.com:8443/x"),
        ("https://example.com/ping?token=abc123&name=web", "https://example.com/ping?token=***&name=web"),
        (
            "https://example.com/?X-Amz-Signature=f00d&X-Amz-Credential=me",
            "https://example.com/?X-Amz-Signature=***&X-Amz-Credential=***",
        ),
        ("https://example.com/?q=token", "https://example.com/?q=token"),  # a value, not a key
    ],
)
def test_a_site_is_shown_without_its_secrets_and_requested_with_them(configured: str, shown: str) -> None:
    (site,) = parse_sites(configured)
    assert site.url == shown and site.name == shown
    assert site.target == configured


def test_secrets_are_cut_out_of_any_text_about_the_site() -> None:
    url = "https://al%40ce:p%2Fss@example.com/?token=t0k3n"
    text = "GET https://al%40ce:p%2Fss@example.com/?token=t0k3n failed for al@ce (p/ss)"
    assert scrub(text, url) == "GET https://***:***@example.com/?token=*** failed for *** (***)"
    with pytest.raises(SiteConfigError) as raised:
        parse_sites('[{"url": "ftp://root:hunter2@example.com/"}]')
    assert "hunter2" not in str(raised.value) and "ftp://example.com/" in str(raised.value)
