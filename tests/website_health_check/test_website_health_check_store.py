"""store.py against moto: one item per site, written only with optimistic locking, and a write
repeated by a resumed run recognised as its own."""

from __future__ import annotations

from datetime import UTC, datetime

import boto3
import pytest

from autopilot.recorder import CallRecorder
from conftest import REGION
from website_health_check import store
from website_health_check.decide import SiteState, Status

pytestmark = pytest.mark.integration
TABLE = "health-state"
URL = "https://shop.example.com"
DOWN = SiteState(URL, Status.DOWN, datetime(2026, 11, 23, tzinfo=UTC).isoformat(), Status.DOWN, 0, "HTTP 503")


@pytest.fixture
def table(health_env: dict[str, str]) -> str:
    return health_env["STATE_TABLE"]


def item(url: str = URL) -> dict[str, object]:
    found = boto3.client("dynamodb", region_name=REGION).get_item(TableName=TABLE, Key={"url": {"S": url}})
    return found.get("Item", {})


def test_a_new_sites_first_state_is_written_and_read_back(table: str, calls: CallRecorder) -> None:
    assert store.write(table, store.state_record(DOWN, "run-a", []), "run-a") == "written"
    assert calls.by_operation() == {"dynamodb.PutItem": 1}
    loaded = store.load(table)
    assert store.to_state(loaded[URL], URL) == SiteState(**{**DOWN.__dict__, "version": 1})
    assert store.writers(loaded[URL]) == ["run-a"]
    assert store.to_state(None, URL) == SiteState(URL)  # a site never stored: reported UP


def test_a_write_repeated_by_the_same_run_is_already_done(table: str) -> None:
    record = store.state_record(DOWN, "run-a", [])
    assert store.write(table, record, "run-a") == "written"
    assert store.write(table, record, "run-a") == "already"  # a resumed run repeating its write
    assert store.version(item()) == 1  # written once


def test_another_runs_write_of_the_same_version_is_a_conflict(table: str) -> None:
    assert store.write(table, store.state_record(DOWN, "run-a", []), "run-a") == "written"
    # run B read the same (empty) state and decided the same DOWN: its write loses, it stays silent
    assert store.write(table, store.state_record(DOWN, "run-b", []), "run-b") == "conflict"
    assert store.writers(item()) == ["run-a"]


def test_an_own_write_is_recognised_even_after_a_later_run_built_on_it(table: str) -> None:
    assert store.write(table, store.state_record(DOWN, "run-a", []), "run-a") == "written"
    after_a = store.to_state(store.load(table)[URL], URL)
    up = SiteState(URL, version=after_a.version)
    assert store.write(table, store.state_record(up, "run-b", ["run-a"]), "run-b") == "written"
    assert store.write(table, store.state_record(DOWN, "run-a", []), "run-a") == "already"
    assert store.to_state(store.load(table)[URL], URL).reported is Status.UP  # B's state stays


def test_only_the_last_writers_are_kept(table: str) -> None:
    state = DOWN
    for n in range(store.KEEP_WRITERS + 2):
        record = store.state_record(state, f"run-{n}", store.writers(item()) if n else [])
        assert store.write(table, record, f"run-{n}") == "written"
        state = SiteState(**{**state.__dict__, "version": state.version + 1})
    assert store.writers(item()) == [f"run-{n}" for n in range(store.KEEP_WRITERS + 1, 1, -1)]


def test_the_site_list_complaint_is_forgotten_only_if_unchanged(table: str, calls: CallRecorder) -> None:
    assert store.write(table, store.config_error_record("abc", 0, "run-a", []), "run-a") == "written"
    assert not store.forget(table, store.CONFIG_ITEM, seen_version=7)  # changed meanwhile: kept
    assert store.forget(table, store.CONFIG_ITEM, seen_version=1)
    assert item(store.CONFIG_ITEM) == {}
    assert calls.by_operation() == {"dynamodb.PutItem": 1, "dynamodb.DeleteItem": 2}
