"""Every AWS call of idle_stopper: gather the facts, carry out the plan. No decisions here.

Calls per run, for R running instances of which C need metrics, Q of them with a quiet CPU,
and S are stopped:
- DescribeInstances: ceil(R / 1000) pages (server-side filter instance-state-name=running);
- GetMetricData: ceil(C / 500) for peak CPU, then ceil(2·Q / 500) for NetworkIn and NetworkOut
  of the Q instances whose CPU left idle possible (CloudWatch bills each metric asked for:
  C + 2·Q metrics, not 3·C). C excludes the instances remembered busy (decide.recall);
- DescribeInstanceAttribute (disableApiStop): one per stop candidate looked at, in priority
  order, until the cap is filled (at most cap + the stop-protected candidates met on the way);
- StopInstances: ceil(S / 1000), i.e. 1 (the cap is at most 100);
- CreateTags: one per distinct tag set; StoppedBy and StoppedAt are the same for the whole run,
  StoppedReason carries each instance's own numbers, so in practice one call per stopped
  instance (at most the cap), never more.
A batch refused as a whole (one stop-protected or vanished instance fails the call) is retried
one instance at a time, so one bad instance costs a few calls and never blocks the others.

Finishing an interrupted run's stops (rare) costs, for its S' recorded stops of which P are
still running: 1 DescribeInstances (filtered by id), P DescribeInstanceAttribute, StopInstances
only if P > 0, and its CreateTags as above. (The runner's own DynamoDB and SNS calls are in
autopilot.runner.)
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from autopilot import aws
from autopilot.runtime import Deadline
from autopilot.tags import as_dict, as_list
from idle_stopper.decide import ALREADY_STOPPING, Database, DbPeriod, Instance, Period, Policy

logger = Logger(child=True)

DESCRIBE_PAGE_SIZE = 1000
METRIC_QUERIES_PER_CALL = 500  # GetMetricData's maximum
STOP_BATCH = 1000
TAG_BATCH = 1000  # CreateTags' maximum number of resource ids
NOT_PERMITTED = "OperationNotPermitted"  # StopInstances on an instance with stop protection
INSTANCE_ID = re.compile(r"\bi-[0-9a-f]{8,17}\b")
FILTER_VALUES = 1000  # ids per DescribeInstances filter (the cap keeps a stop set at most 100)
# (query id prefix, metric name, statistic): the k = 3 series the idle rule needs per instance,
# asked for in two steps: CPU for every instance, the network only where the CPU was quiet.
Metric = tuple[str, str, str]
CPU: tuple[Metric, ...] = (("c", "CPUUtilization", "Maximum"),)
NETWORK: tuple[Metric, ...] = (("i", "NetworkIn", "Sum"), ("o", "NetworkOut", "Sum"))
METRICS = CPU + NETWORK


@dataclass(frozen=True)
class Failure:
    """A per-instance AWS error: reported in the mail and counted in Failed."""

    instance_id: str
    action: str
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def to_instance(raw: Mapping[str, Any]) -> Instance:
    launch = raw["LaunchTime"]
    if isinstance(launch, str):
        launch = datetime.fromisoformat(launch.replace("Z", "+00:00"))
    return Instance(
        instance_id=str(raw["InstanceId"]),
        launch_time=launch if launch.tzinfo else launch.replace(tzinfo=UTC),
        state=str(raw.get("State", {}).get("Name", "unknown")),
        lifecycle=raw.get("InstanceLifecycle"),
        root_device_type=raw.get("RootDeviceType"),
        instance_type=str(raw.get("InstanceType", "")),
        tags=as_dict(raw.get("Tags")),
    )


def running_instances() -> list[Instance]:
    """Every running instance of the region: one paginated DescribeInstances, filtered server-side."""
    return [to_instance(raw) for raw in aws.running_instances(DESCRIBE_PAGE_SIZE)]


def instances(instance_ids: Sequence[str]) -> dict[str, Instance]:
    """The instances with these ids, whatever their state, as they are now; an id that no longer
    exists is simply absent (a filter, not InstanceIds, which would fail the whole call)."""
    found: dict[str, Instance] = {}
    for batch in aws.chunked(instance_ids, FILTER_VALUES):
        for raw in aws.paginate(
            aws.client("ec2"),
            "describe_instances",
            "Reservations[].Instances[]",
            Filters=[{"Name": "instance-id", "Values": batch}],
        ):
            instance = to_instance(raw)
            found[instance.instance_id] = instance
    return found


def metric_queries(
    instance_ids: Sequence[str], policy: Policy, metrics: Sequence[Metric] = METRICS
) -> list[dict[str, Any]]:
    """One MetricStat query per instance and metric; ids are <kind><index>, unique in a call."""
    period = int(policy.period.total_seconds())
    return [
        {
            "Id": f"{prefix}{index}",
            "MetricStat": {
                "Metric": {
                    "Namespace": "AWS/EC2",
                    "MetricName": name,
                    "Dimensions": [{"Name": "InstanceId", "Value": instance_id}],
                },
                "Period": period,
                "Stat": stat,
            },
            "ReturnData": True,
        }
        for index, instance_id in enumerate(instance_ids)
        for prefix, name, stat in metrics
    ]


def fetch_metrics(
    instance_ids: Sequence[str],
    policy: Policy,
    now: datetime,
    deadline: Deadline,
    metrics: Sequence[Metric] = METRICS,
) -> dict[str, list[Period]]:
    """The window's periods for each instance, with the values of ``metrics`` (the others
    None), GetMetricData batched at 500 queries per call.

    If the invocation runs out of time, the remaining instances get no periods: too little
    data, so they are not stopped this run (the safe side)."""
    cloudwatch = aws.client("cloudwatch")
    start, end = policy.window(now)
    values: dict[str, dict[datetime, float]] = {}
    queries = metric_queries(instance_ids, policy, metrics)
    for batch in aws.chunked(queries, METRIC_QUERIES_PER_CALL):
        if deadline.expired():
            logger.warning("out of time while fetching metrics; the rest are not judged this run")
            break
        results = aws.paginate(
            cloudwatch,
            "get_metric_data",
            "MetricDataResults[]",
            MetricDataQueries=batch,
            StartTime=start,
            EndTime=end,
            ScanBy="TimestampAscending",
        )
        for result in results:
            series = values.setdefault(result["Id"], {})
            for stamp, value in zip(result.get("Timestamps", []), result.get("Values", []), strict=False):
                series[stamp.astimezone(UTC)] = float(value)
    return {
        instance_id: _periods(values, index, policy.period_starts(now))
        for index, instance_id in enumerate(instance_ids)
    }


def _periods(
    values: Mapping[str, Mapping[datetime, float]], index: int, starts: Iterable[datetime]
) -> list[Period]:
    cpu, net_in, net_out = (values.get(f"{prefix}{index}", {}) for prefix, _, _ in METRICS)
    return [Period(start, cpu.get(start), net_in.get(start), net_out.get(start)) for start in starts]


def is_stop_protected(instance_id: str, failures: list[Failure]) -> bool:
    """DisableApiStop of one instance. If it cannot be read, the instance counts as protected
    (not stopped) and the error is reported."""
    try:
        response = aws.client("ec2").describe_instance_attribute(
            InstanceId=instance_id, Attribute="disableApiStop"
        )
    except ClientError as err:
        failures.append(Failure(instance_id, "check stop protection", aws.error_code(err), str(err)))
        logger.warning(
            "could not read stop protection", extra={"instance_id": instance_id, "code": aws.error_code(err)}
        )
        return True
    return bool(response.get("DisableApiStop", {}).get("Value", False))


def stop_instances(
    instance_ids: Sequence[str], *, already_stopping_are_ours: bool = False
) -> tuple[list[str], list[str], list[Failure]]:
    """Stop in batches of up to 1,000. EC2 refuses a whole batch for one instance it may not
    stop (stop protection: ``OperationNotPermitted``; or one gone or not running), naming it in
    the message: that one is set aside and the rest sent again, one call per refused instance;
    a refusal that names none of the batch is split in halves until it does. So stop
    protection costs a call per protected instance, not a DescribeInstanceAttribute per
    candidate, and EC2 - which never stops a protected instance - is the judge.

    Returns the instances this call stopped, the stop-protected ones, and the other failures.
    One that was already stopping or stopped is not claimed (someone else got there first),
    unless ``already_stopping_are_ours`` (finishing an interrupted run, whose recorded stop set
    it is in) or it was in a refused batch (EC2 may have stopped part of it: it is ours)."""
    stopped: list[str] = []
    protected: list[str] = []
    failures: list[Failure] = []
    pending = [
        (list(batch), not already_stopping_are_ours) for batch in aws.chunked(instance_ids, STOP_BATCH)
    ]
    while pending:
        batch, only_if_running = pending.pop()
        try:
            stopped += _stop(batch, only_if_running=only_if_running)
        except ClientError as err:
            message = str(err.response.get("Error", {}).get("Message", ""))
            named = sorted(set(INSTANCE_ID.findall(message)) & set(batch))
            if len(batch) == 1 or len(named) == 1:
                refused = batch[0] if len(batch) == 1 else named[0]
                if aws.error_code(err) == NOT_PERMITTED:
                    protected.append(refused)
                    logger.info("stop protection is on: left running", extra={"instance_id": refused})
                else:
                    failures.append(_failure(refused, "stop", err))
                rest = [i for i in batch if i != refused]
            else:
                logger.warning("stop batch refused; splitting it", extra={"code": aws.error_code(err)})
                half = len(batch) // 2
                pending += [(batch[:half], False), (batch[half:], False)]
                continue
            if rest:
                pending.append((rest, False))  # the refused call may have stopped some: ours
    return stopped, protected, failures


def _stop(instance_ids: list[str], only_if_running: bool = True) -> list[str]:
    response = aws.client("ec2").stop_instances(InstanceIds=instance_ids)
    return [
        str(item["InstanceId"])
        for item in response.get("StoppingInstances", [])
        if not only_if_running or item.get("PreviousState", {}).get("Name") not in ALREADY_STOPPING
    ]


def tag_instances(tags_by_id: Mapping[str, Mapping[str, str]]) -> list[Failure]:
    """CreateTags once per distinct tag set (up to 1,000 ids each); a refused group is retried
    one by one so that one vanished instance does not leave the others untagged."""
    groups: dict[tuple[tuple[str, str], ...], list[str]] = {}
    for instance_id, tags in tags_by_id.items():
        groups.setdefault(tuple(sorted(tags.items())), []).append(instance_id)
    failures: list[Failure] = []
    ec2 = aws.client("ec2")
    for key, ids in groups.items():
        tag_list = as_list(dict(key))
        for batch in aws.chunked(ids, TAG_BATCH):
            try:
                ec2.create_tags(Resources=batch, Tags=tag_list)
            except ClientError as err:
                if len(batch) == 1:
                    failures.append(_failure(batch[0], "tag", err))
                    continue
                for instance_id in batch:
                    try:
                        ec2.create_tags(Resources=[instance_id], Tags=tag_list)
                    except ClientError as single:
                        failures.append(_failure(instance_id, "tag", single))
    return failures


def untag_instances(instance_ids: list[str], key: str) -> list[Failure]:
    """DeleteTags of ``key`` (any value) on up to 1,000 instances a call; a refused batch is
    retried one by one, as for CreateTags."""
    failures: list[Failure] = []
    ec2 = aws.client("ec2")
    for batch in aws.chunked(instance_ids, TAG_BATCH):
        try:
            ec2.delete_tags(Resources=batch, Tags=[{"Key": key}])
        except ClientError as err:
            if len(batch) == 1:
                failures.append(_failure(batch[0], "untag", err))
                continue
            for instance_id in batch:
                try:
                    ec2.delete_tags(Resources=[instance_id], Tags=[{"Key": key}])
                except ClientError as single:
                    failures.append(_failure(instance_id, "untag", single))
    return failures


def _failure(instance_id: str, action: str, err: ClientError) -> Failure:
    code = aws.error_code(err)
    message = str(err.response.get("Error", {}).get("Message", err))
    logger.warning(f"could not {action} instance", extra={"instance_id": instance_id, "code": code})
    return Failure(instance_id, action, code, message)


# ---- databases (IdleStopperDatabases=true) -------------------------------------------------------------
# Per run, D DB instances and C DB clusters, S of them stopped: DescribeDBInstances ceil(D / 100)
# pages and DescribeDBClusters ceil(C / 100) (their maximum page size; the tags come with them),
# GetMetricData ceil(2 (D' + C') / 500) for the D' + C' judged, and one StopDBInstance or
# StopDBCluster and one AddTagsToResource per stop (neither takes more than one database).

DB_PAGE_SIZE = 100  # DescribeDBInstances' and DescribeDBClusters' MaxRecords maximum
DB_METRICS: tuple[Metric, ...] = (("u", "CPUUtilization", "Maximum"), ("n", "DatabaseConnections", "Maximum"))


def _when(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if not isinstance(value, datetime):
        return datetime.now(UTC)  # no creation time: as young as can be, so never judged idle
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def databases() -> list[Database]:
    """Every DB instance and DB cluster of the region, with their tags."""
    rds = aws.client("rds")
    found: list[Database] = []
    for raw in aws.paginate(
        rds, "describe_db_instances", "DBInstances[]", PaginationConfig={"PageSize": DB_PAGE_SIZE}
    ):
        found.append(
            Database(
                kind="instance",
                identifier=str(raw["DBInstanceIdentifier"]),
                arn=str(raw["DBInstanceArn"]),
                status=str(raw.get("DBInstanceStatus", "unknown")),
                engine=str(raw.get("Engine", "")),
                created=_when(raw.get("InstanceCreateTime")),
                tags=as_dict(raw.get("TagList")),
                multi_az=bool(raw.get("MultiAZ")),
                replica_of=raw.get("ReadReplicaSourceDBInstanceIdentifier")
                or raw.get("ReadReplicaSourceDBClusterIdentifier"),
                replicas=tuple(raw.get("ReadReplicaDBInstanceIdentifiers") or ())
                + tuple(raw.get("ReadReplicaDBClusterIdentifiers") or ()),
                cluster=raw.get("DBClusterIdentifier"),
                db_class=str(raw.get("DBInstanceClass", "")),
            )
        )
    for raw in aws.paginate(
        rds, "describe_db_clusters", "DBClusters[]", PaginationConfig={"PageSize": DB_PAGE_SIZE}
    ):
        found.append(
            Database(
                kind="cluster",
                identifier=str(raw["DBClusterIdentifier"]),
                arn=str(raw["DBClusterArn"]),
                status=str(raw.get("Status", "unknown")),
                engine=str(raw.get("Engine", "")),
                created=_when(raw.get("ClusterCreateTime")),
                tags=as_dict(raw.get("TagList")),
                multi_az=bool(raw.get("MultiAZ")),
                replica_of=raw.get("ReplicationSourceIdentifier"),
                replicas=tuple(raw.get("ReadReplicaIdentifiers") or ()),
                engine_mode=str(raw.get("EngineMode") or "provisioned"),
                db_class=str(raw.get("DBClusterInstanceClass", "")),
            )
        )
    return found


def fetch_db_metrics(
    dbs: Sequence[Database], policy: Policy, now: datetime, deadline: Deadline
) -> dict[str, list[DbPeriod]]:
    """Peak CPU and peak connections per period, by ARN; as :func:`fetch_metrics`, what the
    time did not reach has no data (never idle)."""
    period = int(policy.period.total_seconds())
    queries = [
        {
            "Id": f"{prefix}{index}",
            "MetricStat": {
                "Metric": {
                    "Namespace": "AWS/RDS",
                    "MetricName": name,
                    "Dimensions": [
                        {
                            "Name": "DBClusterIdentifier" if db.kind == "cluster" else "DBInstanceIdentifier",
                            "Value": db.identifier,
                        }
                    ],
                },
                "Period": period,
                "Stat": stat,
            },
            "ReturnData": True,
        }
        for index, db in enumerate(dbs)
        for prefix, name, stat in DB_METRICS
    ]
    start, end = policy.window(now)
    values: dict[str, dict[datetime, float]] = {}
    for batch in aws.chunked(queries, METRIC_QUERIES_PER_CALL):
        if deadline.expired():
            logger.warning("out of time while fetching database metrics; the rest are not judged")
            break
        for result in aws.paginate(
            aws.client("cloudwatch"),
            "get_metric_data",
            "MetricDataResults[]",
            MetricDataQueries=batch,
            StartTime=start,
            EndTime=end,
            ScanBy="TimestampAscending",
        ):
            series = values.setdefault(result["Id"], {})
            for stamp, value in zip(result.get("Timestamps", []), result.get("Values", []), strict=False):
                series[stamp.astimezone(UTC)] = float(value)
    starts = policy.period_starts(now)
    return {
        db.arn: [
            DbPeriod(s, values.get(f"u{index}", {}).get(s), values.get(f"n{index}", {}).get(s))
            for s in starts
        ]
        for index, db in enumerate(dbs)
    }


def stop_database(kind: str, identifier: str) -> Failure | None:
    """StopDBInstance or StopDBCluster; a refusal is the database's failure, not the run's."""
    rds = aws.client("rds")
    try:
        if kind == "cluster":
            rds.stop_db_cluster(DBClusterIdentifier=identifier)
        else:
            rds.stop_db_instance(DBInstanceIdentifier=identifier)
    except ClientError as err:
        return _failure(identifier, "stop", err)
    return None


def database_status(kind: str, identifier: str) -> str | None:
    """The database's status now (finishing an interrupted run), or None if it is gone."""
    rds = aws.client("rds")
    try:
        if kind == "cluster":
            return str(rds.describe_db_clusters(DBClusterIdentifier=identifier)["DBClusters"][0]["Status"])
        return str(
            rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]["DBInstanceStatus"]
        )
    except ClientError as err:
        if aws.error_code(err) in ("DBInstanceNotFound", "DBInstanceNotFoundFault", "DBClusterNotFoundFault"):
            return None
        raise


