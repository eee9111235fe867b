"""owner_backfill: the reliability scenario.

A small fleet made a day before the runner's clock - three instances bob launched (their
RunInstances in a simulated CloudTrail history, which the suites answer LookupEvents from), one
with an owner already, one whose creation the history does not hold - the real handler on its
real sample event (with its own event id), and a check that all of the work got done. Found by
tests/reliability/scenarios.py, which runs the fault-injection, idempotency and bad-input
suites on it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from autopilot import pacing, runner
from conftest import FakeContext
from demo.cloudtrail import History, iam_user, record
from reliability.scenarios import Ctx, Scenario, ec2, launch, tags_of
from reliability.scenarios import event as sample_event

# Environment of the bad-input tests (besides the stack's own): the least the handler needs.
BAD_INPUT_ENV: dict[str, str] = {"OWNER_BACKFILL": "true"}
# The sample event of a normal run (events/owner_backfill/...).
VALID_SAMPLE = "eventbridge.scheduled"


class _Clock:
    now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def scenario(ctx: Ctx) -> Scenario:
    from owner_backfill import app, service

    ctx.env(POWERTOOLS_SERVICE_NAME="owner_backfill", OWNER_BACKFILL="true", OWNER_TAG_KEY="Owner")
    at = datetime.now(UTC) + timedelta(days=1)
    ctx.monkeypatch.setattr(runner, "clock", lambda: at)
    simulated = _Clock()  # 2 LookupEvents a second, on a clock that costs no wall time
    ctx.monkeypatch.setattr(pacing, "clock", simulated.clock)
    ctx.monkeypatch.setattr(pacing, "sleep", simulated.sleep)
    ctx.monkeypatch.setattr(service, "PACER", pacing.Pacer({"LookupEvents": (1, service.LOOKUPS_PER_SECOND)}))
    history = History()
    bobs = launch(3)
    launched = ec2().describe_instances(InstanceIds=bobs)["Reservations"][0]["Instances"]
    when = launched[0]["NetworkInterfaces"][0]["Attachment"]["AttachTime"] + timedelta(seconds=2)
    history.add(record("RunInstances", bobs, iam_user("bob"), when))
    owned = launch(1, {"Owner": "team-x"})
    orphans = launch(1)
    events = [{**sample_event("owner_backfill/eventbridge.scheduled"), "id": str(uuid.uuid4())}]

    def invoke() -> dict[str, Any]:
        result: dict[str, Any] = {}
        for event in events:
            result = app.lambda_handler(event, FakeContext())
        return result

    def verify() -> None:
        for instance_id in bobs:
            assert tags_of(instance_id).get("Owner") == "bob", instance_id
        assert tags_of(owned[0]).get("Owner") == "team-x"
        assert "Owner" not in tags_of(orphans[0])

    return Scenario(
        "owner_backfill",
        invoke,
        verify,
        resources=bobs,
        fakes={("cloudtrail", "LookupEvents"): history.lookup},
        mails=ctx.mailbox,
        expected_mails=len(events),  # the pass ends in the run: its one summary
    )
