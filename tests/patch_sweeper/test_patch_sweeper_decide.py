"""The decisions (decide.py), pure: who is patched and in which batches, what a command's
final event means for its sweep, what a finished sweep means. Table-driven plus hypothesis
invariants."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patch_sweeper.decide import (
    FIX_CONNECTION,
    FIX_REGISTER,
    Instance,
    Invocation,
    ManagedNode,
    PatchState,
    PluginResult,
    SendFailure,
    SweepRecord,
    TargetPlan,
    classify,
    decide_targets,
    not_patchable_entries,
    on_command_finished,
    opted_out,
    plan_batches,
    summarise,
    tail,
)

pytestmark = pytest.mark.unit


def test_managed_unmanaged_opted_out_stopped() -> None:
    instances = [
        Instance("i-managed", tags={"Name": "web"}),
        Instance("i-unmanaged", tags={"Name": "legacy"}),
        Instance("i-lost"),
        Instance("i-inactive"),
        Instance("i-optout", tags={"AutoPatch": "false"}),
        Instance("i-optout-unmanaged", tags={"AutoPatch": "FALSE"}),
        Instance("i-stopped", state="stopped"),
    ]
    nodes = [
        ManagedNode("i-managed", "Online"),
        ManagedNode("i-lost", "ConnectionLost", last_ping="2026-11-01 10:00 UTC"),
        ManagedNode("i-inactive", "Inactive"),
        ManagedNode("i-optout", "Online"),
        ManagedNode("i-stopped", "Online"),
        ManagedNode("i-gone", "Online"),  # managed but not a running instance
    ]
    plan = decide_targets(instances, nodes)
    assert [t.id for t in plan.targets] == ["i-managed"]
    assert {i.id for i in plan.opted_out} == {"i-optout", "i-optout-unmanaged"}
    reasons = {n.instance.id: (n.reason, n.fix) for n in plan.not_patchable}
    assert reasons == {
        "i-unmanaged": ("not managed by Systems Manager", FIX_REGISTER),
        "i-lost": ("SSM Agent ConnectionLost since 2026-11-01 10:00 UTC", FIX_CONNECTION),
        "i-inactive": ("SSM Agent Inactive", FIX_CONNECTION),
    }
    assert "AmazonSSMManagedInstanceCore" in FIX_REGISTER


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({"AutoPatch": "false"}, True),
        ({"AutoPatch": " False "}, True),
        ({"AutoPatch": "never"}, True),
        ({"AutoPatch": "off"}, True),  # the product-wide opt-out words (autopilot.tags)
        ({"AutoPatch": "NO"}, True),
        ({"AutoPatch": "true"}, False),
        ({"AutoPatch": ""}, False),
        ({"autopatch": "false"}, False),  # tag keys are case-sensitive in EC2
        ({}, False),
    ],
)
def test_opt_out_values(tags: dict[str, str], expected: bool) -> None:
    assert opted_out(Instance("i-1", tags=tags)) is expected


def test_custom_opt_out_tag_key() -> None:
    plan = decide_targets(
        [Instance("i-1", tags={"Patching": "no"})], [ManagedNode("i-1", "Online")], opt_out_tag="Patching"
    )
    assert not plan.targets and len(plan.opted_out) == 1


def test_batches_of_fifty() -> None:
    ids = [f"i-{n:017x}" for n in range(120)]
    batches = plan_batches(ids)
    assert [len(b) for b in batches] == [50, 50, 20]
    assert [i for b in batches for i in b] == ids
    assert plan_batches([]) == []
    with pytest.raises(ValueError):
        plan_batches(ids, 51)


instance_ids = st.from_regex(r"i-[0-9a-f]{8}", fullmatch=True)
tag_values = st.sampled_from(["false", "False", "true", "", "never", "yes", "no"])
states = st.sampled_from(["running", "running", "stopped", "pending", "stopping"])
pings = st.sampled_from(["Online", "Online", "ConnectionLost", "Inactive"])


@st.composite
def fleets(draw: st.DrawFn) -> tuple[list[Instance], list[ManagedNode]]:
    ids = draw(st.lists(instance_ids, unique=True, max_size=150))
    instances = []
    nodes = []
    for instance_id in ids:
        tags = {"AutoPatch": draw(tag_values)} if draw(st.booleans()) else {}
        instances.append(Instance(instance_id, state=draw(states), tags=tags))
        if draw(st.booleans()):
            nodes.append(ManagedNode(instance_id, draw(pings)))
    return instances, nodes


@given(fleets())
def test_every_running_instance_lands_in_exactly_one_list(
    fleet: tuple[list[Instance], list[ManagedNode]],
) -> None:
    instances, nodes = fleet
    plan = decide_targets(instances, nodes)
    targets = [t.id for t in plan.targets]
    broken = [n.instance.id for n in plan.not_patchable]
    skipped = [i.id for i in plan.opted_out]
    running = sorted(i.id for i in instances if i.state == "running")
    assert sorted(targets + broken + skipped) == running


@given(fleets())
def test_opted_out_or_offline_instances_are_never_targeted(
    fleet: tuple[list[Instance], list[ManagedNode]],
) -> None:
    instances, nodes = fleet
    online = {n.instance_id for n in nodes if n.ping_status == "Online"}
    plan = decide_targets(instances, nodes)
    for target in plan.targets:
        assert not opted_out(target)
        assert target.state == "running"
        assert target.id in online


@given(fleets())
def test_batches_cover_targets_once_and_stay_within_the_api_limit(
    fleet: tuple[list[Instance], list[ManagedNode]],
) -> None:
    plan = decide_targets(*fleet)
    batches = plan.batches()
    assert all(1 <= len(b) <= 50 for b in batches)
    flat = [i for b in batches for i in b]
    assert flat == [t.id for t in plan.targets]
    assert len(batches) == -(-len(plan.targets) // 50)


# -- what a finished sweep means ------------------------------------------------------------

CMD = "e8d3c0e4-71f7-4491-898f-c9b35bee5f3b"
SKIPPED = PluginResult("PatchWindows", "Success", "Success", 0)


def _inv(instance_id: str, status: str, plugin_status: str = "Success", code: int = 0) -> Invocation:
    return Invocation(
        CMD,
        instance_id,
        status,
        status,
        (SKIPPED, PluginResult("PatchLinux", plugin_status, plugin_status, code)),
    )


def test_classify_success_failure_pending_reboot_and_refused_batch() -> None:
    outcome = classify(
        ["i-ok", "i-reboot", "i-bad", "i-silent", "i-refused"],
        [_inv("i-ok", "Success"), _inv("i-reboot", "Success"), _inv("i-bad", "Failed", "Failed", 1)],
        [
            PatchState("i-ok", installed=40, missing=0),
            PatchState("i-reboot", installed=38, installed_pending_reboot=2),
            PatchState("i-bad", installed=30, failed=1, missing=3),
        ],
        [SendFailure(("i-refused",), "InvalidInstanceId")],
        {(CMD, "i-bad"): "yum: error: cannot download"},
    )
    assert outcome.succeeded == ("i-ok", "i-reboot")
    assert outcome.patched_cleanly == ("i-ok",)
    assert [s.instance_id for s in outcome.pending_reboot] == ["i-reboot"]
    failed = {f.instance_id: f for f in outcome.failed}
    assert failed["i-bad"].reason == "Failed in step PatchLinux"
    assert failed["i-bad"].output_tail == "yum: error: cannot download"
    assert failed["i-silent"].reason == "no result reported for this instance"
    assert failed["i-refused"].reason == "command not sent: InvalidInstanceId"
    assert outcome.compliance.reporting == 3
    assert outcome.compliance.installed == 108
    assert outcome.compliance.installed_pending_reboot == 2
    assert outcome.compliance.missing == 3


def test_undeliverable_invocation_has_no_failed_step() -> None:
    inv = Invocation(CMD, "i-1", "Undeliverable", "Undeliverable", ())
    outcome = classify(["i-1"], [inv], [])
    assert outcome.failed[0].reason == "Undeliverable"


statuses = st.sampled_from(["Success", "Failed", "TimedOut", "Cancelled", "Undeliverable"])


@given(
    st.lists(st.tuples(st.from_regex(r"i-[0-9a-f]{6}", fullmatch=True), statuses), unique_by=lambda t: t[0]),
    st.data(),
)
def test_every_target_is_reported_exactly_once(results: list[tuple[str, str]], data: st.DataObject) -> None:
    targeted = [i for i, _ in results]
    reported = data.draw(st.lists(st.sampled_from(targeted), unique=True)) if targeted else []
    invocations = [_inv(i, s) for i, s in results if i in reported]
    outcome = classify(targeted, invocations, [PatchState(i, installed_pending_reboot=1) for i in targeted])
    seen = list(outcome.succeeded) + [f.instance_id for f in outcome.failed]
    assert sorted(seen) == sorted(targeted)
    assert {s.instance_id for s in outcome.pending_reboot} <= set(outcome.succeeded)


def test_tail_keeps_the_last_lines_and_stderr() -> None:
    stdout = "\n".join(f"line {n}" for n in range(100))
    result = tail(stdout, "fatal: no space left on device\n", lines=3)
    assert result.splitlines() == ["line 98", "line 99", "fatal: no space left on device"]
    assert len(tail("x" * 5000, chars=100)) == 100
    assert tail("", "") == ""


# -- nothing to do, nothing to say; the owner by the stack's owner tag key --------------------


def test_an_empty_or_all_opted_out_fleet_is_worth_a_run_only_to_say_what_a_dry_run_leaves_out() -> None:
    empty = TargetPlan((), (), ())
    assert not empty.worth_a_run(dry_run=False) and not empty.worth_a_run(dry_run=True)
    left_out = TargetPlan((), (), (Instance("i-1", tags={"AutoPatch": "off"}),))
    assert not left_out.worth_a_run(dry_run=False) and left_out.worth_a_run(dry_run=True)
    dark = decide_targets([Instance("i-1")], [])
    assert dark.worth_a_run(dry_run=False)


def test_not_patchable_entries_name_the_owner_by_the_configured_key() -> None:
    plan = decide_targets([Instance("i-1", tags={"Name": "x", "Owner": "bob", "CreatedBy": "ana"})], [])
    (entry,) = not_patchable_entries(plan, "CreatedBy")
    assert entry["owner"] == "ana" and entry["name"] == "x" and entry["fix"] == FIX_REGISTER
    assert not_patchable_entries(plan, "Owner")[0]["owner"] == "bob"


# -- what a command's final event means for its sweep ----------------------------------------

A, B, C = ("a" * 36, "b" * 36, "c" * 36)


def _record(**changes: object) -> SweepRecord:
    base = SweepRecord("s", "2026-11-22T03:00:00+00:00", "Install", "NoReboot", (("i-1",), ("i-2",)))
    return SweepRecord(**{**base.__dict__, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("record", "command", "verdict"),
    [
        (None, A, "ignore"),  # no such sweep (another stack's, or expired)
        (_record(sent={0: A}, pending=frozenset({A}), phase="sent"), C, "ignore"),  # not one of its commands
        (_record(sent={0: A, 1: B}, pending=frozenset({A, B})), A, "count"),
        (_record(sent={0: A, 1: B}, pending=frozenset({B})), A, "ignore"),  # already counted
        (_record(sent={0: A}, phase="sent"), A, "count"),  # complete, digest not made: make it
        (_record(sent={0: A}, phase="sent", digest_claim="t"), A, "ignore"),  # reported already
        (_record(sent={0: A}, phase="sending"), A, "ignore"),  # counted; the sweep will report
        (_record(sent={0: A}, phase="sending"), C, "early"),  # final before it was recorded
        (_record(sent={0: A}, phase="sending", finished=frozenset({C})), C, "ignore"),  # noted
        (_record(sent={0: A}, phase="sent"), C, "ignore"),  # every command recorded: not ours
    ],
)
def test_on_command_finished(record: SweepRecord | None, command: str, verdict: str) -> None:
    assert on_command_finished(record, command)[0] == verdict


def test_a_sweep_resumes_with_the_batches_neither_sent_nor_refused() -> None:
    record = _record(batches=(("i-1",), ("i-2",), ("i-3",)), sent={0: A}, send_errors={2: "Denied"})
    assert record.batches_to_send() == [(1, ("i-2",))]
    assert not record.complete and _record(phase="sent").complete
    assert record.targeted == ["i-1", "i-2", "i-3"]


# -- the digest's data: exact counts, the first 50 of each list ------------------------------


def test_summarise_keeps_exact_counts_and_the_first_fifty_with_name_and_owner() -> None:
    ids = [f"i-{n:03d}" for n in range(120)]
    invocations = [_inv(i, "Success" if n < 60 else "Failed", "Failed", 1) for n, i in enumerate(ids)]
    states = [
        PatchState(i, installed=3, installed_pending_reboot=1 if n < 5 else 0) for n, i in enumerate(ids)
    ]
    outcome = classify(ids, invocations, states, output_tails={(CMD, "i-060"): "boom"})
    record = _record(batches=(tuple(ids),), not_patchable_count=3, opted_out_count=2)
    instances = {"i-060": Instance("i-060", tags={"Name": "db", "Owner": "bob", "CreatedBy": "ana"})}
    data = summarise(record, outcome, instances, ["patch compliance: Throttling"], "CreatedBy")
    assert (data["targeted"], data["succeeded"], data["failed_count"]) == (120, 60, 60)
    assert (data["pending_reboot_count"], data["patched_count"]) == (5, 55)
    assert len(data["failed"]) == 50 and len(data["patched"]) == 50 and len(data["pending_reboot"]) == 5
    first = data["failed"][0]
    assert first == {
        "id": "i-060",
        "name": "db",
        "owner": "ana",
        "command_id": CMD,
        "reason": "Failed in step PatchLinux",
        "tail": "boom",
    }
    assert data["patched"][0] == {
        "id": "i-005",
        "name": "",
        "owner": "",
        "installed": 3,
        "missing": 0,
        "failed": 0,
    }
    assert data["errors"] == ["patch compliance: Throttling"] and data["compliance"]["reporting"] == 120
    assert outcome.shown()[:1] == ["i-060"] and len(outcome.shown()) == 105
