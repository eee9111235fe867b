"""The mails and the numbers (report.py), pure: rendered from the intent and the act's result
alone, as the outbox keeps them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from autopilot.config import CommonConfig
from autopilot.runner import Context, Counts
from autopilot.runtime import Deadline
from patch_sweeper import report
from patch_sweeper.config import Config
from patch_sweeper.decide import (
    Instance,
    Invocation,
    ManagedNode,
    PatchState,
    PluginResult,
    SweepRecord,
    classify,
    decide_targets,
    not_patchable_entries,
    summarise,
)

pytestmark = pytest.mark.unit
CMD = "e8d3c0e4-71f7-4491-898f-c9b35bee5f3b"
SKIPPED = PluginResult("PatchWindows", "Success", "Success", 0)
NOW = datetime(2026, 11, 23, 12, 6, tzinfo=UTC)


def _ctx(dry_run: bool = False, owner_tag_key: str = "Owner") -> Context[Config]:
    common = CommonConfig("ops", "eu-west-1", "arn:aws:sns:eu-west-1:123456789012:t", dry_run, owner_tag_key)
    config = Config("Install", "NoReboot", "10%", "5%", "/ops/patch", "table")
    return Context("patch_sweeper", config, common, NOW, Deadline(300))


def _inv(instance_id: str, status: str, plugin_status: str = "Success", code: int = 0) -> Invocation:
    return Invocation(
        CMD,
        instance_id,
        status,
        status,
        (SKIPPED, PluginResult("PatchLinux", plugin_status, plugin_status, code)),
    )


def _record(operation: str = "Install", **changes: Any) -> SweepRecord:
    return SweepRecord("s", "2026-11-22T03:00:00+00:00", operation, "NoReboot", (), **changes)


def _digest(result: dict[str, Any]) -> dict[str, Any]:
    # exactly what the outbox gives back: plain JSON
    data: dict[str, Any] = json.loads(json.dumps(result))
    return data


def test_results_digest_content() -> None:
    outcome = classify(
        ["i-ok", "i-reboot", "i-bad"],
        [_inv("i-ok", "Success"), _inv("i-reboot", "Success"), _inv("i-bad", "Failed", "Failed", 1)],
        [PatchState("i-reboot", installed=10, installed_pending_reboot=2), PatchState("i-ok", installed=5)],
        output_tails={(CMD, "i-bad"): "Installing kernel\nERROR: rpmdb open failed"},
    )
    record = _record(
        not_patchable=(
            {"id": "i-dark", "name": "legacy", "owner": "", "reason": "not managed", "fix": "attach"},
        ),
        not_patchable_count=1,
        opted_out_count=2,
    )
    instances = {"i-bad": Instance("i-bad", tags={"Name": "db-1", "Owner": "ana@example.com"})}
    digest = _digest(summarise(record, outcome, instances, [], "Owner"))
    mail = report.mail(_ctx(), {"kind": "command"}, {"status": "reported", "digest": digest})
    assert mail is not None
    body = mail.body
    assert mail.subject == "[ops] patch sweep: 2 patched, 1 failed, 1 pending reboot, 1 not patchable"
    assert mail.severity == "warning"
    assert "i-bad (db-1) owner ana@example.com" in body
    assert "| ERROR: rpmdb open failed" in body
    assert "2 patches installed, waiting for a reboot (RebootOption=NoReboot)" in body
    assert "i-dark (legacy)" in body and "why: not managed" in body
    assert "2 instances reporting: 15 installed, 2 installed pending reboot" in body
    assert "AutoPatch=false" in body
    assert "2 instances left out on request (AutoPatch=false)." in body
    assert "run-command/" + CMD in body
    assert body.endswith("region eu-west-1, 2026-11-23 12:06 UTC.")  # the clock's time, not the event's
    counts = report.counts({"kind": "command"}, {"digest": digest})
    assert counts == Counts(changed=2, failed=1, extra={"PendingReboot": 1})


def test_scan_digest_says_scanned_and_info_when_all_good() -> None:
    outcome = classify(["i-ok"], [_inv("i-ok", "Success")], [PatchState("i-ok", missing=4)])
    digest = _digest(summarise(_record("Scan"), outcome, {}, [], "Owner"))
    mail = report.mail(_ctx(), {"kind": "command"}, {"digest": digest})
    assert mail is not None
    assert mail.subject.startswith("[ops] patch sweep: 1 scanned, 0 failed")
    assert mail.severity == "info"
    assert "4 missing" in mail.body


def test_long_lists_show_fifty_and_say_how_many_more() -> None:
    ids = [f"i-{n:03d}" for n in range(130)]
    outcome = classify(ids, [_inv(i, "Failed" if n < 70 else "Success") for n, i in enumerate(ids)], [])
    digest = _digest(summarise(_record(), outcome, {}, ["results of command x: AccessDenied"], "Owner"))
    mail = report.mail(_ctx(), {"kind": "command"}, {"digest": digest})
    assert mail is not None
    assert "Failed (70)" in mail.body and "... and 20 more (every one is in the function's log)." in mail.body
    assert "Patched, no reboot pending (60)" in mail.body and "... and 10 more" in mail.body
    assert "(not listed)" not in mail.body  # the padding only counts, it is never shown
    assert "Could not read everything" in mail.body and "AccessDenied" in mail.body
    assert report.counts({}, {"digest": digest}) == Counts(changed=60, failed=71, extra={"PendingReboot": 0})


def _dry_run_intent(owner_tag_key: str = "Owner") -> dict[str, Any]:
    plan = decide_targets(
        [
            Instance("i-a", tags={"Name": "web", "Owner": "bob", "CreatedBy": "ana"}),
            Instance("i-b", tags={"Owner": "bob", "CreatedBy": "carl"}),
            Instance("i-c", tags={"AutoPatch": "false"}),
        ],
        [ManagedNode("i-a", "Online"), ManagedNode("i-c", "Online")],
    )
    return {
        "kind": "sweep",
        "operation": "Install",
        "reboot_option": "NoReboot",
        "rings": [{"number": 0, "batches": len(plan.batches()), "instances": len(plan.targets)}],
        "not_patchable": not_patchable_entries(plan, owner_tag_key),
        "not_patchable_count": len(plan.not_patchable),
        "opted_out_count": len(plan.opted_out),
        "would_patch": [{**i.entry(owner_tag_key), "platform": i.platform} for i in plan.targets],
        "left_out": [i.entry(owner_tag_key) for i in plan.opted_out],
    }


def test_dry_run_digest_lists_targets_and_not_patchable() -> None:
    mail = report.mail(_ctx(dry_run=True), _dry_run_intent(), {"status": "dry-run"})
    assert mail is not None
    body = mail.body
    assert mail.subject == "[ops] DRY RUN: patch sweep would install 1 instance, 1 not patchable"
    assert "DRY RUN: nothing was changed" in body
    assert "Would patch (1)" in body and "i-a (web) owner bob" in body
    assert "1 command of at most 50 instances" in body
    assert "Cannot be patched (1)" in body and "i-b owner bob" in body
    assert "Left out (AutoPatch=false) (1)" in body
    assert mail.severity == "warning"
    assert report.counts(_dry_run_intent(), {"status": "dry-run"}) == Counts()


def test_the_owner_shown_is_the_one_under_the_stacks_owner_tag_key() -> None:
    mail = report.mail(_ctx(True, "CreatedBy"), _dry_run_intent("CreatedBy"), {"status": "dry-run"})
    assert mail is not None
    assert "i-a (web) owner ana" in mail.body and "i-b owner carl" in mail.body
    assert "bob" not in mail.body


def test_no_mail_without_a_digest() -> None:
    for result in (
        {"status": "waiting", "still_running": 1},
        {"status": "sent"},
        {"status": "already-reported"},
    ):
        assert report.mail(_ctx(), {"kind": "command"}, result) is None
        assert report.counts({"kind": "command"}, result) == Counts()
    empty = _digest(summarise(_record(), classify([], [], []), {}, [], "Owner"))
    assert report.mail(_ctx(), {"kind": "sweep"}, {"status": "sent", "digest": empty}) is None
