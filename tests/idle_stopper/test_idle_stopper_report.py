"""What idle_stopper tells (idle_stopper.report): the tags, the mail and the numbers, as pure
functions of the decision, the recorded intent and the act's result. No AWS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from autopilot.config import CommonConfig
from autopilot.runner import Context
from autopilot.runtime import Deadline
from idle_stopper import report
from idle_stopper.config import Config
from idle_stopper.decide import DB_STOPS, DbOutcome, Instance, Period, Policy, decide, intent

pytestmark = pytest.mark.unit

NOW = datetime(2024, 5, 14, 9, 17, tzinfo=UTC)
POLICY = Policy()
TOPIC = "arn:aws:sns:eu-west-1:123456789012:alarms"


def context(*, dry_run: bool = False, resumed: bool = False, owner_key: str = "Owner") -> Context[Config]:
    common = CommonConfig("ops", "eu-west-1", TOPIC, dry_run, owner_key)
    return Context("idle_stopper", Config(POLICY), common, NOW, Deadline(300), resumed=resumed)


def quiet(*, cpu: float = 1.0) -> list[Period]:
    return [Period(s, cpu, 50_000.0, 50_000.0) for s in POLICY.period_starts(NOW)]


def recorded(*, dry_run: bool = False, owner_key: str = "Owner") -> dict[str, Any]:
    """An intent: one idle stop, one lifetime stop, one protected, one malformed and busy."""
    fleet = [
        Instance(
            "i-idle", NOW - timedelta(days=3), instance_type="t3.small", tags={"Name": "dev", "Owner": "al"}
        ),
        Instance("i-life", NOW - timedelta(hours=9), tags={"StopAfter": "8h", "Owner": "bo"}),
        Instance("i-pet", NOW - timedelta(days=3)),
        Instance("i-odd", NOW - timedelta(days=3), tags={"StopAfter": "2 days"}),
    ]
    metrics = {"i-idle": quiet(), "i-pet": quiet(), "i-odd": quiet(cpu=50.0)}
    made = intent(decide(fleet, metrics, POLICY, NOW, {"i-pet"}), POLICY, NOW, owner_key, [], dry_run)
    assert made is not None
    return made


def result(stopped: list[str], **rest: Any) -> dict[str, Any]:
    return {"dry_run": False, "stopped": stopped, "dropped": [], "failures": [], **rest}


# ---- tags -----------------------------------------------------------------------------------


def test_stopped_tags_are_shared_by_the_run_so_that_one_call_tags_many() -> None:
    """Issue 22: the reason's numbers made every instance's tags unique (one CreateTags per
    stopped instance); the tags now carry the category and the run's time, the numbers are in
    the mail and the decision log line."""
    idle, life = (next(e for e in recorded()["stop"] if e["id"] == i) for i in ("i-idle", "i-life"))
    tags = report.stopped_tags(idle, "ops", "2024-05-14T09:17:00Z")
    assert tags == {
        "StoppedBy": "ops-autopilot/ops",
        "StoppedReason": "idle",
        "StoppedAt": "2024-05-14T09:17:00Z",
    }
    assert report.stopped_tags(life, "ops", "x")["StoppedReason"] == "lifetime"


# ---- the mail -------------------------------------------------------------------------------


def test_the_mail_names_each_stop_with_why_whose_and_how_to_undo() -> None:
    mail = report.mail(context(), recorded(), result(["i-idle", "i-life"]))
    assert mail is not None
    assert mail.subject == "[ops] 2 instances stopped (1 idle, 1 past StopAfter)"
    assert mail.severity == "info"
    body = mail.body
    assert body.startswith(
        "Looked at 4 running instances: stopped 2; left running: 1 busy, 1 stop-protected."
    )
    assert "- i-idle (dev), owner al" in body and "t3.small, running since 2024-05-11 09:17 UTC" in body
    assert "Why: StopAfter=8h reached: running 9h 0m" in body
    assert "StopAfter='2 days' is not a whole number" in body
    assert "Stop protection on, left running although the rule matched (1): i-pet." in body
    assert "AutoStop=false (or AutoStop=no, never or off)" in body
    assert "not judged idle for 24 hours" in body
    assert body.rstrip().endswith("region eu-west-1, 2024-05-14 09:17 UTC.")  # ctx.now, not the wall clock


def test_dry_run_says_would_and_counts_would_stop() -> None:
    intent_ = recorded(dry_run=True)
    outcome = result(["i-idle", "i-life"], dry_run=True)
    mail = report.mail(context(dry_run=True), intent_, outcome)
    assert mail is not None
    assert mail.subject == "[ops] DRY RUN: 2 instances would be stopped (1 idle, 1 past StopAfter)"
    assert "Would stop: idle" in mail.body and "would stop 2" in mail.body
    counts = report.counts(intent_, outcome)
    assert (counts.changed, counts.extra["WouldStop"], counts.extra["StoppedIdle"]) == (0, 2, 0)


def test_failures_make_it_a_warning_and_the_planned_stop_a_failed_one() -> None:
    failure = {"instance_id": "i-life", "action": "stop", "code": "IncorrectInstanceState", "message": "no"}
    outcome = result(["i-idle"], failures=[failure])
    mail = report.mail(context(), recorded(), outcome)
    assert mail is not None and mail.severity == "warning"
    assert mail.subject == "[ops] 1 instance stopped (1 idle); 1 instance could not be handled"
    assert "Could not stop: IncorrectInstanceState: no" in mail.body
    assert "1 stop failed" in mail.body
    counts = report.counts(recorded(), outcome)
    assert (counts.changed, counts.failed, counts.extra["StoppedLifetime"]) == (1, 1, 0)


def test_a_resumed_run_says_so_and_lists_what_it_left_alone() -> None:
    dropped = [{"id": "i-life", "reason": "opted out (AutoStop=off) since the decision; it is running"}]
    outcome = result(["i-idle"], dropped=dropped)
    mail = report.mail(context(resumed=True), recorded(), outcome)
    assert mail is not None
    assert "interrupted; a later invocation finished it" in mail.body
    assert "Not stopped after all" in mail.body and "Left alone: opted out (AutoStop=off)" in mail.body
    assert "1 changed since the decision" in mail.body and "stop failed" not in mail.body
    counts = report.counts(recorded(), outcome)
    assert (counts.changed, counts.skipped, counts.extra["SkippedChanged"]) == (1, 1, 1)
    only_dropped = report.mail(context(resumed=True), recorded(), result([], dropped=dropped))
    assert only_dropped is not None
    assert only_dropped.subject == "[ops] 1 instance not stopped: changed since the decision"


def test_nothing_done_and_nothing_due_is_no_mail() -> None:
    assert report.mail(context(), recorded(), result([])) is None


def test_the_owner_is_read_with_the_stacks_key() -> None:
    mail = report.mail(context(owner_key="CreatedBy"), recorded(owner_key="CreatedBy"), result(["i-idle"]))
    assert mail is not None
    assert "- i-idle (dev), owner unknown (no CreatedBy tag)" in mail.body


def test_a_long_fleet_keeps_the_subject_short() -> None:
    intent_ = recorded()
    intent_["stop"] = [dict(intent_["stop"][0], id=f"i-{n:04d}") for n in range(300)]
    mail = report.mail(context(), intent_, result([e["id"] for e in intent_["stop"]]))
    assert mail is not None and len(mail.subject) < 100
    assert "... and 250 more" in mail.body


# ---- the numbers ----------------------------------------------------------------------------


def test_plan_counts_name_every_reason_and_put_the_act_side_at_zero() -> None:
    fleet = [
        Instance("i-asg", NOW - timedelta(days=3), tags={"aws:autoscaling:groupName": "web"}),
        Instance("i-young", NOW - timedelta(hours=2)),
        Instance("i-idle", NOW - timedelta(days=3)),
    ]
    counts = report.plan_counts(decide(fleet, {"i-idle": quiet()}, POLICY, NOW), failed=1)
    assert (counts.checked, counts.skipped, counts.failed) == (3, 2, 1)
    assert counts.extra == {
        "Idle": 1,
        "SkippedAutoScaling": 1,
        "SkippedTooYoung": 1,
        "MalformedStopAfter": 0,
        "MetricsRequested": 0,
        "RememberedBusy": 0,
        "WouldStop": 0,
        "StoppedIdle": 0,
        "StoppedLifetime": 0,
    }


def test_decision_lines_are_the_stops_the_held_back_and_the_malformed() -> None:
    made = decide(
        [
            Instance("i-idle", NOW - timedelta(days=3)),
            Instance("i-pet", NOW - timedelta(days=3)),
            Instance("i-odd", NOW - timedelta(hours=1), tags={"StopAfter": "x"}),
            Instance("i-busy", NOW - timedelta(days=3)),
        ],
        {"i-idle": quiet(), "i-pet": quiet(), "i-busy": quiet(cpu=90.0)},
        POLICY,
        NOW,
        {"i-pet"},
    )
    lines = report.decisions(made, dry_run=False)
    assert [(d["instance_id"], d["outcome"], d["stop"]) for d in lines] == [
        ("i-idle", "StopIdle", True),
        ("i-pet", "StopProtected", False),
        ("i-odd", "TooYoung", False),
    ]


def test_a_subject_naming_instances_and_databases_fits_snss_100_characters() -> None:
    stops = [{"id": f"i-{n}", "outcome": "StopIdle"} for n in range(2)] + [
        {"id": "i-9", "outcome": "StopAfter"}
    ]
    databases = {
        "stop": [{"arn": "arn:db:a", "outcome": "StopIdle"}, {"arn": "arn:db:b", "outcome": "StopAgain"}]
    }
    made = {"stop": stops, "databases": databases}
    dry = report.subject_text(
        made, {"dry_run": True, "stopped": ["i-0", "i-1", "i-9"], "databases": {"stopped": ["arn:db:a"]}}
    )
    assert dry == "3 instances (2 idle, 1 past StopAfter) and 1 database would be stopped"
    assert len(f"[ops-autopilot-demo] DRY RUN: {dry}") <= 100
    real = report.subject_text(
        made, {"stopped": ["i-0", "i-1", "i-9"], "databases": {"stopped": ["arn:db:a", "arn:db:b"]}}
    )
    assert (
        real == "3 instances (2 idle, 1 past StopAfter) and 2 databases (1 again after AWS's 7-day restart) "
        "stopped"
    )
    alone = report.subject_text(
        {"stop": [], "databases": databases}, {"databases": {"stopped": ["arn:db:b"]}}
    )
    assert alone == "1 database (1 again after AWS's 7-day restart) stopped"


def test_every_way_a_database_is_left_alone_has_words_in_the_mail() -> None:
    assert {o.value for o in DbOutcome if o not in DB_STOPS} == set(report.DB_LABELS)
