"""report.py: the mail (only when a person must act) and the numbers, pure functions of the
intent and act's result."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from autopilot.config import CommonConfig
from autopilot.runner import Context, Counts
from autopilot.runtime import Deadline
from owner_tagger import report
from owner_tagger.config import Config

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 23, 12, 5, tzinfo=UTC)
INSTANCE = {"id": "i-0123456789abcdef0", "type": "instance", "parent": None, "name": "web"}
VOLUME = {"id": "vol-0123456789abcdef0", "type": "volume", "parent": INSTANCE["id"], "name": "web"}
ENI = {"id": "eni-0123456789abcdef0", "type": "network-interface", "parent": INSTANCE["id"], "name": "web"}
SNAPSHOT = {"id": "snap-0123456789abcdef0", "type": "snapshot", "parent": None, "name": ""}
EVENT = {
    "id": "d1e2f3a4-b5c6",
    "name": "RunInstances",
    "caller": {"type": "IAMUser", "name": "arn:aws:iam::123456789012:user/bob"},
}
NO_RESULT: dict[str, Any] = {"tagged": {}, "failed": [], "found": {}}


def ctx(key: str = "Owner", dry_run: bool = False) -> Context[Config]:
    common = CommonConfig("stack", "eu-west-1", "arn:aws:sns:eu-west-1:1:t", dry_run, owner_tag_key=key)
    return Context("owner_tagger", Config(), common, NOW, Deadline(60.0))


def intent(**parts: Any) -> dict[str, Any]:
    base = {
        "event": EVENT,
        "owner": {"value": "bob", "kind": "person", "reason": "IAM user name"},
        "tag": [],
        "unresolved": [],
        "volumes_missing": [],
        "waited_seconds": 0.0,
    }
    return {**base, **parts}


def tagged(*resources: dict[str, Any], value: str = "bob") -> list[dict[str, Any]]:
    return [{**r, "value": value, "source": "identity"} for r in resources]


def test_routine_tagging_is_silent() -> None:
    planned = intent(tag=tagged(INSTANCE, VOLUME, ENI))
    done = {
        "tagged": dict.fromkeys([INSTANCE["id"], VOLUME["id"], ENI["id"]], "bob"),
        "failed": [],
        "found": {},
    }
    assert report.mail(ctx(), planned, done) is None


def test_unresolved_owner_mail() -> None:
    unknown = intent(
        event={**EVENT, "caller": {"type": "Unknown", "name": "AIDAEXAMPLEUNKNOWN"}},
        owner={"value": None, "kind": "unresolved", "reason": "unknown-type"},
        unresolved=[INSTANCE, VOLUME, ENI],
    )
    mail = report.mail(ctx(), unknown, NO_RESULT)
    assert mail is not None
    assert mail.subject == "[stack] Owner tag: owner unknown for 3 resources"
    assert mail.severity == "warning"
    assert mail.body.startswith(
        "RunInstances by Unknown AIDAEXAMPLEUNKNOWN created resources that did not get an owner tag (Owner)."
    )
    assert "- instance i-0123456789abcdef0 (Name: web)" in mail.body
    assert "- volume vol-0123456789abcdef0 of instance i-0123456789abcdef0 (Name: web)" in mail.body
    assert "Why: the caller's identity names no owner (unknown-type)." in mail.body
    assert "#VolumeDetails:volumeId=vol-0123456789abcdef0" in mail.body
    assert "Key=Owner,Value=<owner>" in mail.body and "2026-11-23 12:05 UTC" in mail.body  # ctx.now


def test_failed_tags_mail_names_the_error_and_the_owner_to_write() -> None:
    planned = intent(tag=tagged(SNAPSHOT, value="dlm.amazonaws.com"))
    failed = {
        "tagged": {},
        "failed": [{"id": SNAPSHOT["id"], "code": "InvalidSnapshot.NotFound", "message": "gone"}],
    }
    mail = report.mail(ctx(), planned, failed)
    assert mail is not None
    assert mail.subject == "[stack] Owner tag: tagging failed for 1 resource"
    assert "Owner to write: dlm.amazonaws.com" in mail.body and "InvalidSnapshot.NotFound: gone" in mail.body


def test_volumes_not_attached_mail_says_how_long_it_waited() -> None:
    mail = report.mail(ctx(), intent(volumes_missing=[INSTANCE], waited_seconds=14.0), NO_RESULT)
    assert mail is not None
    assert mail.subject == "[stack] Owner tag: volumes not tagged on 1 instance"
    assert INSTANCE["id"] in mail.body and "14 s" in mail.body


def test_everything_at_once_and_in_dry_run() -> None:
    planned = intent(tag=tagged(SNAPSHOT), unresolved=[INSTANCE], volumes_missing=[INSTANCE])
    failed = {"failed": [{"id": SNAPSHOT["id"], "code": "X", "message": "y"}]}
    mail = report.mail(ctx(dry_run=True), planned, failed)
    assert mail is not None
    assert mail.subject.startswith("[stack] DRY RUN: Owner tag: owner unknown for 1 resource, tagging failed")
    assert mail.subject.endswith("...")  # cut at 99 characters
    assert len(mail.subject) < 100 and "DRY RUN: nothing was changed" in mail.body


def test_the_mail_names_the_configured_owner_tag_key() -> None:
    mail = report.mail(ctx(key="CreatedBy"), intent(unresolved=[INSTANCE]), NO_RESULT)
    assert mail is not None
    assert "(CreatedBy)" in mail.body and "Key=CreatedBy,Value=<owner>" in mail.body
    assert "existing CreatedBy tag" in mail.body and "Key=Owner" not in mail.body


def test_no_identity_is_named_as_such() -> None:
    mail = report.mail(ctx(), intent(event={**EVENT, "caller": None}, unresolved=[SNAPSHOT]), NO_RESULT)
    assert mail is not None and "caller: no identity in the event" in mail.body


def test_counts() -> None:
    planned = intent(tag=tagged(INSTANCE, VOLUME, ENI), unresolved=[SNAPSHOT], volumes_missing=[INSTANCE])
    done = {"tagged": {INSTANCE["id"]: "bob"}, "failed": [{"id": VOLUME["id"], "code": "X", "message": ""}]}
    assert report.counts(planned, done) == Counts(
        changed=1, skipped=0, failed=2, extra={"ResourcesTagged": 1, "OwnersUnresolved": 1}
    )


def test_counts_when_resumed() -> None:
    """Found with the intended value: written by the earlier attempt, counted now (once). Found
    with another value: someone set it meanwhile; kept and counted as skipped."""
    planned = intent(tag=tagged(INSTANCE, VOLUME, ENI))
    resumed = {
        "tagged": {ENI["id"]: "bob"},
        "failed": [],
        "found": {INSTANCE["id"]: "bob", VOLUME["id"]: "alice"},
    }
    assert report.counts(planned, resumed) == Counts(
        changed=2, skipped=1, failed=0, extra={"ResourcesTagged": 2, "OwnersUnresolved": 0}
    )


def test_dry_run_counts_nothing_changed() -> None:
    assert report.counts(intent(tag=tagged(INSTANCE)), NO_RESULT).changed == 0
