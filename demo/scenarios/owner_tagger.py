"""owner_tagger in the sandbox: instances launched as an IAM Identity Center (SSO) user, an IAM
user and Auto Scaling; the real CloudTrail sample events from events/owner_tagger/, pointed at
the sandbox's instance ids, go through the real handler (and the shared runner). Then a
duplicate delivery, a failed call, and an identity that names nobody (the only case that mails)."""

from __future__ import annotations

import uuid
from typing import Any

from autopilot.recorder import CallRecorder
from demo.cloudtrail import run_instances_event
from demo.sandbox import Sandbox, sample_event, step

TITLE = "tag new instances, their volumes and network interfaces with who launched them"


def _event(name: str) -> dict[str, Any]:
    """A sample event with an id of its own (EventBridge gives every event one; the runner
    treats one id as one delivery)."""
    data: dict[str, Any] = sample_event(f"owner_tagger/{name}")
    data["id"] = str(uuid.uuid4())
    return data


def _launch(sb: Sandbox, count: int, name: str, extra: dict[str, str] | None = None) -> list[dict[str, Any]]:
    tags = [{"Key": k, "Value": v} for k, v in {"Name": name, **(extra or {})}.items()]
    response = sb.client("ec2").run_instances(
        ImageId="ami-12c6146b",
        MinCount=count,
        MaxCount=count,
        InstanceType="t3.micro",
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )
    return list(response["Instances"])


def _invoke(sb: Sandbox, event: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
    with CallRecorder() as calls:
        result: dict[str, Any] = sb.invoke("owner_tagger", event, sb.base_env(dry_run))
    ec2_calls = {k: v for k, v in sorted(calls.by_operation().items()) if k.startswith("ec2.")}
    runner_calls = sum(v for k, v in calls.by_operation().items() if k.startswith("dynamodb."))
    if result["status"] == "ignored":
        print(f"  handler: status=ignored ({result['reason']})")
    elif result["status"] == "duplicate":
        print("  handler: status=duplicate (this event id was handled already: nothing done)")
    else:
        print(
            f"  handler: status={result['status']} checked={result.get('Checked')} "
            f"tagged={result.get('Changed')} kept={result.get('Skipped')} "
            f"unresolved={result.get('OwnersUnresolved')} dry_run={result.get('dry_run')}"
        )
    runner = f" (+ {runner_calls} DynamoDB calls of the runner: claim, outbox)" if runner_calls else ""
    print(f"  EC2 API calls: {sum(ec2_calls.values())} {ec2_calls}{runner}")
    return result


def _print_tags(sb: Sandbox, instances: list[dict[str, Any]]) -> None:
    ec2 = sb.client("ec2")
    ids = [i["InstanceId"] for i in instances]
    described = ec2.describe_instances(InstanceIds=ids)["Reservations"]
    for instance in (i for r in described for i in r["Instances"]):
        resources = [("instance", instance["InstanceId"])]
        resources += [("volume", m["Ebs"]["VolumeId"]) for m in instance["BlockDeviceMappings"]]
        resources += [("eni", n["NetworkInterfaceId"]) for n in instance["NetworkInterfaces"]]
        found = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [r for _, r in resources]}])[
            "Tags"
        ]
        owners = {t["ResourceId"]: t["Value"] for t in found if t["Key"] == "Owner"}
        for kind, resource_id in resources:
            print(f"    {kind:<9} {resource_id:<22} Owner={owners.get(resource_id, '(none)')}")


def run(sb: Sandbox) -> None:
    step("jane.doe@example.com launches an instance from the console (IAM Identity Center SSO) - dry run")
    sso = _launch(sb, 1, "jane-web")
    sso_event = run_instances_event(_event("cloudtrail.run_instances.sso_user"), sso)
    _invoke(sb, sso_event, dry_run=True)
    _print_tags(sb, sso)
    sb.print_mails()

    step("the same launch, for real (dry run off)")
    sso_event = {**sso_event, "id": str(uuid.uuid4())}
    _invoke(sb, sso_event)
    _print_tags(sb, sso)

    step("IAM user bob launches two instances in one RunInstances call")
    bob = _launch(sb, 2, "bob-batch")
    _invoke(sb, run_instances_event(_event("cloudtrail.run_instances.iam_user"), bob))
    _print_tags(sb, bob)

    step("Auto Scaling launches an instance for group web-asg (service-linked role, launch template)")
    asg = _launch(sb, 1, "web-asg", {"aws:autoscaling:groupName": "web-asg"})
    _invoke(sb, run_instances_event(_event("cloudtrail.run_instances.autoscaling"), asg))
    _print_tags(sb, asg)

    step("launched with Owner=team-data already set (TagSpecifications): kept, copied to volume and ENI")
    preset = _launch(sb, 1, "build-box", {"Owner": "team-data"})
    _invoke(sb, run_instances_event(_event("cloudtrail.run_instances.tagged_at_launch"), preset))
    _print_tags(sb, preset)

    step("EventBridge delivers jane's event a second time (same id): the runner's claim stops it")
    _invoke(sb, sso_event)

    step("a RunInstances call that failed (errorCode): turned down, no EC2 call")
    _invoke(sb, _event("cloudtrail.run_instances.failed"))

    step("a launch whose identity names nobody (userIdentity type Unknown): left untagged, one mail")
    unknown = _launch(sb, 1, "mystery")
    event = run_instances_event(_event("cloudtrail.run_instances.iam_user"), unknown)
    event["detail"]["userIdentity"] = {
        "type": "Unknown",
        "principalId": "AIDAEXAMPLEUNKNOWN",
        "accountId": "123456789012",
    }
    _invoke(sb, event)
    _print_tags(sb, unknown)
    sb.print_mails()
