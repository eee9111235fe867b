"""decide.py, pure: the site list parser, what a probe means, and the state machine (no network,
no AWS, no clock)."""

from __future__ import annotations

import math
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
    Window,
    advance,
    check_order,
    classify,
    parse_site_lists,
    parse_sites,
    scrub,
    site_key,
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


OBSERVED = [Status.UP, Status.DEGRADED, Status.DOWN]  # what one check can see (never FLAPPING)


@given(
    statuses=st.lists(st.sampled_from(OBSERVED), max_size=40),
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


# -- the flapping window -----------------------------------------------------------------------

WINDOW = Window(failures=4, size=10)


def flap(statuses: list[Status], threshold: int = 2, window: Window = WINDOW) -> list[str]:
    state, kinds = SiteState(url="u"), []
    for i, status in enumerate(statuses):
        state, transition = advance(state, status, "r", threshold, NOW + timedelta(minutes=5 * i), window)
        kinds.append(transition.kind if transition else "-")
    return kinds


def test_a_site_alternating_503_and_200_is_flapping_once_then_recovered_after_a_clean_window() -> None:
    alternating = [Status.DOWN, Status.UP] * 6
    kinds = flap(alternating + [Status.UP] * 10)
    assert kinds[:7] == ["-", "-", "-", "-", "-", "-", "FLAPPING"]  # the 4th failure of 7 checks
    assert kinds.count("FLAPPING") == 1 and kinds.count("DOWN") == 0
    # RECOVERED exactly when the last 10 checks are all good: the 10th good one after the last failure.
    last_failure = max(i for i, s in enumerate(alternating) if s is Status.DOWN)
    assert kinds.index("RECOVERED") == last_failure + 10
    assert kinds.count("RECOVERED") == 1


def test_a_flapping_site_that_stays_down_is_down() -> None:
    kinds = flap([Status.DOWN, Status.UP] * 4 + [Status.DOWN, Status.DOWN])
    assert kinds.count("FLAPPING") == 1 and kinds[-1] == "DOWN"


def test_an_outage_is_down_not_flapping_and_a_recovery_does_not_count_its_failures_twice() -> None:
    kinds = flap([Status.DOWN] * 8 + [Status.UP] * 12)
    assert kinds.count("DOWN") == 1 and kinds.count("FLAPPING") == 0 and kinds[8] == "RECOVERED"


def test_a_site_that_stays_down_writes_nothing_more() -> None:
    state, _ = advance(SiteState(url="u"), Status.DOWN, "r", 1, NOW, WINDOW)
    again, transition = advance(state, Status.DOWN, "r", 1, NOW + timedelta(minutes=5), WINDOW)
    assert transition is None and again == state


def test_a_healthy_site_keeps_no_window() -> None:
    state = SiteState(url="u")
    for _ in range(30):
        state, _ = advance(state, Status.UP, "ok", 2, NOW, WINDOW)
    assert state == SiteState(url="u")


def test_the_window_rule_can_be_off() -> None:
    assert "FLAPPING" not in flap([Status.DOWN, Status.UP] * 20, window=Window(failures=0, size=10))


@given(
    statuses=st.lists(st.sampled_from(OBSERVED), max_size=60),
    failures=st.integers(min_value=3, max_value=6),
    size=st.integers(min_value=6, max_value=12),
)
def test_flapping_is_reported_exactly_when_the_window_says_so(
    statuses: list[Status], failures: int, size: int
) -> None:
    """FLAPPING only after a failed check with >= failures of the last `size` checks failed
    (counted while not DOWN), RECOVERED from FLAPPING only after `size` good checks in a row,
    and every transition a change."""
    window = Window(failures=failures, size=size)
    state, reported = SiteState(url="u"), Status.UP
    for i, status in enumerate(statuses):
        before = state
        state, transition = advance(state, status, "r", 2, NOW + timedelta(minutes=i), window)
        if transition is None:
            assert state.reported is reported
            continue
        assert transition.old is reported is not transition.new
        if transition.new is Status.FLAPPING:
            assert status is Status.DOWN and before.reported is not Status.DOWN
            assert transition.recent.count("x") >= failures and len(transition.recent) <= size
        if before.reported is Status.FLAPPING and transition.new is not Status.DOWN:
            good = statuses[max(0, i - size + 1) : i + 1]
            assert len(good) == size and Status.DOWN not in good
        reported = transition.new


# -- fair order ---------------------------------------------------------------------------------


@given(
    size=st.integers(min_value=1, max_value=40),
    capacities=st.lists(st.floats(min_value=0.5, max_value=1.0), min_size=2, max_size=12),
)
def test_every_site_is_checked_at_least_every_other_run_when_a_run_checks_half(
    size: int, capacities: list[float]
) -> None:
    """Each run checks the first `capacity` of its order (the budget's cut): with at least half
    the list per run, no site goes two runs in a row unchecked."""
    sites = [Site(url=f"https://s{i}.example", name=f"s{i}") for i in range(size)]
    not_checked: set[str] = set()
    missed_last: set[str] = set()
    for share in capacities:
        order = check_order(sites, not_checked)
        assert sorted(s.url for s in order) == sorted(s.url for s in sites)  # nobody lost or doubled
        done = order[: math.ceil(size * share)]
        missed = {s.url for s in sites} - {s.url for s in done}
        assert not missed & missed_last
        missed_last = missed
        not_checked = {site_key(u) for u in missed}


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


# -- the size limit and split lists -----------------------------------------------------------


def test_2000_sites_over_several_parameters_are_one_list_and_2001_a_clear_error() -> None:
    urls = [f"https://s{i}.example" for i in range(2001)]
    lists = [(f"/p/sites/{n}", ", ".join(urls[n * 500 : (n + 1) * 500])) for n in range(4)]
    assert len(parse_site_lists(lists)) == 2000
    with pytest.raises(SiteConfigError) as err:
        parse_site_lists([*lists, ("/p/sites/5", urls[2000])])
    assert err.value.problems == [
        "2,001 sites listed; at most 2,000 per stack (deploy another stack for the rest)"
    ]


def test_a_problem_in_a_split_list_names_its_parameter_and_a_site_in_two_is_listed_twice() -> None:
    with pytest.raises(SiteConfigError) as err:
        parse_site_lists([("/p/sites", "https://a.example"), ("/p/sites/b", "https://b.example, ftp://x")])
    assert err.value.problems == [
        "/p/sites/b: site 2: url 'ftp://x' is not an http:// or https:// URL with a host"
    ]
    with pytest.raises(SiteConfigError) as err:
        parse_site_lists([("/p/sites", "https://a.example"), ("/p/sites/b", "https://a.example")])
    assert err.value.problems == ["https://a.example is listed twice"]
