"""instance_recovery: the pure rooms, without AWS.

The decision (with its invariants as properties), the event parser, the config and the mail."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autopilot.config import CommonConfig, ConfigError
from autopilot.events import BadEvent, InstanceStateChange
from autopilot.runner import Context, Counts
from autopilot.runtime import Deadline
from conftest import EVENTS
from instance_recovery import event, report
from instance_recovery.config import Config
from instance_recovery.decide import (
    HEALTH_CODES,
    Alarm,
    AlarmSpec,
    Instance,
    Policy,
    alarm_name,
    ineligible,
    instance_of,
    plan_alarms,
    wanted,
)
from template_tools import raw_template

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 23, 9, 16, tzinfo=UTC)
STACK = "ops-autopilot"
COMMON = CommonConfig(STACK, "eu-west-1", "arn:aws:sns:eu-west-1:123456789012:t", False, "Team")
ACTIONS = ("arn:aws:automate:eu-west-1:ec2:recover", COMMON.topic_arn)
SUPPORTED = {"t3.micro": True, "c5.large": True, "m5d.large": False}


def ctx(dry_run: bool = False) -> Context[Config]:
    common = CommonConfig(COMMON.stack_name, COMMON.region, COMMON.topic_arn, dry_run, COMMON.owner_tag_key)
    return Context("instance_recovery", Config(Policy()), common, NOW, Deadline(300.0))


def sample(which: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EVENTS / "instance_recovery" / f"{which}.json").read_text())
    return data


def existing(spec: AlarmSpec) -> Alarm:
    """The alarm CloudWatch has after ``spec`` was put."""
    return Alarm(
        spec.name, spec.instance_id, spec.period, spec.evaluation_periods, spec.actions,
        dimensions=(("InstanceId", spec.instance_id),),
    )  # fmt: skip


# ---- who is wanted, who is eligible ---------------------------------------------------------


@pytest.mark.parametrize("value", ["true", "True", " yes ", "on"])
def test_every_opt_in_word_opts_an_instance_in(value: str) -> None:
    assert wanted(Instance("i-1", tags={"AutoRecover": value}), Policy())


@pytest.mark.parametrize("value", ["false", "no", "never", "off", " Never "])
def test_an_opt_out_wins_even_over_for_all(value: str) -> None:
    assert not wanted(Instance("i-1", tags={"AutoRecover": value}), Policy(for_all=True))


@pytest.mark.parametrize("value", ["", "maybe", "1"])
def test_other_values_opt_in_only_with_for_all(value: str) -> None:
    instance = Instance("i-1", tags={"AutoRecover": value})
    assert not wanted(instance, Policy()) and wanted(instance, Policy(for_all=True))


@pytest.mark.parametrize(
    ("instance", "supported", "why"),
    [
        (Instance("i-1", root_device="instance-store"), True, "instance-store root"),
        (Instance("i-1", spot=True), True, "Spot instance"),
        (Instance("i-1", tags={"aws:autoscaling:groupName": "web"}), True, "Auto Scaling group web"),
        (Instance("i-1", tenancy="host"), True, "Dedicated Host"),
        (Instance("i-1", instance_type="m5d.large"), False, "does not support the recover action"),
        (Instance("i-1", instance_type="x9.huge"), None, "unknown to DescribeInstanceTypes"),
    ],
)
def test_what_ec2_cannot_recover_gets_no_alarm_and_a_reason(
    instance: Instance, supported: bool | None, why: str
) -> None:
    reason = ineligible(instance, supported)
    assert reason is not None and why in reason
    types = {instance.instance_type: supported} if supported is not None else {}
    tagged = replace(instance, tags={**instance.tags, "AutoRecover": "true"})
    made = plan_alarms([tagged], types, [], Policy(), ACTIONS, STACK)
    assert made.create == [] and made.ineligible == {"i-1": reason} and made.unrecoverable == 1
    # with RecoveryForAll, one nobody tagged is counted, not mailed: nobody asked for it
    untagged = plan_alarms([instance], types, [], Policy(for_all=True), ACTIONS, STACK)
    assert untagged.create == [] and untagged.ineligible == {} and untagged.unrecoverable == 1


def test_only_this_stacks_exact_names_are_its_alarms() -> None:
    assert instance_of(alarm_name(STACK, "i-0123456789abcdef0"), STACK) == "i-0123456789abcdef0"
    for name in (
        "other-recover-i-0123456789abcdef0",
        f"{STACK}-recover-i-0123456789abcdef0-copy",
        f"{STACK}-recover-i-XYZ",
        f"x{STACK}-recover-i-0123456789abcdef0",
        f"{STACK}-recover-",
    ):
        assert instance_of(name, STACK) is None, name
    assert instance_of("a.b-recover-i-01234567", "a.b") == "i-01234567"
    assert instance_of("aXb-recover-i-01234567", "a.b") is None  # the stack name is not a pattern


# ---- the plan, and its invariants --------------------------------------------------------------

IDS = [f"i-0{n:016x}" for n in range(6)]
instances = st.builds(
    Instance,
    id=st.sampled_from(IDS),
    state=st.sampled_from(["pending", "running", "stopped", "shutting-down", "terminated"]),
    instance_type=st.sampled_from([*sorted(SUPPORTED), "x9.huge"]),
    tags=st.dictionaries(
        st.sampled_from(["AutoRecover", "aws:autoscaling:groupName", "Name"]),
        st.sampled_from(["true", "false", "never", "web", ""]),
        max_size=3,
    ),
    root_device=st.sampled_from(["ebs", "instance-store"]),
    tenancy=st.sampled_from(["default", "dedicated", "host"]),
    spot=st.booleans(),
)
alarm_names = st.one_of(
    st.sampled_from(IDS).map(lambda i: alarm_name(STACK, i)),
    st.sampled_from(IDS).map(lambda i: f"other-stack-recover-{i}"),
    st.sampled_from(IDS).map(lambda i: f"{STACK}-recover-{i}-mine"),
)
alarms_st = st.builds(
    lambda name, period, actions: Alarm(
        name,
        instance_of(name, STACK) or name.split("-recover-")[-1][:19],
        period,
        2,
        actions,
        dimensions=(("InstanceId", instance_of(name, STACK) or ""),),
    ),
    alarm_names,
    st.sampled_from([60, 300]),
    st.sampled_from([ACTIONS, ACTIONS[:1]]),
)


@settings(max_examples=300, deadline=None)
@given(
    fleet=st.lists(instances, max_size=6, unique_by=lambda i: i.id),
    found=st.lists(alarms_st, max_size=6, unique_by=lambda a: a.name),
    for_all=st.booleans(),
    scoped=st.booleans(),
)
def test_alarms_only_for_wanted_eligible_live_instances_and_only_this_stacks_are_changed(
    fleet: list[Instance], found: list[Alarm], for_all: bool, scoped: bool
) -> None:
    policy = Policy(for_all=for_all)
    scope = frozenset(IDS[:1]) if scoped else None
    made = plan_alarms(fleet, SUPPORTED, found, policy, ACTIONS, STACK, scope)
    mine = {a.name for a in found if instance_of(a.name, STACK) == a.instance_id}
    by_id = {i.id: i for i in fleet}
    # what it puts: only for wanted, eligible instances that are not gone, in scope
    for spec in [*made.create, *made.update]:
        instance = by_id[spec.instance_id]
        assert wanted(instance, policy) and instance.state not in ("shutting-down", "terminated")
        assert ineligible(instance, SUPPORTED.get(instance.instance_type)) is None
        assert spec.name == alarm_name(STACK, instance.id) and spec.actions == ACTIONS
        assert scope is None or spec.instance_id in scope
    # what it deletes: only this stack's alarms, never that of a wanted eligible live instance
    for name, instance_id, _ in made.delete:
        assert name in mine and (scope is None or instance_id in scope)
        instance = by_id.get(instance_id)
        assert instance is None or not (
            wanted(instance, policy)
            and instance.state not in ("shutting-down", "terminated")
            and ineligible(instance, SUPPORTED.get(instance.instance_type)) is None
        )
    # and once applied, planning again changes nothing (the second run)
    after = [a for a in found if a.name not in {d[0] for d in made.delete}]
    after = [a for a in after if a.name not in {s.name for s in made.update}]
    after += [existing(s) for s in [*made.create, *made.update]]
    again = plan_alarms(fleet, SUPPORTED, after, policy, ACTIONS, STACK, scope)
    assert not again.changes


def test_a_state_change_looks_at_its_own_instance_only() -> None:
    fleet = [Instance(IDS[0], tags={"AutoRecover": "true"}), Instance(IDS[1], tags={"AutoRecover": "true"})]
    stale = Alarm(alarm_name(STACK, IDS[2]), IDS[2])  # of an instance gone: the schedule's to delete
    made = plan_alarms(fleet, SUPPORTED, [stale], Policy(), ACTIONS, STACK, frozenset({IDS[0]}))
    assert [s.instance_id for s in made.create] == [IDS[0]] and made.delete == []
    scheduled = plan_alarms(fleet, SUPPORTED, [stale], Policy(), ACTIONS, STACK)
    assert [d[1] for d in scheduled.delete] == [IDS[2]] and len(scheduled.create) == 2


def test_a_stopped_instance_keeps_its_alarm() -> None:
    stopped = Instance(IDS[0], state="stopped", tags={"AutoRecover": "true"})
    spec = AlarmSpec(alarm_name(STACK, IDS[0]), IDS[0], 60, 2, ACTIONS)
    assert not plan_alarms([stopped], SUPPORTED, [existing(spec)], Policy(), ACTIONS, STACK).changes


def test_a_drifted_alarm_is_updated() -> None:
    web = Instance(IDS[0], tags={"AutoRecover": "true"})
    spec = AlarmSpec(alarm_name(STACK, IDS[0]), IDS[0], 60, 2, ACTIONS)
    for drifted in (
        Alarm(spec.name, IDS[0], 300, 2, ACTIONS, dimensions=(("InstanceId", IDS[0]),)),
        Alarm(spec.name, IDS[0], 60, 2, ACTIONS[:1], dimensions=(("InstanceId", IDS[0]),)),
        Alarm(spec.name, IDS[0], 60, 2, ACTIONS, dimensions=(("InstanceId", IDS[1]),)),
        Alarm(
            spec.name, IDS[0], 60, 2, ACTIONS, metric="CPUUtilization", dimensions=(("InstanceId", IDS[0]),)
        ),
    ):
        assert plan_alarms([web], SUPPORTED, [drifted], Policy(), ACTIONS, STACK).update == [spec]


# ---- the events and the config ------------------------------------------------------------------


def test_the_handled_states_and_health_codes_are_the_template_rules() -> None:
    events = raw_template()["Resources"]["InstanceRecoveryFunction"]["Properties"]["Events"]
    pattern = events["StateChanges"]["Properties"]["Pattern"]
    assert (pattern["source"], pattern["detail-type"]) == (
        ["aws.ec2"],
        ["EC2 Instance State-change Notification"],
    )
    assert sorted(pattern["detail"]["state"]) == sorted(event.STATES)
    health = events["HealthEvents"]["Properties"]["Pattern"]
    assert (health["source"], health["detail-type"]) == (["aws.health"], ["AWS Health Event"])
    assert health["detail"]["service"] == ["EC2"]
    assert sorted(health["detail"]["eventTypeCode"]) == sorted(HEALTH_CODES)


@pytest.mark.parametrize("state", sorted(event.STATES))
def test_each_state_change_names_its_instance(state: str) -> None:
    raw = sample(f"ec2.state_change.{state}")
    change = event.parse(raw)
    assert isinstance(change, InstanceStateChange)
    assert (change.id, change.instance_id, change.state) == (raw["id"], raw["detail"]["instance-id"], state)


@pytest.mark.parametrize(
    "which",
    [
        "health.simplified_recovery.success",
        "health.simplified_recovery.failure",
        "health.alarm_recovery.success",
        "health.alarm_recovery.failure",
    ],
)
def test_each_recovery_health_event_names_its_instances(which: str) -> None:
    raw = sample(which)
    parsed = event.parse(raw)
    assert isinstance(parsed, event.HealthEvent)
    assert parsed.instance_ids == tuple(raw["resources"]) and parsed.code == raw["detail"]["eventTypeCode"]
    assert parsed.description and parsed.event_arn == raw["detail"]["eventArn"]
    # an ARN in resources, the same instance among the affected entities: named once
    arn = f"arn:aws:ec2:eu-west-1:123456789012:instance/{raw['resources'][0]}"
    assert event.parse({**raw, "resources": [arn]}).instance_ids == parsed.instance_ids  # type: ignore[union-attr]


def test_anything_else_is_turned_down() -> None:
    assert event.parse(sample("eventbridge.scheduled")).id == sample("eventbridge.scheduled")["id"]
    good = sample("health.simplified_recovery.success")
    for which, raw, reason in (
        ("another event of EC2", sample("eventbridge.not_scheduled"), "expected a scheduled event"),
        (
            "a state it does not handle",
            sample("ec2.state_change.not_handled"),
            "not one this function handles",
        ),
        ("another Health event", sample("health.not_handled"), "not a recovery event"),
        ("another service", {**good, "detail": {**good["detail"], "service": "RDS"}}, "not a recovery event"),
        ("a Health abuse event", {**good, "detail-type": "AWS Health Abuse Event"}, "expected an AWS Health"),
        (
            "no instance",
            {**good, "resources": ["vol-0123"], "detail": {**good["detail"], "affectedEntities": []}},
            "names no instance",
        ),
    ):
        with pytest.raises(BadEvent, match=reason):
            event.parse(raw)
            pytest.fail(which)


def test_config_needs_every_setting_within_its_bounds() -> None:
    env = {"RECOVERY_FOR_ALL": "true", "ALARM_PERIOD": "300", "ALARM_DATAPOINTS": "3"}
    assert Config.from_env(env) == Config(Policy(for_all=True, period=300, evaluation_periods=3))
    for broken, name in (
        ({}, "is required but not set"),
        ({"ALARM_PERIOD": "60", "ALARM_DATAPOINTS": "2"}, "RECOVERY_FOR_ALL"),
        ({**env, "ALARM_PERIOD": "120"}, "ALARM_PERIOD"),
        ({**env, "ALARM_PERIOD": "30"}, "ALARM_PERIOD"),
        ({**env, "ALARM_DATAPOINTS": "0"}, "ALARM_DATAPOINTS"),
        ({**env, "ALARM_DATAPOINTS": "11"}, "ALARM_DATAPOINTS"),
        ({**env, "RECOVERY_FOR_ALL": "maybe"}, "RECOVERY_FOR_ALL"),
    ):
        with pytest.raises(ConfigError, match=name):
            Config.from_env(broken)


# ---- the mail -------------------------------------------------------------------------------------


def intent(trigger: str = "schedule", **extra: Any) -> dict[str, Any]:
    spec = AlarmSpec(alarm_name(STACK, "i-1"), "i-1", 60, 2, ACTIONS).as_dict()
    return {
        "trigger": trigger,
        "dry_run": False,
        "checked": 3,
        "watched": 1,
        "create": [spec],
        "update": [],
        "delete": [],
        "ineligible": [],
        "instances": {"i-1": {"name": "web", "owner": "alice", "type": "t3.micro", "state": "running"}},
        **extra,
    }


def test_the_schedules_mail_names_each_alarm_with_its_instance_and_owner() -> None:
    result = {"put": [alarm_name(STACK, "i-1")], "deleted": [], "failures": []}
    mail = report.mail(ctx(), intent(), result)
    assert mail is not None and mail.severity == "info"
    assert mail.subject == "[ops-autopilot] recovery alarms 1 created"
    assert (
        "Recovery alarms created (1)" in mail.body and "i-1 (web)" in mail.body and "Team: alice" in mail.body
    )
    assert report.counts(intent(), result) == Counts(
        changed=1, extra={"AlarmsCreated": 1, "AlarmsUpdated": 0, "AlarmsDeleted": 0}
    )


def test_a_state_changes_routine_alarm_is_not_mailed_but_a_problem_is() -> None:
    result = {"put": [alarm_name(STACK, "i-1")], "deleted": [], "failures": []}
    assert report.mail(ctx(), intent("state change"), result) is None
    failed = {
        "put": [],
        "deleted": [],
        "failures": [{"alarm": "a", "instance_id": "i-1", "action": "put", "code": "X"}],
    }
    mail = report.mail(ctx(), intent("state change"), failed)
    assert mail is not None and mail.severity == "warning" and "Could not put a: X" in mail.body
    blocked = intent("state change", create=[], ineligible=[{"instance_id": "i-1", "why": "Spot instance"}])
    mail = report.mail(ctx(), blocked, {"put": [], "deleted": [], "failures": []})
    assert mail is not None and "1 opted-in instance EC2 cannot recover" in mail.subject


def test_in_dry_run_the_mail_says_what_would_be_done() -> None:
    mail = report.mail(ctx(dry_run=True), intent(), {"put": [], "deleted": [], "failures": []})
    assert mail is not None and mail.subject.startswith("[ops-autopilot] DRY RUN: recovery alarms 1 created")
    assert "Recovery alarms would be created (1)" in mail.body
