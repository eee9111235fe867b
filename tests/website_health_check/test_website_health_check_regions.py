"""Checks from several regions with a quorum (decide/quorum.py): three simulated regions - the
home eu-west-1 and the members us-east-1 and ap-southeast-2, quorum 2 - each running the real
handler every 5 minutes on a simulated clock, each with its own outbox and topic in moto; only
the network is simulated (which regions cannot reach the site). The members store their results
in the home's results table; the home alone keeps states and mails.

- one region failing alone gives no DOWN (neither the home nor a member);
- two give one DOWN mail naming both and the region that still reaches the site, and one
  RECOVERED when they reach it again;
- a region that stops reporting is counted in RegionsSilent (its alarm's metric) from the
  home's first run after two periods, and withholds the verdicts it could tip: no mail is
  guessed from the regions left;
- the quorum arithmetic itself, pure and as a property over every combination."""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autopilot import aws, runner
from autopilot.runtime import Deadline
from conftest import FakeContext, create_outbox_table
from website_health_check import service, store
from website_health_check.decide import CheckResult, Probe, Site, Status
from website_health_check.decide.quorum import RegionReport, Regions, Seen, combine, silent_regions

HOME, US, AP = "eu-west-1", "us-east-1", "ap-southeast-2"
REGIONS = (HOME, US, AP)
SITE = "https://shop.example.com/"
OTHER = "https://api.example.com/health"
T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
RESULTS = "ops-autopilot-health-results"
WINDOW = timedelta(minutes=10)


# -- the arithmetic, pure --------------------------------------------------------------------


def own(status: Status, url: str = SITE) -> CheckResult:
    reason = "HTTP 200 in 80 ms" if status is not Status.DOWN else "connection refused"
    return CheckResult(url, status, reason, "ok" if status is Status.UP else "refused")


def report(region: str, at: datetime, s: Status) -> RegionReport:
    results = {SITE: Seen(s is Status.DOWN, s, "connection refused" if s is Status.DOWN else "HTTP 200")}
    return RegionReport(region, at, results)


@pytest.mark.unit
def test_down_needs_the_quorum_and_names_failing_up_and_silent_regions() -> None:
    regions, now = Regions(REGIONS, 2), T0
    alone, facts = combine(
        own(Status.DOWN),
        regions,
        {US: report(US, now, s=Status.UP), AP: report(AP, now, s=Status.UP)},
        now,
        WINDOW,
    )
    assert alone is not None and alone.status is Status.UP  # judged from where it answers
    assert alone.reason == "HTTP 200 (from us-east-1; failing from eu-west-1 only)"
    assert facts == {"failing_from": [HOME], "up_from": [US, AP], "no_result_from": []}
    two, _ = combine(
        own(Status.UP),
        regions,
        {US: report(US, now, s=Status.DOWN), AP: report(AP, now, s=Status.DOWN)},
        now,
        WINDOW,
    )
    assert two is not None and two.status is Status.DOWN
    assert two.reason == (
        "DOWN from us-east-1 and ap-southeast-2; up from eu-west-1 "
        "(us-east-1: connection refused; ap-southeast-2: connection refused)"
    )
    # A stale record is no result: with one failing region, the silent one could tip it.
    stale = report(AP, now - WINDOW - timedelta(seconds=1), s=Status.DOWN)
    withheld, facts = combine(
        own(Status.DOWN), regions, {US: report(US, now, s=Status.UP), AP: stale}, now, WINDOW
    )
    assert withheld is None and facts["no_result_from"] == [AP]
    # ... but with none failing and one silent, two cannot fail: UP.
    up, _ = combine(own(Status.UP), regions, {US: report(US, now, s=Status.UP), AP: stale}, now, WINDOW)
    assert up is not None and up.status is Status.UP
    # A record dated ahead of the home's clock is not believed.
    ahead = report(US, now + timedelta(minutes=5), s=Status.DOWN)
    assert silent_regions(regions, {US: ahead, AP: report(AP, now, s=Status.UP)}, now, WINDOW) == [US]