def tag_database(arn: str, identifier: str, tags: Mapping[str, str]) -> Failure | None:
    try:
        aws.client("rds").add_tags_to_resource(ResourceName=arn, Tags=as_list(dict(tags)))
    except ClientError as err:
        return _failure(identifier, "tag", err)
    return None


# ---- prices (money saved) --------------------------------------------------------------------
# The on-demand hourly price of an instance type in this region, Linux, shared tenancy, from the
# AWS Price List API (pricing:GetProducts, served from us-east-1; 1 call per type, cached in the
# run's memory for the month). Without an answer (no permission, no network, an unknown type):
# the bundled table below, labelled as such in the mail; without that either, no price (the
# hours are counted, the dollars not).

PRICING_REGION = "us-east-1"
# USD an hour, Linux on-demand, us-east-1 list prices (https://aws.amazon.com/ec2/pricing/on-demand/,
# November 2026): a fallback only, named "bundled table" wherever it is used.
BUNDLED_PRICES: dict[str, float] = {
    "t2.micro": 0.0116, "t2.small": 0.023, "t2.medium": 0.0464, "t2.large": 0.0928,
    "t3.nano": 0.0052, "t3.micro": 0.0104, "t3.small": 0.0208, "t3.medium": 0.0416,
    "t3.large": 0.0832, "t3.xlarge": 0.1664, "t3.2xlarge": 0.3328,
    "t3a.micro": 0.0094, "t3a.small": 0.0188, "t3a.medium": 0.0376, "t3a.large": 0.0752,
    "t4g.micro": 0.0084, "t4g.small": 0.0168, "t4g.medium": 0.0336, "t4g.large": 0.0672,
    "m5.large": 0.096, "m5.xlarge": 0.192, "m5.2xlarge": 0.384,
    "m6i.large": 0.096, "m6i.xlarge": 0.192, "m7g.large": 0.0816, "m7g.xlarge": 0.1632,
    "c5.large": 0.085, "c5.xlarge": 0.17, "c6i.large": 0.085, "c7g.large": 0.0725,
    "r5.large": 0.126, "r6i.large": 0.126, "r7g.large": 0.1071,
}  # fmt: skip


