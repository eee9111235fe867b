"""instance_recovery in the sandbox.

A few instances - opted in, opted in but Spot (EC2 cannot recover it), opted out, untagged -
and the real sample events from events/ through the real handler: a dry run, the scheduled
run that creates the recovery alarms, the next one that changes nothing, a termination whose
state change deletes its alarm, and AWS Health reporting a recovery, mailed once."""

from __future__ import annotations

import uuid
from typing import Any

from demo.sandbox import Sandbox, sample_event, step

TITLE = "recovery alarms on opted-in instances, and a mail when EC2 recovers one"
# The function's own environment (template.yaml: from its InstanceRecovery* parameters).
ENV = {"RECOVERY_FOR_ALL": "false", "ALARM_PERIOD": "60", "ALARM_DATAPOINTS": "2"}
FLEET: dict[str, tuple[dict[str, str], bool]] = {  # instance -> its tags, Spot
    "web": ({"Name": "web-1", "Owner": "platform", "AutoRecover": "true"}, False),
    "db": ({"Name": "db-1", "Owner": "data-team", "AutoRecover": "true"}, False),
    "batch": ({"Name": "batch-1", "Owner": "data-team", "AutoRecover": "true"}, True),
    "kept-out": ({"Owner": "bob@example.com", "AutoRecover": "false"}, False),
    "plain": ({}, False),
}


def sample(which: str) -> dict[str, Any]:
    """The sample events/instance_recovery/<which>.json, as delivered now (the runner
    refuses events far from its clock), with an id of its own."""
    return {**sample_event(f"instance_recovery/{which}"), "id": str(uuid.uuid4())}


def _launch(sb: Sandbox) -> dict[str, str]:
    ec2 = sb.client("ec2")
    ids = {}
    for label, (tags, spot) in FLEET.items():
        kwargs: dict[str, Any] = {
            "ImageId": "ami-12c6146b",
            "MinCount": 1,
            "MaxCount": 1,
            "InstanceType": "t3.micro",
        }
        if tags:
            kwargs["TagSpecifications"] = [
                {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
            ]
        if spot:
            kwargs["InstanceMarketOptions"] = {"MarketType": "spot"}
        ids[label] = ec2.run_instances(**kwargs)["Instances"][0]["InstanceId"]
        print(f"  {label:<9} {ids[label]}  {tags or '(no tags)'}{'  Spot' if spot else ''}")
    return ids


def _invoke(sb: Sandbox, event: dict[str, Any], dry_run: bool = False) -> None:
    result = sb.invoke("instance_recovery", event, {**sb.base_env(dry_run), **ENV})
    if result["status"] == "ignored":
        print(f"  handler: status=ignored ({result['reason']})")
    else:
        keys = ("Checked", "Changed", "Watched", "Ineligible", "AlarmsCreated", "AlarmsDeleted", "Recovered")
        print(f"  handler: status={result['status']} { ({k: result.get(k) for k in keys}) }")
    sb.print_mails()


def _alarms(sb: Sandbox) -> None:
    found = sb.client("cloudwatch").describe_alarms(AlarmNamePrefix=f"{sb.stack_name}-recover-")[
        "MetricAlarms"
    ]
    for alarm in found:
        print(f"  {alarm['AlarmName']}  actions: {', '.join(alarm['AlarmActions'])}")
    if not found:
        print("  (no recovery alarm)")


def run(sb: Sandbox) -> None:
    step("Instances: two opted in, one opted in but Spot, one opted out, one untagged")
    ids = _launch(sb)
    step("Scheduled run, dry run: the mail says which alarms would be created")
    _invoke(sb, sample("eventbridge.scheduled"), dry_run=True)
    step("Scheduled run (DryRun=false): an alarm for each opted-in instance EC2 can recover")
    _invoke(sb, sample("eventbridge.scheduled"))
    _alarms(sb)
    step("The next scheduled run: nothing to change, nothing to say")
    _invoke(sb, sample("eventbridge.scheduled"))
    step("web is terminated: its state change deletes its alarm (routine: no mail)")
    sb.client("ec2").terminate_instances(InstanceIds=[ids["web"]])
    terminated = sample("ec2.state_change.terminated")
    _invoke(sb, {**terminated, "detail": {"instance-id": ids["web"], "state": "terminated"}})
    _alarms(sb)
    step("AWS Health: EC2 recovered db from a host failure - mailed once, even if Health sends it again")
    recovered = sample("health.alarm_recovery.success")
    recovered = {
        **recovered,
        "resources": [ids["db"]],
        "detail": {**recovered["detail"], "affectedEntities": [{"entityValue": ids["db"]}]},
    }
    _invoke(sb, recovered)
    _invoke(sb, {**recovered, "id": str(uuid.uuid4())})
