"""Idle databases (IdleStopperDatabases=true, issue 22): RDS DB instances and Aurora clusters
judged by the N-of-M rule on their own metrics (nobody connected, low CPU), stopped with
StopDBInstance / StopDBCluster and tagged; busy ones, read replicas, databases with replicas,
cluster members and opted-out ones kept; AWS's restart after 7 days stopped again once a full
quiet hour shows it - only for what this stack's memory says it stopped, never for a tag. The
real handler through the runner, against moto."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

import boto3
import pytest
from moto.rds.models import rds_backends

from conftest import FakeContext
from idle_stopper import app
from idle_stopper.decide import Policy
from tests.idle_stopper.conftest import ACCOUNT, NOW, POLICY, REGION

pytestmark = pytest.mark.integration

PASSWORD = "not-a-real-password"


def _rds() -> Any:
    return boto3.client("rds", region_name=REGION)


def _instance(identifier: str, *, tags: dict[str, str] | None = None, cluster: str | None = None) -> str:
    kwargs: dict[str, Any] = {"DBClusterIdentifier": cluster} if cluster else {
        "AllocatedStorage": 20, "MasterUsername": "admin", "MasterUserPassword": PASSWORD,
    }  # fmt: skip
    reply = _rds().create_db_instance(
        DBInstanceIdentifier=identifier,
        Engine="aurora-postgresql" if cluster else "postgres",
        DBInstanceClass="db.t4g.medium",
        Tags=[{"Key": k, "Value": v} for k, v in (tags or {}).items()],
        **kwargs,
    )
    rds_backends[ACCOUNT][REGION].databases[identifier].instance_create_time = NOW - timedelta(days=30)
    return str(reply["DBInstance"]["DBInstanceArn"])


def _cluster(identifier: str) -> str:
    reply = _rds().create_db_cluster(
        DBClusterIdentifier=identifier,
        Engine="aurora-postgresql",
        MasterUsername="admin",
        MasterUserPassword=PASSWORD,
        Tags=[{"Key": "Owner", "Value": "data-team@example.com"}],
    )
    rds_backends[ACCOUNT][REGION].clusters[identifier].cluster_create_time = NOW - timedelta(days=30)
    return str(reply["DBCluster"]["DBClusterArn"])


def _metrics(
    identifier: str,
    *,
    connections: float = 0.0,
    cpu: float = 2.0,
    cluster: bool = False,
    now: datetime = NOW,
    hours: Iterable[int] | None = None,
    policy: Policy = POLICY,
) -> None:
    """One datapoint of each metric in the window's periods (``hours``: only these indexes)."""
    starts = policy.period_starts(now)
    chosen = range(len(starts)) if hours is None else hours
    name = "DBClusterIdentifier" if cluster else "DBInstanceIdentifier"
    data = []
    for index in chosen:
        stamp = starts[index] + timedelta(minutes=7)
        dims = [{"Name": name, "Value": identifier}]
        data += [
            {"MetricName": "CPUUtilization", "Dimensions": dims, "Timestamp": stamp, "Value": cpu},
            {
                "MetricName": "DatabaseConnections",
                "Dimensions": dims,
                "Timestamp": stamp,
                "Value": connections,
            },
        ]
    boto3.client("cloudwatch", region_name=REGION).put_metric_data(Namespace="AWS/RDS", MetricData=data)


def _status(identifier: str) -> str:
    return str(
        _rds().describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]["DBInstanceStatus"]
    )


def _tags(arn: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in _rds().list_tags_for_resource(ResourceName=arn)["TagList"]}


def _run(new_event: Callable[[], dict[str, Any]], request: str = "request-1") -> dict[str, Any]:
    context = FakeContext()
    context.aws_request_id = request  # type: ignore[misc]
    result: dict[str, Any] = app.lambda_handler(new_event(), context)
    return result


