"""The reliability scenario of idle_stopper: a small fleet, the real handler on its real sample
event, and a check that all of the work got done (used by tests/reliability: faults,
idempotency, bad input). Discovered by tests/reliability/scenarios.py; every automation has one."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from conftest import FakeContext
from reliability.scenarios import Ctx, Scenario, ec2, event, launch, tags_of

# Environment of the bad-input tests (besides the stack's own, OWNER_TAG_KEY and OUTBOX_TABLE
# included): the least the handler needs.
BAD_INPUT_ENV: dict[str, str] = {
    "LOOKBACK_HOURS": "24",
    "PERIODS_REQUIRED": "23",
    "CPU_PERCENT": "10",
    "NETWORK_MB": "5",
    "MAX_STOPS_PER_RUN": "10",
}
# The sample event of a normal run (events/idle_stopper/...).
VALID_SAMPLE = "eventbridge.scheduled"


def scenario(ctx: Ctx) -> Scenario:
    from idle_stopper import app

    ctx.env(POWERTOOLS_SERVICE_NAME="idle_stopper", **BAD_INPUT_ENV)
    expired = launch(3, {"Name": "builder", "Owner": "ci@example.com", "StopAfter": "2h"}, timedelta(days=3))
    keep = launch(1, {"Name": "db"}, timedelta(days=3))  # no metrics: too little data, kept
    scheduled = event("idle_stopper/eventbridge.scheduled")  # its time is not "now": the clock is

    def verify() -> None:
        states = {
            i["InstanceId"]: i["State"]["Name"]
            for r in ec2().describe_instances()["Reservations"]
            for i in r["Instances"]
        }
        for instance_id in expired:
            assert states[instance_id] == "stopped", instance_id  # moto stops at once (no "stopping")
            assert {"StoppedBy", "StoppedReason", "StoppedAt"} <= tags_of(instance_id).keys(), instance_id
        assert states[keep[0]] == "running"
        assert "StoppedBy" not in tags_of(keep[0])

    def check_concurrent(calls: Any, mails: list[dict[str, Any]]) -> None:
        """Two deliveries of one event at once: each instance named in one StopInstances call
        (one delivery acted, the other found the claim taken), and the one mail names all."""
        named = Counter(i for p in calls.of("ec2", "StopInstances") for i in p["InstanceIds"])
        assert named == Counter(expired), named
        assert calls.count("ec2", "StopInstances") == 1
        (mail,) = mails
        assert all(instance_id in mail["body"] for instance_id in expired)

    return Scenario(
        "idle_stopper",
        lambda: app.lambda_handler(scheduled, FakeContext()),
        verify,
        resources=expired,
        mails=ctx.mailbox,
        expected_mails=1,
        check_concurrent=check_concurrent,
    )