def price_from_products(price_list: list[str]) -> float | None:
    """The hourly USD price in a GetProducts answer's PriceList (JSON strings): the first
    OnDemand price dimension per hour; None if there is none."""
    for text in price_list:
        try:
            product = json.loads(text)
        except (TypeError, ValueError):
            continue
        for term in product.get("terms", {}).get("OnDemand", {}).values():
            for dimension in term.get("priceDimensions", {}).values():
                usd = dimension.get("pricePerUnit", {}).get("USD")
                if dimension.get("unit", "Hrs") == "Hrs" and usd not in (None, ""):
                    with contextlib.suppress(ValueError):
                        return float(usd)
    return None


def on_demand_price(instance_type: str, region: str) -> tuple[float | None, str]:
    """(USD an hour, where it came from) for ``instance_type`` in ``region``: "price list" (1
    pricing:GetProducts), else "bundled table" (us-east-1 prices), else (None, "unknown")."""
    filters = {
        "instanceType": instance_type,
        "regionCode": region,
        "operatingSystem": "Linux",
        "tenancy": "Shared",
        "preInstalledSw": "NA",
        "capacitystatus": "Used",
        "licenseModel": "No License required",
    }
    try:
        answer = aws.client("pricing", region=PRICING_REGION).get_products(
            ServiceCode="AmazonEC2",
            Filters=[{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in filters.items()],
            MaxResults=10,
        )
        price = price_from_products(list(answer.get("PriceList", [])))
    except (ClientError, BotoCoreError) as err:
        logger.info("price list not answered; using the bundled table", extra={"error": str(err)[:200]})
        price = None
    if price is not None:
        return price, "price list"
    if instance_type in BUNDLED_PRICES:
        return BUNDLED_PRICES[instance_type], "bundled table (us-east-1 list prices)"
    return None, "unknown"