@pytest.fixture
def databases_on(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("IDLE_DATABASES", "true")
    return {**env, "IDLE_DATABASES": "true"}


def test_idle_databases_stop_and_busy_ones_replicas_members_and_opted_out_stay(
    databases_on: dict[str, str], new_event: Callable[[], dict[str, Any]], mailbox: Any, calls: Any
) -> None:
    idle = _instance("reports-db", tags={"Owner": "ana@example.com"})
    _metrics("reports-db")
    _instance("orders-db")
    _metrics("orders-db", connections=12.0)  # someone is connected every hour
    _instance("primary-db")
    _rds().create_db_instance_read_replica(
        DBInstanceIdentifier="primary-replica", SourceDBInstanceIdentifier="primary-db"
    )
    rds_backends[ACCOUNT][REGION].databases["primary-replica"].instance_create_time = NOW - timedelta(days=30)
    for quiet in ("primary-db", "primary-replica"):
        _metrics(quiet)
    opted_out = _instance("keep-db", tags={"AutoStop": "false"})
    _metrics("keep-db")
    cluster = _cluster("analytics")
    _instance("analytics-1", cluster="analytics")
    _metrics("analytics", cluster=True)
    _metrics("analytics-1")  # a member's own metrics: it is stopped with its cluster, not alone

    result = _run(new_event)

    assert _status("reports-db") == "stopped"
    for kept in ("orders-db", "primary-db", "primary-replica", "keep-db"):
        assert _status(kept) == "available", kept
    stopped_clusters = [c.operation for c in calls.calls if c.operation == "StopDBCluster"]
    assert stopped_clusters == ["StopDBCluster"]
    assert [c["DBClusterIdentifier"] for c in calls.of("rds", "StopDBCluster")] == ["analytics"]
    assert [c["DBInstanceIdentifier"] for c in calls.of("rds", "StopDBInstance")] == ["reports-db"]
    for arn in (idle, cluster):
        assert (
            _tags(arn)["StoppedReason"] == "idle"
            and _tags(arn)["StoppedBy"] == "ops-autopilot/ops-autopilot-test"
        )
    assert "StoppedBy" not in _tags(opted_out)
    assert result["Changed"] == 2 and result["DatabasesStopped"] == 2 and result["DatabasesChecked"] == 7
    # calls: one page each, one stop and one tag call per database (the APIs take one)
    assert calls.count("rds", "DescribeDBInstances") == 1 and calls.count("rds", "DescribeDBClusters") == 1
    assert calls.count("rds", "AddTagsToResource") == 2
    # CPU and connections of the 3 judged (not the excluded 4), in one GetMetricData
    assert result["MetricsRequested"] == 6 and calls.count("cloudwatch", "GetMetricData") == 1
    (mail,) = mailbox()
    assert mail["subject"] == "[ops-autopilot-test] 2 databases stopped"
    body = mail["body"]
    assert "DB instance reports-db, owner ana@example.com" in body
    assert "Aurora cluster analytics, owner data-team@example.com" in body
    assert "unused in 24 of the last 24 hours (needs 23); at most 0 connections" in body
    assert "orders-db" not in body and "keep-db" not in body
    assert (
        "Looked at 7 databases: stopped 2; left alone: 1 in use, 1 Aurora cluster member, "
        "1 with read replicas, 1 opted out (AutoStop), 1 read replica." in body
    )
    assert "aws rds start-db-instance --db-instance-identifier" in body


def test_databases_are_not_looked_at_unless_turned_on(
    env: dict[str, str], new_event: Callable[[], dict[str, Any]], calls: Any
) -> None:
    _instance("reports-db")
    _metrics("reports-db")
    result = _run(new_event)
    assert _status("reports-db") == "available"
    assert not [c for c in calls.calls if c.service == "rds"]
    assert "DatabasesChecked" not in result  # no metric of a feature that is off (each costs money)


def test_a_dry_run_stops_and_tags_no_database(
    databases_on: dict[str, str],
    new_event: Callable[[], dict[str, Any]],
    mailbox: Any,
    calls: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DRY_RUN", "true")
    arn = _instance("reports-db")
    _metrics("reports-db")
    result = _run(new_event)
    assert _status("reports-db") == "available" and "StoppedBy" not in _tags(arn)
    assert not [c for c in calls.mutating() if c.service == "rds"]
    assert result["WouldStop"] == 1 and result["Changed"] == 0
    assert mailbox()[0]["subject"] == "[ops-autopilot-test] DRY RUN: 1 database would be stopped"


def test_awss_restart_after_seven_days_is_stopped_again_within_hours_and_said_so(
    databases_on: dict[str, str],
    new_event: Callable[[], dict[str, Any]],
    mailbox: Any,
    clock: Callable[[datetime], None],
) -> None:
    arn = _instance("reports-db")
    _metrics("reports-db")
    _run(new_event)
    assert _status("reports-db") == "stopped"
    _rds().start_db_instance(DBInstanceIdentifier="reports-db")  # AWS, 7 days later
    later = NOW + timedelta(days=7, hours=2)
    starts = POLICY.period_starts(later)
    since = [i for i, s in enumerate(starts) if s >= NOW + timedelta(days=7)]
    _metrics("reports-db", now=later, hours=since)  # quiet since it came back; stopped before
    clock(later)
    result = _run(new_event, "request-2")
    assert _status("reports-db") == "stopped", "not stopped again"
    assert result["DatabasesStopped"] == 1
    assert _tags(arn)["StoppedReason"] == "idle-after-restart"
    mail = mailbox()[-1]
    assert mail["subject"] == "[ops-autopilot-test] 1 database (1 again after AWS's 7-day restart) stopped"
    assert "started again by AWS 7d 2h after this stack stopped it" in mail["body"]
    # the ordinary rule alone would have waited for a full window of data
    assert len(since) < POLICY.periods_required


def test_a_restart_is_not_stopped_early_when_someone_started_it_or_a_tag_claims_it(
    databases_on: dict[str, str],
    new_event: Callable[[], dict[str, Any]],
    clock: Callable[[datetime], None],
    calls: Any,
) -> None:
    _instance("reports-db")
    _metrics("reports-db")
    _run(new_event)
    _rds().start_db_instance(DBInstanceIdentifier="reports-db")  # someone, two days later
    clock(NOW + timedelta(days=2, hours=1))
    _run(new_event, "request-2")
    assert _status("reports-db") == "available", "started by someone: judged by the rule again"
    # a database this stack never stopped, whose tags claim it did, restarted 7 days later
    forged = _instance(
        "tagged-db", tags={"StoppedBy": "ops-autopilot/ops-autopilot-test", "StoppedReason": "idle"}
    )
    rds_backends[ACCOUNT][REGION].databases["tagged-db"].instance_create_time = NOW - timedelta(days=30)
    later = NOW + timedelta(days=7, hours=2)
    since = [i for i, s in enumerate(POLICY.period_starts(later)) if s >= NOW + timedelta(days=7)]
    for identifier in ("reports-db", "tagged-db"):
        _metrics(identifier, now=later, hours=since)
    clock(later)
    result = _run(new_event, "request-3")
    assert _status("reports-db") == "available" and _status("tagged-db") == "available"
    assert result["DatabasesStopped"] == 0 and forged


def test_the_cap_holds_for_databases_and_the_mail_says_how_many_wait(
    databases_on: dict[str, str],
    new_event: Callable[[], dict[str, Any]],
    mailbox: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAX_STOPS_PER_RUN", "2")
    for n in range(3):
        _instance(f"quiet-{n}")
        _metrics(f"quiet-{n}")
    result = _run(new_event)
    assert result["DatabasesStopped"] == 2
    assert sorted(_status(f"quiet-{n}") for n in range(3)) == ["available", "stopped", "stopped"]
    assert "1 more database met the rule but this run's limit of 2 stops was reached" in mailbox()[0]["body"]


def test_killed_between_stop_and_tag_the_retry_tags_the_database_and_stops_it_once(
    databases_on: dict[str, str], event: dict[str, Any], mailbox: Any, calls: Any
) -> None:
    from tests.idle_stopper.test_idle_stopper_run import Killed, killed_at

    arn = _instance("reports-db")
    _metrics("reports-db")
    with killed_at("rds", "AddTagsToResource"), pytest.raises(Killed):
        app.lambda_handler(event, FakeContext())
    assert _status("reports-db") == "stopped" and "StoppedBy" not in _tags(arn)
    retry = FakeContext()
    retry.aws_request_id = "request-2"  # type: ignore[misc]
    result = app.lambda_handler(event, retry)  # Lambda's retry of the same event
    assert result["Changed"] == 1 and _tags(arn)["StoppedReason"] == "idle"
    assert calls.count("rds", "StopDBInstance") == 1, "stopped twice"
    assert [m["subject"] for m in mailbox()] == ["[ops-autopilot-test] 1 database stopped"]


def test_a_database_someone_deleted_before_the_retry_is_left_alone_and_said_so(
    databases_on: dict[str, str], event: dict[str, Any], mailbox: Any
) -> None:
    from tests.idle_stopper.test_idle_stopper_run import Killed, killed_at

    _instance("reports-db")
    _metrics("reports-db")
    with killed_at("rds", "StopDBInstance"), pytest.raises(Killed):
        app.lambda_handler(event, FakeContext())
    _rds().delete_db_instance(DBInstanceIdentifier="reports-db", SkipFinalSnapshot=True)
    retry = FakeContext()
    retry.aws_request_id = "request-2"  # type: ignore[misc]
    result = app.lambda_handler(event, retry)
    assert result["Changed"] == 0 and result["Failed"] == 0
    (mail,) = mailbox()
    assert mail["subject"] == "[ops-autopilot-test] 1 database not stopped: changed since the decision"
    assert "reports-db" in mail["body"] and "no longer exists" in mail["body"]