@pytest.mark.unit
@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=5),
    data=st.data(),
)
def test_the_verdict_is_down_exactly_at_quorum_and_never_guessed(n: int, data: st.DataObject) -> None:
    """For any regions, quorum and mix of failing / up / silent / stale members: DOWN iff at
    least quorum fresh results failed; a verdict (DOWN or not) only when the silent ones
    cannot change it; the mail's words name exactly the failing regions."""
    names = tuple(f"r{i}" for i in range(n))
    quorum = data.draw(st.integers(min_value=1, max_value=n))
    regions = Regions(names, quorum)
    home_failed = data.draw(st.booleans())
    states = data.draw(
        st.lists(st.sampled_from(["down", "up", "missing", "stale"]), min_size=n - 1, max_size=n - 1)
    )
    reports: dict[str, RegionReport | None] = {}
    for name, state in zip(names[1:], states, strict=True):
        if state == "missing":
            reports[name] = None
        else:
            at = T0 - (WINDOW * 2 if state == "stale" else timedelta(minutes=3))
            reports[name] = report(name, at, s=Status.DOWN if state == "down" else Status.UP)
    failing = int(home_failed) + states.count("down")
    silent = states.count("missing") + states.count("stale")
    result, facts = combine(own(Status.DOWN if home_failed else Status.UP), regions, reports, T0, WINDOW)
    assert len(facts["failing_from"]) == failing and len(facts["no_result_from"]) == silent
    if failing >= quorum:
        assert result is not None and result.status is Status.DOWN
        assert all(r in result.reason.split(";")[0] for r in facts["failing_from"])
    elif failing + silent >= quorum:
        assert result is None
    else:
        assert result is not None and result.status is not Status.DOWN
    assert silent_regions(regions, reports, T0, WINDOW) == [
        r for r, s in zip(names[1:], states, strict=True) if s in ("missing", "stale")
    ]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("regions", "quorum", "problem"),
    [
        ("eu-west-1,us-east-1", "3", "HEALTH_CHECK_QUORUM"),
        ("eu-west-1,eu-west-1", "1", "listed twice"),
        ("eu-west-1,mars-1", "1", "mars-1 is not a region name"),
    ],
)
def test_regions_and_quorum_that_cannot_work_are_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, regions: str, quorum: str, problem: str
) -> None:
    from autopilot.config import ConfigError
    from website_health_check.config import Config

    for key, value in {
        "SITES_PARAMETER": "/s/website-health-check/sites",
        "STATE_TABLE": "t",
        "RESULTS_TABLE": RESULTS,
        "SCHEDULE": "rate(5 minutes)",
        "HEALTH_CHECK_REGIONS": regions,
        "HEALTH_CHECK_QUORUM": quorum,
    }.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=problem):
        Config.from_env()
    monkeypatch.setenv("HEALTH_CHECK_REGIONS", "eu-west-1,us-east-1")
    monkeypatch.setenv("HEALTH_CHECK_QUORUM", "1")
    monkeypatch.setenv("SCHEDULE", "cron(0/5 * * * ? *)")
    with pytest.raises(ConfigError, match=r"needs a rate\(...\) schedule"):
        Config.from_env()


# -- three regions, the real handler ---------------------------------------------------------


class World:
    """Three regions' stacks in one moto, a simulated clock, and a network where some regions
    cannot reach some sites."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, health_env: dict[str, str]) -> None:
        self.monkeypatch, self.now = monkeypatch, T0
        self.unreachable: dict[str, set[str]] = {r: set() for r in REGIONS}  # region -> urls
        self.silent: set[str] = set()  # regions whose function no longer runs
        self.results: dict[str, dict[str, Any]] = {}  # region -> its last run's summary
        self.topics: dict[str, str] = {}
        self.probed: dict[str, int] = {r: 0 for r in REGIONS}
        monkeypatch.setattr(runner, "clock", lambda: self.now)
        monkeypatch.setattr(service, "probe_all", self._probe_all)
        monkeypatch.setenv("HEALTH_CHECK_REGIONS", ",".join(REGIONS))
        monkeypatch.setenv("HEALTH_CHECK_QUORUM", "2")
        monkeypatch.setenv("RESULTS_TABLE", RESULTS)
        monkeypatch.setenv("SCHEDULE", "rate(5 minutes)")
        boto3.client("dynamodb", region_name=HOME).create_table(
            TableName=RESULTS,
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
        self.env = health_env
        self.topics[HOME] = health_env["TOPIC_ARN"]
        for region in (US, AP):
            self.stack_in(region)

    def stack_in(self, region: str) -> None:
        """A member's own stack: its outbox and its topic."""
        if region in self.topics:
            return
        create_outbox_table(region=region)
        self.topics[region] = boto3.client("sns", region_name=region).create_topic(Name="alarms")["TopicArn"]
        self.probed.setdefault(region, 0)

    def _probe_all(self, sites: list[Site], deadline: Deadline, now: datetime) -> list[tuple[Site, Probe]]:
        region = self.region
        self.probed[region] += len(sites)
        return [
            (s, Probe(s.url, failure=("refused", "connection refused")))
            if s.url in self.unreachable[region]
            else (s, Probe(s.url, http_status=200, latency_ms=80.0))
            for s in sites
        ]

    def run(self, region: str) -> dict[str, Any]:
        from website_health_check import app

        self.stack_in(region)
        self.region = region
        self.monkeypatch.setenv("AWS_REGION", region)
        self.monkeypatch.setenv("AWS_DEFAULT_REGION", region)
        self.monkeypatch.setenv("TOPIC_ARN", self.topics[region])
        aws.reset_clients()
        event = {
            "version": "0",
            "id": f"{region}-{self.now.isoformat()}",
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": "123456789012",
            "time": self.now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": region,
            "resources": [
                f"arn:aws:events:{region}:123456789012:rule/ops-autopilot-WebsiteHealthCheckSchedule"
            ],
            "detail": {},
        }
        try:
            result: dict[str, Any] = app.lambda_handler(event, FakeContext())  # type: ignore[arg-type]
        finally:
            self.monkeypatch.setenv("AWS_REGION", HOME)
            self.monkeypatch.setenv("AWS_DEFAULT_REGION", HOME)
            aws.reset_clients()
        self.results[region] = result
        return result

    def rounds(self, count: int) -> None:
        """``count`` times: the home at :00, us-east-1 at :01, ap-southeast-2 at :02 (each a
        rate(5 minutes) schedule of its own), then 3 minutes to the next round."""
        for _ in range(count):
            for region in REGIONS:
                if region not in self.silent:
                    self.run(region)
                self.now += timedelta(minutes=1)
            self.now += timedelta(minutes=2)


