"""Result classification and the digest's content (pure: no AWS)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patch_sweeper.digest import dry_run_digest, results_digest
from patch_sweeper.results import (
    Invocation,
    PatchState,
    PluginResult,
    SendFailure,
    classify,
    tail,
)
from patch_sweeper.targeting import Instance, ManagedNode, decide_targets

pytestmark = pytest.mark.unit
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


def test_results_digest_content() -> None:
    outcome = classify(
        ["i-ok", "i-reboot", "i-bad"],
        [_inv("i-ok", "Success"), _inv("i-reboot", "Success"), _inv("i-bad", "Failed", "Failed", 1)],
        [PatchState("i-reboot", installed=10, installed_pending_reboot=2), PatchState("i-ok", installed=5)],
        output_tails={(CMD, "i-bad"): "Installing kernel\nERROR: rpmdb open failed"},
    )
    digest, subject, summary, severity = results_digest(
        outcome,
        stack="ops",
        region="eu-west-1",
        operation="Install",
        reboot_option="NoReboot",
        not_patchable=[
            {"id": "i-dark", "name": "legacy", "owner": "", "reason": "not managed", "fix": "attach"}
        ],
        not_patchable_count=1,
        opted_out_count=2,
        instances={"i-bad": Instance("i-bad", tags={"Name": "db-1", "Owner": "ana@example.com"})},
        opt_out_tag="AutoPatch",
        log_group="/ops/patch",
    )
    body = digest.body(summary)
    assert subject == "patch sweep: 2 patched, 1 failed, 1 pending reboot, 1 not patchable"
    assert digest.subject(subject).startswith("[ops] patch sweep")
    assert severity == "warning"
    assert "i-bad (db-1) owner ana@example.com" in body
    assert "| ERROR: rpmdb open failed" in body
    assert "2 patches installed, waiting for a reboot (RebootOption=NoReboot)" in body
    assert "i-dark (legacy)" in body and "why: not managed" in body
    assert "2 instances reporting: 15 installed, 2 installed pending reboot" in body
    assert "AutoPatch=false" in body
    assert "run-command/" + CMD in body


def test_scan_digest_says_scanned_and_info_when_all_good() -> None:
    outcome = classify(["i-ok"], [_inv("i-ok", "Success")], [PatchState("i-ok", missing=4)])
    digest, subject, _summary, severity = results_digest(
        outcome,
        stack="ops",
        region="eu-west-1",
        operation="Scan",
        reboot_option="NoReboot",
        not_patchable=[],
        not_patchable_count=0,
        opted_out_count=0,
        instances={},
        opt_out_tag="AutoPatch",
        log_group="/ops/patch",
    )
    assert subject.startswith("patch sweep: 1 scanned, 0 failed")
    assert severity == "info"
    assert "4 missing" in digest.body("x")


def test_dry_run_digest_lists_targets_and_not_patchable() -> None:
    plan = decide_targets(
        [
            Instance("i-a", tags={"Name": "web"}),
            Instance("i-b"),
            Instance("i-c", tags={"AutoPatch": "false"}),
        ],
        [ManagedNode("i-a", "Online"), ManagedNode("i-c", "Online")],
    )
    digest, subject, summary, severity = dry_run_digest(
        plan,
        stack="ops",
        region="eu-west-1",
        operation="Install",
        reboot_option="NoReboot",
        opt_out_tag="AutoPatch",
        log_group="/ops/patch",
    )
    body = digest.body(summary)
    assert digest.subject(subject) == "[ops] DRY RUN: patch sweep would install 1 instance, 1 not patchable"
    assert "DRY RUN: nothing was changed" in body
    assert "Would patch (1)" in body and "i-a (web)" in body
    assert "Cannot be patched (1)" in body and "i-b" in body
    assert "Left out (AutoPatch=false) (1)" in body
    assert severity == "warning"
