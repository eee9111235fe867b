"""Safety invariants of the database decision (decide.decide_databases), as hypothesis
properties: whatever the databases, metrics, memory and clock, a read replica, a database with
replicas, a cluster member, one AWS cannot stop, an opted-out or a not-available one is never
stopped; at most the cap; an idle stop needs a full window of quiet data; and the fast stop after
AWS's 7-day restart happens only for what the memory says this stack stopped at least 7 days
(less an hour) before, and only when every period with data since was quiet."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idle_stopper.decide import (
    DB_RESTART_AFTER,
    DB_RESTART_SLACK,
    Database,
    DbOutcome,
    DbPeriod,
    Policy,
    decide_databases,
)

pytestmark = [pytest.mark.unit, pytest.mark.slow]

NOW = datetime(2024, 5, 14, 9, 17, tzinfo=UTC)
ENGINES = ["mysql", "aurora-mysql", "sqlserver-se", "docdb", "neptune", "custom-oracle-ee"]


@st.composite
def scenes(draw: st.DrawFn) -> tuple[Policy, list[Database], dict[str, list[DbPeriod]], dict[str, Any]]:
    lookback = draw(st.integers(1, 8))
    policy = Policy(
        lookback_periods=lookback,
        periods_required=draw(st.integers(1, lookback)),
        cpu_percent=draw(st.sampled_from([5.0, 10.0])),
        max_stops=draw(st.integers(0, 4)),
    )
    databases, metrics, memory = [], {}, {}
    for n in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["instance", "instance", "cluster"]))
        db = Database(
            kind=kind,
            identifier=f"db{n}",
            arn=f"arn:aws:rds:eu-west-1:123456789012:{'cluster' if kind == 'cluster' else 'db'}:db{n}",
            status=draw(st.sampled_from(["available"] * 6 + ["stopped", "stopping", "starting"])),
            engine=draw(st.sampled_from(["postgres"] * 3 + ["aurora-postgresql"] * 3 + ENGINES)),
            created=NOW - timedelta(hours=draw(st.sampled_from([1, 20, 30, 24 * 40]))),
            tags=draw(
                st.sampled_from([{}, {"AutoStop": "false"}, {"autostop": "Never"}, {"AutoStop": "true"}])
            ),
            multi_az=draw(st.booleans()),
            replica_of=draw(st.sampled_from([None] * 5 + ["other"])),
            replicas=draw(st.sampled_from([()] * 5 + [("r1",)])),
            cluster=draw(st.sampled_from([None] * 5 + ["c1"])) if kind == "instance" else None,
            engine_mode=draw(st.sampled_from(["provisioned"] * 5 + ["serverless"])),
        )
        databases.append(db)
        start = policy.window(NOW)[0] - timedelta(hours=draw(st.integers(0, 3)))
        quiet = draw(st.booleans())  # mostly quiet, with what may spoil it here and there
        cpu = (
            st.sampled_from([0.5] * 8 + [None, 3.0, 50.0])
            if quiet
            else st.sampled_from([None, 0.5, 3.0, 50.0])
        )
        connections = (
            st.sampled_from([0.0] * 8 + [None, 1.0]) if quiet else st.sampled_from([None, 0.0, 1.0, 9.0])
        )
        metrics[db.arn] = [
            DbPeriod(start + timedelta(hours=h), draw(cpu), draw(connections)) for h in range(lookback + 3)
        ]
        if draw(st.booleans()):
            memory[db.memory_key] = draw(
                st.one_of(
                    st.integers(int((NOW - timedelta(days=9)).timestamp()), int(NOW.timestamp())),
                    st.sampled_from(
                        [int((NOW - timedelta(days=7, hours=h)).timestamp()) for h in (-2, -1, 0, 1, 2, 3)]
                    ),
                    st.text(max_size=3),
                    st.booleans(),
                )
            )
    return policy, databases, metrics, memory


def _never(db: Database) -> bool:
    return (
        db.status != "available"
        or db.replica_of is not None
        or bool(db.replicas)
        or (db.kind == "instance" and db.cluster is not None)
        or db.engine in ("docdb", "neptune")
        or db.engine.startswith("custom-")
        or (db.kind == "instance" and db.engine.startswith("sqlserver") and db.multi_az)
        or (db.kind == "cluster" and (not db.engine.startswith("aurora") or db.engine_mode != "provisioned"))
        or any(
            k.lower() == "autostop" and v.strip().lower() in ("false", "no", "never", "off")
            for k, v in db.tags.items()
        )
    )


@settings(max_examples=400, deadline=None)
@given(scene=scenes())
def test_never_stops_what_it_must_not_and_respects_the_cap(scene: Any) -> None:
    policy, databases, metrics, memory = scene
    assessed, remembered = decide_databases(databases, metrics, policy, NOW, memory)
    stops = [a for a in assessed if a.stops]
    assert len(stops) <= policy.max_stops
    start, end = policy.window(NOW)
    for a in stops:
        db = a.database
        assert not _never(db), db
        assert remembered[db.memory_key] == int(NOW.timestamp()), "a stop is remembered as this stack's"
        in_window = [p for p in metrics[db.arn] if start <= p.start < end]
        if a.outcome is DbOutcome.STOP_IDLE:
            assert db.created <= start
            assert all(p.cpu_max is not None and p.connections_max is not None for p in in_window)
            quiet = [p for p in in_window if p.connections_max == 0 and p.cpu_max < policy.cpu_percent]
            assert len(quiet) >= policy.periods_required
        else:  # stopped again after AWS's restart: only what this stack stopped, 7 days before
            stopped_at = memory.get(db.memory_key)
            assert isinstance(stopped_at, int) and not isinstance(stopped_at, bool)
            at = datetime.fromtimestamp(stopped_at, UTC)
            assert NOW - at >= DB_RESTART_AFTER - DB_RESTART_SLACK
            since = [p for p in in_window if p.start >= at + DB_RESTART_AFTER - DB_RESTART_SLACK]
            with_data = [p for p in since if p.cpu_max is not None and p.connections_max is not None]
            assert with_data and all(
                p.connections_max == 0 and p.cpu_max < policy.cpu_percent for p in with_data
            )


QUIET_DB = Database(
    kind="instance",
    identifier="quiet",
    arn="arn:aws:rds:eu-west-1:123456789012:db:quiet",
    status="available",
    engine="postgres",
    created=NOW - timedelta(days=30),
)
QUIET_CLUSTER = Database(
    kind="cluster",
    identifier="quiet-cluster",
    arn="arn:aws:rds:eu-west-1:123456789012:cluster:quiet-cluster",
    status="available",
    engine="aurora-postgresql",
    created=NOW - timedelta(days=30),
)


@pytest.mark.parametrize(
    ("base", "change", "outcome"),
    [
        (QUIET_DB, {}, DbOutcome.STOP_IDLE),
        (QUIET_CLUSTER, {}, DbOutcome.STOP_IDLE),
        (QUIET_DB, {"status": "stopped"}, DbOutcome.NOT_AVAILABLE),
        (QUIET_DB, {"status": "backing-up"}, DbOutcome.NOT_AVAILABLE),
        (QUIET_DB, {"cluster": "c1", "engine": "aurora-postgresql"}, DbOutcome.CLUSTER_MEMBER),
        (QUIET_DB, {"replica_of": "primary"}, DbOutcome.REPLICA),
        (QUIET_CLUSTER, {"replica_of": "arn:aws:rds:us-east-1:123456789012:cluster:src"}, DbOutcome.REPLICA),
        (QUIET_DB, {"replicas": ("replica-1",)}, DbOutcome.HAS_REPLICAS),
        (QUIET_DB, {"engine": "sqlserver-se", "multi_az": True}, DbOutcome.NOT_STOPPABLE),
        (QUIET_DB, {"engine": "custom-oracle-ee"}, DbOutcome.NOT_STOPPABLE),
        (QUIET_CLUSTER, {"engine_mode": "serverless"}, DbOutcome.NOT_STOPPABLE),
        (QUIET_CLUSTER, {"engine": "mysql"}, DbOutcome.NOT_STOPPABLE),
        (QUIET_CLUSTER, {"engine": "docdb"}, DbOutcome.NOT_STOPPABLE),
        (QUIET_DB, {"tags": {"autostop": "Off"}}, DbOutcome.OPTED_OUT),
        (QUIET_DB, {"created": NOW - timedelta(hours=3)}, DbOutcome.TOO_YOUNG),
    ],
)
def test_a_quiet_database_is_kept_for_each_rule_that_keeps_it(
    base: Database, change: dict[str, Any], outcome: DbOutcome
) -> None:
    from dataclasses import replace

    db = replace(base, **change)
    policy = Policy(lookback_periods=24, periods_required=23, max_stops=10)
    quiet = [DbPeriod(s, 0.5, 0.0) for s in policy.period_starts(NOW)]
    (assessed,), _ = decide_databases([db], {db.arn: quiet}, policy, NOW, {})
    assert assessed.outcome is outcome, assessed.reason
