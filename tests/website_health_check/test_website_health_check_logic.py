"""Pure logic: the site list parser and the state machine (no network, no AWS)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from website_health_check.sites import SiteConfigError, parse_sites
from website_health_check.transitions import SiteState, Status, advance

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
