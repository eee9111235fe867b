"""The reliability scenario of owner_tagger: a small fleet, the real handler on its real sample
event, and a check that all of the work got done (used by tests/reliability: faults,
idempotency, bad input). Discovered by tests/reliability/scenarios.py; every automation has one."""

from __future__ import annotations

from typing import Any

from conftest import FakeContext
from demo.cloudtrail import run_instances_event
from reliability.scenarios import Ctx, Scenario, ec2, event, launch, tags_of

# Environment of the bad-input tests beyond the stack's own (stack_env: OWNER_TAG_KEY,
# OUTBOX_TABLE, ...): owner_tagger needs nothing else.
BAD_INPUT_ENV: dict[str, str] = {}
# The sample event of a normal run (events/owner_tagger/...).
VALID_SAMPLE = "cloudtrail.run_instances.iam_user"


def scenario(ctx: Ctx) -> Scenario:
    from owner_tagger import app

    ctx.env(POWERTOOLS_SERVICE_NAME="owner_tagger")
    ids = launch(3)
    instances = [i for r in ec2().describe_instances(InstanceIds=ids)["Reservations"] for i in r["Instances"]]
    created = run_instances_event(event("owner_tagger/cloudtrail.run_instances.iam_user"), instances)
    targets = [i["InstanceId"] for i in instances]
    targets += [m["Ebs"]["VolumeId"] for i in instances for m in i["BlockDeviceMappings"]]
    targets += [n["NetworkInterfaceId"] for i in instances for n in i["NetworkInterfaces"]]

    def verify() -> None:
        owners = {t: tags_of(t).get("Owner") for t in targets}
        assert None not in owners.values(), owners
        assert len(set(owners.values())) == 1, owners

    def check_concurrent(calls: Any, mails: list[dict[str, Any]]) -> None:
        """Two deliveries of one event at once: one of them reads and tags, in one CreateTags
        of all nine resources; the other does nothing in EC2."""
        assert calls.count("ec2", "DescribeInstances") == 1, calls.by_operation()
        assert calls.count("ec2", "CreateTags") == 1, calls.by_operation()
        assert sorted(calls.of("ec2", "CreateTags")[0]["Resources"]) == sorted(targets)

    return Scenario(
        "owner_tagger",
        lambda: app.lambda_handler(created, FakeContext()),
        verify,
        resources=targets,
        mails=ctx.mailbox,
        expected_mails=0,
        extra={"instances": [i["InstanceId"] for i in instances], "event": created},
        check_concurrent=check_concurrent,
    )
