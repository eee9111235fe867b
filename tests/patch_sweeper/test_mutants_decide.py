"""patch_sweeper.decide where `make mutate` (tools/mutate.py) found behaviour no test pinned down:
each test names the mutants it kills (mutmut's names; docs/mutation-survivors.md lists the
survivors explained instead). Pure decisions, no AWS."""

from __future__ import annotations

import pytest

from patch_sweeper.decide import (
    Invocation,
    PatchState,
    SweepRecord,
    classify,
    on_command_finished,
    plan_batches,
    tail,
)

pytestmark = pytest.mark.unit


def record(**changes: object) -> SweepRecord:
    base = SweepRecord(
        sweep_id="sweep-1",
        started_at="2024-05-14T09:17:00Z",
        operation="Install",
        reboot_option="RebootIfNeeded",
        batches=(("i-1",), ("i-2",)),
        sent={0: "cmd-1", 1: "cmd-2"},
        pending=frozenset({"cmd-2"}),
        phase="sent",
    )
    return SweepRecord(**{**base.__dict__, **changes})  # type: ignore[arg-type]


def test_every_verdict_on_a_final_command_event_says_why() -> None:
    # x_on_command_finished__mutmut_4, _5, _9, _10, _14, _15, _20, _21, _24, _25: the reasons
    # (the log line of every status event, counted or ignored).
    assert on_command_finished(None, "cmd-1") == (
        "ignore",
        "no such sweep in this stack (another stack's, or expired)",
    )
    assert on_command_finished(record(), "cmd-9") == ("ignore", "not one of the sweep's commands")
    assert on_command_finished(record(), "cmd-2") == ("count", "one of the sweep's commands is final")
    complete = record(pending=frozenset())
    assert on_command_finished(complete, "cmd-2") == (
        "count",
        "the sweep is complete but its digest was not made yet",
    )
    assert on_command_finished(record(), "cmd-1") == ("ignore", "already counted (a repeated event)")


def test_batches_of_one_are_allowed_and_a_bad_size_says_the_range() -> None:
    # x_plan_batches__mutmut_2, _3 (size 1 refused), _5 (the message).
    assert plan_batches(["i-1", "i-2", "i-1"], 1) == [["i-1"], ["i-2"]]
    with pytest.raises(ValueError, match=r"^batch size must be 1\.\.50$"):
        plan_batches(["i-1"], 0)


def test_a_failure_says_what_ssm_said_and_has_no_made_up_output() -> None:
    # x_classify__mutmut_32 (status details "and" status), _36, _38, _39 (the output tail of
    # an instance without one: None or "XXXX" instead of "").
    timed_out = Invocation("cmd-1", "i-1", "TimedOut")
    undelivered = Invocation("cmd-1", "i-2", "Failed", status_details="DeliveryTimedOut")
    outcome = classify(["i-1", "i-2"], [timed_out, undelivered], [], output_tails={("cmd-1", "i-2"): "boom"})
    assert [(f.instance_id, f.reason, f.output_tail) for f in outcome.failed] == [
        ("i-1", "TimedOut", ""),
        ("i-2", "DeliveryTimedOut", "boom"),
    ]


def test_the_compliance_totals_add_up_critical_and_security_findings() -> None:
    # x_classify__mutmut_66, _67, _73, _74 (the critical and security totals).
    states = [
        PatchState("i-1", critical_non_compliant=2, security_non_compliant=3),
        PatchState("i-2", critical_non_compliant=1, security_non_compliant=4),
    ]
    ok = [Invocation("cmd-1", "i-1", "Success"), Invocation("cmd-1", "i-2", "Success")]
    totals = classify(["i-1", "i-2"], ok, states).compliance
    assert (totals.reporting, totals.critical_non_compliant, totals.security_non_compliant) == (2, 3, 7)


def test_the_output_tail_keeps_indentation_and_exactly_the_allowed_length() -> None:
    # x_tail__mutmut_1 (a made-up stderr), _3, _9 (indentation stripped), _14 (cut at exactly
    # the limit).
    assert tail("Installing:\n    openssl\n") == "Installing:\n    openssl"
    assert tail("  indented") == "  indented"
    exactly = "x" * 1200
    assert tail(exactly) == exactly
    assert tail("y" + exactly) == "..." + exactly[-1197:]
