"""idle_stopper in the sandbox: a fleet of busy, idle, Auto Scaling, Spot, opted-out,
stop-protected and StopAfter instances with a day of CPU and network metrics written into the
sandbox's CloudWatch, and three RDS databases (IdleStopperDatabases=true: an unused one, a busy
primary and its read replica); a dry run, the real run, a retry of its event that does nothing, and the
next hour's run that finds nothing left to stop; then warn first: two owners each mailed about
their own instances through SES, a snooze, and the stop at the planned time (SIMULATED clock)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends
from moto.rds.models import rds_backends

from demo.sandbox import Sandbox, sample_event, step
from idle_stopper.decide import Policy

TITLE = "stop forgotten instances: idle 23 of the last 24 hours, or past their StopAfter tag"
EVENT = "idle_stopper/eventbridge.scheduled"
ENV = {
    "LOOKBACK_HOURS": "24",
    "PERIODS_REQUIRED": "23",
    "CPU_PERCENT": "10",
    "NETWORK_MB": "5",
    "MAX_STOPS_PER_RUN": "10",
    "IDLE_DATABASES": "true",
}
POLICY = Policy(lookback_periods=24, periods_required=23, cpu_percent=10.0, network_mb=5.0)

# name: (owner, extra tags, hours since start, cpu % per hour, busy hours, spot, stop-protected)
FLEET: dict[str, tuple[str, dict[str, str], int, float, tuple[int, ...], bool, bool]] = {
    "ci-runner": ("build-team", {}, 72, 65.0, (), False, False),
    "alice-dev": ("alice@example.com", {}, 96, 1.2, (), False, False),
    "bob-test": ("bob@example.com", {}, 50, 0.8, (14,), False, False),
    "web-asg-1": ("platform", {"aws:autoscaling:groupName": "web"}, 96, 0.5, (), False, False),
    "batch-spot": ("data-team", {}, 96, 0.5, (), True, False),
    "reporting-db": ("finance", {"AutoStop": "never"}, 300, 0.5, (), False, False),
    "prod-bastion": ("platform", {}, 400, 0.3, (), False, True),
    "workshop-vm": ("carol@example.com", {"StopAfter": "8h"}, 9, 45.0, (), False, False),
    "spike-box": ("dave@example.com", {"StopAfter": "2 days"}, 30, 20.0, (), False, False),
}


# name: (owner, connections each hour, replica of)
DATABASES: dict[str, tuple[str, float, str | None]] = {
    "demo-signup-db": ("erin@example.com", 0.0, None),
    "orders-db": ("shop-team", 14.0, None),
    "orders-db-replica": ("shop-team", 0.0, "orders-db"),
}


def _databases(sb: Sandbox, now: datetime) -> None:
    rds = sb.client("rds")
    backend: Any = rds_backends[DEFAULT_ACCOUNT_ID][sb.region]
    for name, (owner, connections, source) in DATABASES.items():
        tags = [{"Key": "Owner", "Value": owner}]
        if source:
            rds.create_db_instance_read_replica(
                DBInstanceIdentifier=name, SourceDBInstanceIdentifier=source, Tags=tags
            )
        else:
            rds.create_db_instance(
                DBInstanceIdentifier=name,
                Engine="postgres",
                DBInstanceClass="db.t4g.medium",
                AllocatedStorage=20,
                MasterUsername="demo",
                MasterUserPassword="not-a-real-password",
                Tags=tags,
            )
        backend.databases[name].instance_create_time = now - timedelta(days=20)
        dims = [{"Name": "DBInstanceIdentifier", "Value": name}]
        starts = POLICY.period_starts(now)
        data = []
        for start in [*starts, starts[-1] + POLICY.period]:  # as _metrics: the hour after too
            stamp = start + timedelta(minutes=5)
            data += [
                {"MetricName": "CPUUtilization", "Dimensions": dims, "Timestamp": stamp,
                 "Value": 30.0 if connections else 1.5, "Unit": "Percent"},
                {"MetricName": "DatabaseConnections", "Dimensions": dims, "Timestamp": stamp,
                 "Value": connections, "Unit": "Count"},
            ]  # fmt: skip
        sb.client("cloudwatch").put_metric_data(Namespace="AWS/RDS", MetricData=data)


def _database_table(sb: Sandbox) -> None:
    for db in sb.client("rds").describe_db_instances()["DBInstances"]:
        tags = {t["Key"]: t["Value"] for t in db.get("TagList", [])}
        print(
            f"  {db['DBInstanceIdentifier']:<18} {db['DBInstanceStatus']:<9} {tags.get('StoppedReason', '')}"
        )


def _launch(sb: Sandbox, now: datetime) -> dict[str, str]:
    ec2 = sb.client("ec2")
    backend: Any = ec2_backends[DEFAULT_ACCOUNT_ID][sb.region]
    ids = {}
    for name, (owner, tags, hours, _, _, spot, protected) in FLEET.items():
        kwargs: dict[str, Any] = {
            "ImageId": "ami-12c6146b",
            "MinCount": 1,
            "MaxCount": 1,
            "InstanceType": "t3.medium",
            "TagSpecifications": [
                {
                    "ResourceType": "instance",
                    "Tags": [
                        {"Key": k, "Value": v} for k, v in {"Name": name, "Owner": owner, **tags}.items()
                    ],
                }
            ],
        }
        if spot:
            kwargs["InstanceMarketOptions"] = {"MarketType": "spot"}
        if protected:
            kwargs["DisableApiStop"] = True
        instance_id = ec2.run_instances(**kwargs)["Instances"][0]["InstanceId"]
        # The sandbox starts instances on the real clock: backdate the start to build a history.
        backend.get_instance(instance_id).launch_time = (now - timedelta(hours=hours)).replace(tzinfo=None)
        ids[name] = instance_id
    return ids


def _metrics(sb: Sandbox, ids: dict[str, str], now: datetime) -> None:
    cloudwatch = sb.client("cloudwatch")
    for name, (_, _, hours, cpu, busy, _, _) in FLEET.items():
        dims = [{"Name": "InstanceId", "Value": ids[name]}]
        data = []
        # The window's hours and the one after: the handler reads the clock a moment later,
        # and if that moment is past the hour's settle time, its window is one hour later.
        starts = POLICY.period_starts(now)
        for index, start in enumerate([*starts, starts[-1] + POLICY.period]):
            if start < now - timedelta(hours=hours):
                continue  # no metrics before the instance started
            stamp = start + timedelta(minutes=5)
            value = 85.0 if index in busy else cpu
            net = 40e6 if cpu > 10 else 300e3
            data += [
                {"MetricName": "CPUUtilization", "Dimensions": dims, "Timestamp": stamp, "Value": value,
                 "Unit": "Percent"},
                {"MetricName": "NetworkIn", "Dimensions": dims, "Timestamp": stamp,
                 "Value": net / 2, "Unit": "Bytes"},
                {"MetricName": "NetworkOut", "Dimensions": dims, "Timestamp": stamp,
                 "Value": net / 2, "Unit": "Bytes"},
            ]  # fmt: skip
        cloudwatch.put_metric_data(Namespace="AWS/EC2", MetricData=data)


def _table(sb: Sandbox, ids: dict[str, str]) -> None:
    reservations = sb.client("ec2").describe_instances(InstanceIds=list(ids.values()))["Reservations"]
    found = {i["InstanceId"]: i for r in reservations for i in r["Instances"]}
    for name, instance_id in ids.items():
        instance = found[instance_id]
        tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
        why = tags.get("StoppedReason", "")
        print(f"  {name:<13} {instance_id}  {instance['State']['Name']:<8} {why[:70]}")


def _scheduled(now: datetime) -> dict[str, Any]:
    """The sample scheduled event of one run: its own id (the runner claims a run by it)."""
    event: dict[str, Any] = sample_event(EVENT)
    event["id"] = str(uuid.uuid4())
    event["time"] = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return event


def run(sb: Sandbox) -> None:
    now = datetime.now(UTC).replace(microsecond=0)

    step("A fleet of 9 running instances and 3 databases, with a day of hourly metrics")
    ids = _launch(sb, now)
    _metrics(sb, ids, now)
    for name, (_owner, tags, hours, cpu, busy, spot, protected) in FLEET.items():
        extra = ", ".join(
            [
                *(f"{k}={v}" for k, v in tags.items()),
                *(["Spot"] if spot else []),
                *(["stop-protected"] if protected else []),
            ]
        )
        burst = ", one busy hour" if busy else ""
        print(f"  {name:<13} started {hours:>3}h ago, CPU ~{cpu:g}%{burst}{', ' + extra if extra else ''}")
    _databases(sb, now)
    for name, (_owner, connections, source) in DATABASES.items():
        who = f"{connections:g} connections an hour" if connections else "nobody connected for a day"
        print(f"  RDS {name:<18} {who}{f', read replica of {source}' if source else ''}")

    step("Dry run (DryRun=true, the deploy default): the same decisions, nothing stopped")
    dry = sb.invoke("idle_stopper", _scheduled(now), {**sb.base_env(dry_run=True), **ENV})
    print(f"  handler returned: {dry}")
    sb.print_mails()

    step("Real run")
    event = _scheduled(now)
    print(f"  handler returned: {sb.invoke('idle_stopper', event, {**sb.base_env(), **ENV})}")
    _table(sb, ids)
    _database_table(sb)
    sb.print_mails()

    step("The same event again (EventBridge's retry): the run is claimed already, nothing happens")
    result = sb.invoke("idle_stopper", event, {**sb.base_env(), **ENV})
    print(f"  handler returned: status={result['status']} (the first delivery's Changed={result['Changed']})")
    sb.print_mails()

    step("The next hour's run: the stopped instances are no longer running, nothing to stop")
    result = sb.invoke("idle_stopper", _scheduled(now), {**sb.base_env(), **ENV})
    print(f"  handler returned: Checked={result['Checked']} Changed={result['Changed']}")
    sb.print_mails()
    warn_first(sb)


# ---- warn first, owners mailed, a snooze (IdleStopperWarningHours, MailSenderAddress) -----------

SENDER = "ops-autopilot@example.com"
ROUTING = '{"payments": "payments-oncall@example.com"}'
# name: (Owner tag, Team tag)
WARNED_FLEET = {
    "alice-notebook": ("alice@example.com", ""),
    "alice-scratch": ("alice@example.com", ""),
    "pay-worker": ("bob", "payments"),
}


def _idle_metrics(sb: Sandbox, instance_ids: list[str], now: datetime) -> None:
    """A quiet day (CPU 1%, little network) for each instance, for the window of a run at ``now``."""
    data: list[dict[str, Any]] = []
    starts = POLICY.period_starts(now)
    for instance_id in instance_ids:
        dims = [{"Name": "InstanceId", "Value": instance_id}]
        for start in [*starts, starts[-1] + POLICY.period]:
            stamp = start + timedelta(minutes=5)
            data += [
                {"MetricName": name, "Dimensions": dims, "Timestamp": stamp, "Value": value, "Unit": unit}
                for name, value, unit in (
                    ("CPUUtilization", 1.0, "Percent"),
                    ("NetworkIn", 1e5, "Bytes"),
                    ("NetworkOut", 1e5, "Bytes"),
                )
            ]
    cloudwatch = sb.client("cloudwatch")
    for n in range(0, len(data), 500):
        cloudwatch.put_metric_data(Namespace="AWS/EC2", MetricData=data[n : n + 500])


@contextlib.contextmanager
def _owner_mails(printed: list[tuple[str, str, str]]) -> Iterator[None]:
    """Each owner digest SES accepted (the sandbox's SES keeps no text to read back): recorded
    as the runner hands it over, after SES took it."""
    from autopilot import runner

    real = runner.send_email

    def sending(sender: str, to: str, subject: str, body: str, automation: str) -> str:
        message_id = real(sender, to, subject, body, automation)
        printed.append((to, subject, body))
        return message_id

    runner.send_email = sending  # type: ignore[assignment]
    try:
        yield
    finally:
        runner.send_email = real  # type: ignore[assignment]


def _print_owner_mails(sent: list[tuple[str, str, str]]) -> None:
    for to, subject, body in sent:
        print(f"  +-- owner digest through SES, to {to}")
        print(f"  | Subject: {subject}")
        print("  |")
        for line in body.splitlines():
            print(f"  | {line}" if line else "  |")
        print("  +--")
    sent.clear()


def warn_first(sb: Sandbox) -> None:
    """Two owners, a 24-hour warning, a snooze, and the stop at the planned time (SIMULATED clock)."""
    from autopilot import runner

    start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(days=3)
    ec2 = sb.client("ec2")
    backend: Any = ec2_backends[DEFAULT_ACCOUNT_ID][sb.region]
    ids: dict[str, str] = {}
    for name, (owner, team) in WARNED_FLEET.items():
        tags = {"Name": name, "Owner": owner, **({"Team": team} if team else {})}
        instance_id = ec2.run_instances(
            ImageId="ami-12c6146b",
            MinCount=1,
            MaxCount=1,
            InstanceType="t3.large",
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
            ],
        )["Instances"][0]["InstanceId"]
        backend.get_instance(instance_id).launch_time = (start - timedelta(days=5)).replace(tzinfo=None)
        ids[name] = instance_id
    sb.client("ses").verify_email_identity(EmailAddress=SENDER)
    routing = f"/{sb.stack_name}/mail-routing"
    sb.client("ssm").put_parameter(Name=routing, Type="String", Value=ROUTING, Overwrite=True)
    env = {
        **sb.base_env(),
        **ENV,
        "IDLE_DATABASES": "false",
        "WARNING_HOURS": "24",
        "MAX_SNOOZE_DAYS": "14",
        "MAIL_FROM": SENDER,
        "MAIL_ROUTING_PARAMETER": routing,
        # The sandbox has no Price List API: a closed local port makes the call fail at once, and
        # the prices come from the bundled table (labelled so in the mail). Nothing leaves the host.
        "AWS_ENDPOINT_URL_PRICING": "http://127.0.0.1:9",
    }
    sent: list[tuple[str, str, str]] = []
    saved = runner.clock

    def run_at(when: datetime) -> dict[str, Any]:
        _idle_metrics(sb, [i for n, i in ids.items()], when)
        runner.clock = lambda: when  # type: ignore[method-assign]
        try:
            with _owner_mails(sent):
                result: dict[str, Any] = sb.invoke("idle_stopper", _scheduled(when), env)
        finally:
            runner.clock = saved  # type: ignore[method-assign]
        return result

    step(
        "Warn first (IdleStopperWarningHours=24) and mail owners (MailSenderAddress): 3 idle instances - two "
        "of alice@example.com, one of bob with Team=payments (MailRouting: payments -> payments-oncall@...)"
    )
    run_at(start)
    _table(sb, ids)
    sb.print_mails()
    _print_owner_mails(sent)

    until = (start + timedelta(days=2)).strftime("%Y-%m-%d")
    step(f"alice snoozes alice-scratch: AutoStop=snooze-until:{until} (SIMULATED clock: 24 hours later)")
    ec2.create_tags(
        Resources=[ids["alice-scratch"]], Tags=[{"Key": "AutoStop", "Value": f"snooze-until:{until}"}]
    )
    run_at(start + timedelta(hours=24))
    _table(sb, ids)
    sb.print_mails()
    _print_owner_mails(sent)

    step("bob starts pay-worker again 50 hours after the stop; the first run of the next month (SIMULATED)")
    restarted = start + timedelta(hours=74)
    ec2.start_instances(InstanceIds=[ids["pay-worker"]])
    backend.get_instance(ids["pay-worker"]).launch_time = restarted.replace(tzinfo=None)
    closing = run_at(restarted + timedelta(minutes=30))
    print(f"  that run: SavedDollars={closing['SavedDollars']} (50 h x pay-worker's on-demand price)")
    sb.mails()  # (its own news: alice-scratch's snooze)
    sent.clear()
    next_month = (restarted.replace(day=1) + timedelta(days=32)).replace(day=1, hour=0, minute=30)
    run_at(next_month)
    sb.print_mails()
    _print_owner_mails(sent)
