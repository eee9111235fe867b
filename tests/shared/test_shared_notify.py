"""The digest mails: subject rules, body layout, attributes, nothing sent when empty."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autopilot.notify import MAX_SUBJECT, Digest, Item, make_subject, plural, publish

# Every test is unit (pure rendering) except the one that publishes through moto's SNS.


@pytest.mark.unit
def test_subject_starts_with_the_stack_and_folds_to_ascii() -> None:
    assert make_subject("ops", "DOWN: https://example.com — expected text missing") == (
        "[ops] DOWN: https://example.com - expected text missing"
    )
    assert make_subject("ops", "2 instances stopped", dry_run=True) == "[ops] DRY RUN: 2 instances stopped"


@pytest.mark.unit
@given(stack=st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,60}", fullmatch=True), text=st.text(max_size=400))
def test_subject_is_always_one_printable_ascii_line_of_at_most_99_chars(stack: str, text: str) -> None:
    subject = make_subject(stack, text)
    assert subject.startswith(f"[{stack}]")
    assert len(subject) <= MAX_SUBJECT < 100
    assert subject.isascii() and subject.isprintable() and "\n" not in subject


@pytest.mark.unit
def test_plural() -> None:
    assert plural(1, "instance") == "1 instance" and plural(3, "instance") == "3 instances"
    assert plural(2, "policy", "policies") == "2 policies"


@pytest.mark.unit
def test_body_has_sections_items_links_advice_and_footer() -> None:
    digest = Digest("idle_stopper", "ops", "eu-west-1", dry_run=True)
    digest.section("Stopped (1)", [Item("i-1 web (Owner: ann)", ["idle 12 of 12 h"], "https://console/i-1")])
    digest.section("Nothing here")
    digest.advice = ["Tag AutoStop=false to keep an instance running."]
    body = digest.body("1 instance stopped.")
    assert body.splitlines()[0] == "1 instance stopped."
    assert "DRY RUN: nothing was changed" in body
    assert "- i-1 web (Owner: ann)\n  idle 12 of 12 h\n  https://console/i-1" in body
    assert "Nothing here" not in body  # empty sections are left out
    assert "What you can do" in body and "AutoStop=false" in body
    assert "stack ops, automation idle_stopper, region eu-west-1" in body


@pytest.mark.unit
def test_long_sections_are_cut_with_a_count() -> None:
    digest = Digest("x", "ops", "eu-west-1")
    digest.section("Many", [Item(f"i-{n}") for n in range(120)])
    body = digest.body("s")
    assert "- i-49" in body and "- i-50" not in body and "... and 70 more" in body


@pytest.mark.unit
def test_huge_bodies_stay_under_the_sns_limit() -> None:
    digest = Digest("x", "ops", "eu-west-1")
    for n in range(200):
        digest.section(f"Section {n}", [Item("y" * 2000) for _ in range(5)])
    assert len(digest.body("s").encode()) < 256 * 1024


@pytest.mark.unit
def test_empty_digest_renders_no_mail() -> None:
    digest = Digest("x", "ops", "eu-west-1")
    digest.section("Nothing")
    assert digest.mail("subject", "summary", "info") is None


@pytest.mark.integration
def test_the_mail_is_publishable_with_subject_body_and_attributes(
    topic_arn: str, mailbox: Callable[[], list[dict[str, Any]]]
) -> None:
    digest = Digest("snapshot_rotator", "ops", "eu-west-1")
    digest.section("Failed (1)", [Item("vol-1")])
    mail = digest.mail("1 backup failed", "Summary.", "critical")
    assert mail is not None and mail.subject == "[ops] 1 backup failed"
    publish(topic_arn, mail.subject, mail.body, "snapshot_rotator", "critical")
    (sent,) = mailbox()
    assert sent["subject"] == "[ops] 1 backup failed"
    assert sent["attributes"] == {"automation": "snapshot_rotator", "severity": "critical"}
    assert sent["body"].startswith("Summary.")


@pytest.mark.unit
def test_unknown_severity_is_refused() -> None:
    digest = Digest("x", "ops", "eu-west-1")
    digest.section("s", [Item("a")])
    with pytest.raises(ValueError, match="severity"):
        digest.mail("s", "s", "urgent")  # type: ignore[arg-type]