@pytest.fixture
def world(
    health_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, sites: Callable[[str], None]
) -> Iterator[World]:
    sites(f"{SITE}, {OTHER}")
    yield World(monkeypatch, health_env)


def mails_in(region: str, topic: str) -> Callable[[], list[dict[str, Any]]]:
    """Every mail published to ``topic`` (a member's), through an SQS queue in its region."""
    sqs = boto3.client("sqs", region_name=region)
    url = sqs.create_queue(QueueName=f"mailbox-{region}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    boto3.client("sns", region_name=region).subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    return lambda: sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])


@pytest.mark.integration
def test_one_region_failing_alone_gives_no_down_and_two_give_one_down_naming_both(
    world: World, mailbox: Callable[[], list[dict[str, Any]]], states: Callable[[], dict[str, str]]
) -> None:
    member_mails = {r: mails_in(r, world.topics[r]) for r in (US, AP)}
    world.rounds(1)  # the home publishes its list at :00, the members check it at :01, :02
    assert world.probed[US] == world.probed[AP] == 2  # both sites
    world.rounds(1)
    assert states() == {} and mailbox() == []

    world.unreachable[HOME].add(SITE)  # the home's own path fails ...
    world.rounds(6)
    world.unreachable[HOME].clear()
    world.unreachable[US].add(SITE)  # ... then a member's alone
    world.rounds(6)
    assert mailbox() == [] and states().get(SITE, "UP") == "UP"
    assert world.results[HOME]["SitesDown"] == 0

    world.unreachable[AP].add(SITE)  # a second region agrees
    world.rounds(6)
    (down,) = mailbox()
    assert f"DOWN: {SITE} - DOWN from us-east-1 and ap-southeast-2" in down["subject"]
    assert (
        "DOWN from us-east-1 and ap-southeast-2; up from eu-west-1 (us-east-1: connection refused; "
        in down["body"]
    )
    assert states()[SITE] == "DOWN" and OTHER not in states()  # the other site was never down
    assert world.results[HOME]["SitesDown"] == 1

    world.unreachable[US].clear()
    world.unreachable[AP].clear()
    world.rounds(3)
    mails = mailbox()
    assert len(mails) == 2 and mails[1]["subject"].endswith(f"RECOVERED: {SITE}")
    assert all(not m() for m in member_mails.values())  # the members never mail about sites


@pytest.mark.integration
def test_a_silent_region_raises_its_own_alarm_and_no_verdict_is_guessed_without_it(
    world: World, mailbox: Callable[[], list[dict[str, Any]]], states: Callable[[], dict[str, str]]
) -> None:
    world.rounds(2)
    assert world.results[HOME]["RegionsSilent"] == 0
    world.silent.add(AP)  # ap-southeast-2's function stops running
    world.rounds(2)  # its last result is still within two periods
    assert world.results[HOME]["RegionsSilent"] == 0
    world.rounds(1)
    assert world.results[HOME]["RegionsSilent"] == 1  # the alarm's metric (> 0 for its alarm)

    # The home alone fails: with ap-southeast-2 silent its one failure could be the quorum's
    # second, so no verdict - not UP, not DOWN - and no mail.
    world.unreachable[HOME].add(SITE)
    world.rounds(4)
    assert mailbox() == [] and states().get(SITE, "UP") == "UP"
    # With us-east-1 failing too, two regions agree without the silent one: DOWN.
    world.unreachable[US].add(SITE)
    world.rounds(3)  # the home sees us-east-1's failure from the next round: 2 checks in a row
    (down,) = mailbox()
    assert "DOWN from eu-west-1 and us-east-1; no result from ap-southeast-2 (" in down["body"]
    # A site DOWN by quorum is not called RECOVERED while the region that could keep it down
    # is silent and one still fails.
    world.unreachable[HOME].clear()
    world.rounds(3)
    assert len(mailbox()) == 1 and states()[SITE] == "DOWN"
    world.silent.clear()  # ap-southeast-2 reports again: it reaches the site
    world.rounds(2)
    assert world.results[HOME]["RegionsSilent"] == 0
    assert [m["subject"] for m in mailbox()][1].endswith(f"RECOVERED: {SITE}")


@pytest.mark.integration
def test_an_edit_of_the_list_reaches_the_members_and_an_old_result_never_overwrites_a_newer(
    world: World, sites: Callable[[str], None]
) -> None:
    world.rounds(1)
    sites(f"{SITE}, {OTHER}, https://third.example.com/")
    world.rounds(2)
    assert world.probed[US] == 2 + 3 + 3  # the old list once, the new one from the next round on
    table = boto3.client("dynamodb", region_name=HOME)
    item = table.get_item(TableName=RESULTS, Key={"pk": {"S": "result#us-east-1"}})["Item"]
    stored = json.loads(zlib.decompress(item["results"]["B"]))
    assert sorted(stored) == sorted([SITE, OTHER, "https://third.example.com/"])
    older = store.result_record(US, T0, "old", {SITE: ["DOWN", "connection refused"]})
    aws.reset_clients()
    assert store.put_result(RESULTS, HOME, older) is False  # a resumed old run changes nothing
    again = table.get_item(TableName=RESULTS, Key={"pk": {"S": "result#us-east-1"}})["Item"]
    assert again == item


@pytest.mark.integration
def test_a_damaged_member_record_counts_as_silent_and_is_logged(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.INFO)
    world.rounds(2)
    boto3.client("dynamodb", region_name=HOME).put_item(
        TableName=RESULTS,
        Item={"pk": {"S": "result#us-east-1"}, "checked_at": {"S": "yesterday"}, "results": {"B": b"junk"}},
    )
    world.silent.add(US)
    world.run(HOME)
    assert world.results[HOME]["RegionsSilent"] == 1
    assert "a region's result record cannot be read; counted silent" in [
        r.getMessage() for r in caplog.records
    ]


@pytest.mark.integration
def test_a_region_not_listed_checks_nothing(world: World) -> None:
    result = world.run("eu-central-1")
    assert result["Checked"] == 0 and world.probed.get("eu-central-1", 0) == 0


@pytest.mark.integration  # store's record maker (no call made)
def test_a_member_record_of_two_thousand_sites_all_down_fits_one_item() -> None:
    from website_health_check.decide.quorum import result_record

    # Every reason different (a TLS error naming its host and a number): the least compressible
    # a real run writes.
    results = [
        CheckResult(
            f"https://site-{n:04d}.example.com/health",
            Status.DOWN,
            f"TLS error: certificate verify failed: Hostname mismatch, certificate is not valid "
            f"for 'site-{n:04d}.example.com' (serial {n * 7919:08x}, attempt {n % 7})",
            "tls",
        )
        for n in range(2000)
    ]
    record = store.result_record(US, T0, "d" * 64, result_record(results))
    item = len(base64.b64decode(record["results"])) + sum(
        len(str(v)) for k, v in record.items() if k != "results"
    )
    assert item < 100_000, item  # a quarter of DynamoDB's 400 KB item; the intent holds it as base64


@pytest.mark.integration
def test_a_member_with_no_or_a_damaged_published_list_checks_nothing_and_says_so(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.INFO)
    first = world.run(US)  # before the home's first run: nothing published yet
    assert (first["Checked"], first["Failed"], world.probed[US]) == (0, 0, 0)
    world.now += timedelta(minutes=1)
    world.run(HOME)
    world.now += timedelta(minutes=1)  # a new scheduled event (a new id)
    table = boto3.client("dynamodb", region_name=HOME)
    table.update_item(
        TableName=RESULTS,
        Key={"pk": {"S": "#sites"}},
        UpdateExpression="SET lists = :junk",
        ExpressionAttributeValues={":junk": {"B": b"not zlib"}},
    )
    damaged = world.run(US)
    assert (damaged["Checked"], damaged["Failed"], world.probed[US]) == (0, 1, 0)
    assert "the home region's published site list cannot be read" in [r.getMessage() for r in caplog.records]
    assert "Item" not in table.get_item(TableName=RESULTS, Key={"pk": {"S": "result#us-east-1"}})
