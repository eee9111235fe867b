"""owner_backfill's decisions, pure: the search over CloudTrail's history (against the simulated
history of demo.cloudtrail) as hypothesis properties - an owner only ever comes from the call
that created the resource, every resource whose creation is in the history is found, a pass
split over any number of runs finds exactly what one run would at the same calls, and the calls
stay within three times the cheaper of the two ways to ask - and the sorting of candidates."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from demo.cloudtrail import History, iam_user, record
from owner_backfill import decide
from owner_backfill.decide import CREATED_WITHIN, NameCursor, Resource

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
END = NOW - decide.SETTLE
USERS = ["ana", "bo", "cy"]


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[Resource], History, dict[str, str]]:
    """Untagged volumes and instances, and a history: for some the call that made them (by a
    user, seconds to minutes after), for some an event naming them hours away (mallory's: not
    their creation), and noise - the same calls for resources long gone."""
    trail = History()
    resources: list[Resource] = []
    truth: dict[str, str] = {}  # resource -> the owner its creation call names
    for n in range(draw(st.integers(0, 40))):
        kind = draw(st.sampled_from(["volume", "instance"]))
        prefix = "vol" if kind == "volume" else "i"
        rid = f"{prefix}-{n:017x}"
        created = NOW - timedelta(minutes=draw(st.integers(45, 60 * 24 * 80)))
        resources.append(Resource(rid, kind, created, None))
        name = "CreateVolume" if kind == "volume" else draw(st.sampled_from(["RunInstances", "RunInstances"]))
        fate = draw(st.sampled_from(["made", "made", "far", "none"]))
        if fate == "made":
            user = draw(st.sampled_from(USERS))
            delay = timedelta(seconds=draw(st.integers(-300, 600)))
            trail.add(record(name, [rid], iam_user(user), created + delay))
            truth[rid] = user
        elif fate == "far":
            hours = timedelta(hours=draw(st.sampled_from([-3, -1, 1, 2, 5])))
            trail.add(record(name, [rid], iam_user("mallory"), created + hours))
    for n in range(draw(st.integers(0, 400))):
        name = draw(st.sampled_from(["CreateVolume", "RunInstances"]))
        gone = f"{'vol' if name == 'CreateVolume' else 'i'}-{0xFFFF0000 + n:017x}"
        when = NOW - timedelta(minutes=draw(st.integers(45, 60 * 24 * 80)))
        trail.add(record(name, [gone], iam_user("noise"), when))
    return resources, trail, truth


def fetcher(trail: History, allowed: list[int]) -> decide.Fetch:
    """decide.search's I/O against ``trail``; the time is up once ``allowed[0]`` calls were
    made (then the run ends, and the next gets a fresh allowance)."""

    def fetch(
        attribute: tuple[str, str], start: datetime, end: datetime, token: str | None
    ) -> decide.Page | None:
        if allowed[0] <= 0:
            return None
        allowed[0] -= 1
        params: dict[str, Any] = {
            "LookupAttributes": [{"AttributeKey": attribute[0], "AttributeValue": attribute[1]}],
            "StartTime": start,
            "EndTime": end,
            "MaxResults": decide.PAGE_MAX,
        }
        if token:
            params["NextToken"] = token
        return decide.page(trail.lookup(params))

    return fetch


def run_pass(
    resources: list[Resource], trail: History, per_run: int
) -> tuple[dict[str, str], set[str], int, int]:
    """A whole pass in runs of ``per_run`` calls: the owners found, the resources settled
    without one, the calls, the runs."""
    cursors: dict[str, NameCursor] = {}
    pending = list(resources)
    owners: dict[str, str] = {}
    settled: set[str] = set()
    calls = runs = 0
    while pending:
        runs += 1
        assert runs < 10_000
        out = decide.search(pending, cursors, END, fetcher(trail, [per_run]))
        calls += out.calls
        for found in out.found:
            assert found.owner.value is not None
            owners[found.resource.id] = found.owner.value
        settled |= {r.id for r in out.asked}
        rest = list(out.pending.values())
        gone = decide.not_found(rest, cursors)
        settled |= {r.id for r in gone}
        pending = [r for r in rest if r not in gone]
        if not pending or decide.next_lookup(pending, cursors, END) is None:
            settled |= {r.id for r in pending}
            break
    return owners, settled, calls, runs


def cheaper_way(resources: list[Resource], trail: History) -> int:
    """The calls of the cheaper of the two ways: every page of each needed event name over the
    resources' span, or one call per resource."""
    by_name = 0
    for kind, names in decide.FAMILIES.items():
        family = [r for r in resources if r.type == kind and r.created_at]
        if not family:
            continue
        start = min(r.created_at for r in family if r.created_at) - CREATED_WITHIN
        for name in names:
            events = [
                r
                for r in trail.records
                if r["eventName"] == name and start <= datetime.fromisoformat(r["eventTime"]) <= END
            ]
            by_name += max(1, -(-len(events) // decide.PAGE_MAX))
    return min(by_name, len(resources))


@settings(max_examples=120, deadline=None)
@given(worlds(), st.integers(1, 7))
def test_owners_come_only_from_the_creating_call_and_every_one_is_found(
    world: tuple[list[Resource], History, dict[str, str]], per_run: int
) -> None:
    resources, trail, truth = world
    owners, settled, calls, _ = run_pass(resources, trail, per_run)
    assert owners == truth  # mallory's events hours away never count; each true call is found
    assert settled == {r.id for r in resources} - set(truth)
    assert calls <= 3 * cheaper_way(resources, trail) + len(decide.NAMES)


@settings(max_examples=80, deadline=None)
@given(worlds(), st.integers(1, 5))
def test_a_pass_split_over_runs_finds_the_same_at_the_same_calls(
    world: tuple[list[Resource], History, dict[str, str]], per_run: int
) -> None:
    resources, trail, _ = world
    whole = run_pass(resources, trail, 1_000_000)
    split = run_pass(resources, trail, per_run)
    assert split[:3] == whole[:3]


def test_a_thousand_resources_with_a_thousand_events_take_twenty_pages() -> None:
    trail = History()
    resources = []
    for n in range(1000):
        created = NOW - timedelta(days=30, minutes=n)
        resources.append(Resource(f"vol-{n:017x}", "volume", created, None))
        trail.add(record("CreateVolume", [f"vol-{n:017x}"], iam_user(USERS[n % 3]), created))
    owners, settled, calls, runs = run_pass(resources, trail, 1_000_000)
    assert (len(owners), settled, calls, runs) == (1000, set(), 20, 1)  # ceil(1000 / 50): the API's minimum


def test_candidates_sorted_by_how_their_owner_is_found() -> None:
    old = NOW - timedelta(days=91)
    instance = Resource("i-00000000000000001", "instance", NOW - timedelta(days=2), None)
    resources = [
        instance,
        Resource(
            "vol-00000000000000001", "volume", instance.created_at, None, instance.id
        ),  # launched with it
        Resource(
            "vol-00000000000000002", "volume", NOW - timedelta(days=1), None, instance.id
        ),  # attached later
        Resource("vol-00000000000000003", "volume", NOW - timedelta(minutes=5), None),  # owner_tagger's
        Resource("vol-00000000000000004", "volume", old, None),
        Resource("vol-00000000000000005", "volume", NOW - timedelta(days=3), "alice"),  # owned
        Resource("vol-00000000000000006", "volume", NOW - timedelta(days=3), None),  # looked for before
    ]
    found = decide.candidates(resources, {"vol-00000000000000006": decide.NO_EVENT}, NOW)
    assert [r.id for r in found.lookup] == ["i-00000000000000001", "vol-00000000000000002"]
    assert found.lookup[1].parent is None  # attached later: its own creation call decides
    assert [r.id for r in found.inherit] == ["vol-00000000000000001"]
    assert [r.id for r in found.before_history] == ["vol-00000000000000004"]
    assert found.recent == 1


def test_children_take_their_parents_owner_or_wait_for_it() -> None:
    child = Resource("vol-00000000000000001", "volume", NOW, None, "i-00000000000000001")
    orphan = Resource("vol-00000000000000002", "volume", NOW, None, "i-00000000000000002")
    waiting = Resource("vol-00000000000000003", "volume", NOW, None, "i-00000000000000003")
    writes, unresolved, wait = decide.inherited(
        [child, orphan, waiting], {"i-00000000000000001": "bo"}, {"i-00000000000000002"}
    )
    assert [(w.resource.id, w.value, w.source) for w in writes] == [(child.id, "bo", "instance")]
    assert unresolved == [(orphan, decide.NO_PARENT_OWNER)]
    assert wait == [waiting]


def test_a_few_resources_in_a_loud_history_cost_calls_by_resource_not_by_page() -> None:
    """3 resources, then 5,000 events of the same call for resources long gone: paging would
    take 101 calls; the switch to asking by id keeps it within three times the cheaper way (3)."""
    trail = History()
    resources = []
    for n in range(3):
        created = NOW - timedelta(days=10, minutes=n)
        resources.append(Resource(f"vol-{n:017x}", "volume", created, None))
        trail.add(record("CreateVolume", [f"vol-{n:017x}"], iam_user("bo"), created))
    for n in range(5000):
        trail.add(
            record(
                "CreateVolume",
                [f"vol-{0xFFFF0000 + n:017x}"],
                iam_user("x"),
                NOW - timedelta(hours=1, seconds=n),
            )
        )
    owners, _, calls, _ = run_pass(resources, trail, 1_000_000)
    assert len(owners) == 3 and calls <= 3 * 3


def test_what_a_pass_remembers_fits_the_runners_items_whatever_the_account() -> None:
    """60,000 snapshots without a history and 20,000 owners being written: remembered in keys
    of at most IDS_PER_KEY ids each (the runner keeps a key in one 400 KB item), and read back
    exactly."""
    from autopilot.outbox import MEMO_ITEM_BYTES
    from owner_backfill import run as backfill

    prefixes = backfill._memory_prefixes(dry_run=False)
    examined = {f"snap-{n:017x}": decide.BEFORE_HISTORY if n % 3 else decide.NO_EVENT for n in range(60_000)}
    writing = [f"vol-{n:017x}" for n in range(20_000)]
    other = {"pass.dry": {"runs": 1}, "examined.dry.0000": {decide.NOBODY: ["i-1"]}}
    memory = backfill._memory(other, prefixes, {"runs": 2}, writing, examined)
    assert all(len(json.dumps({k: v})) < MEMO_ITEM_BYTES for k, v in memory.items())
    assert backfill._examined(memory, prefixes[1]) == examined
    assert backfill._writing(memory, prefixes[2]) == writing
    assert memory["pass.dry"] == {"runs": 1} and memory["examined.dry.0000"] == {decide.NOBODY: ["i-1"]}
    # the pass over: its writes are forgotten, what got no owner is kept
    done = backfill._memory(memory, prefixes, None, [], examined)
    assert backfill._writing(done, prefixes[2]) == [] and "pass.real" not in done
    assert backfill._examined(done, prefixes[1]) == examined
