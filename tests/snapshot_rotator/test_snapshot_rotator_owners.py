"""Owners hear about their own backups (autopilot.routing), through the real handler and the
runner against moto: a failed backup, a snapshot that ended in error and a stale volume each
reach the owner the volume's (or its instance's) tags name - by address, or through the routing
map by team - in one digest per recipient, while the operators' digest lists every finding."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from autopilot.recorder import CallRecorder
from conftest import STACK, OwnerMail
from tests.snapshot_rotator.test_snapshot_rotator_handler import event, invoke
from tests.snapshot_rotator.test_snapshot_rotator_run import fail_create

pytestmark = pytest.mark.integration

Mailbox = Callable[[], list[dict[str, Any]]]
DAY = timedelta(days=1)


def _history(fleet: Any, volume: str, days: range, **kwargs: Any) -> list[str]:
    now = datetime.now(UTC)
    return [fleet.snapshot(volume, now - d * DAY, **kwargs) for d in days]


@pytest.fixture
def troubled(fleet: Any) -> dict[str, str]:
    """alice's volume whose backup fails; a payments instance (Owner=bob, Team=payments) whose
    data volume is stale; carol's failing volume, which routes nowhere (operators only); dave's
    volume with a backup that ended in error."""
    alice = fleet.volume({"Backup": "true", "Name": "alice-db", "Owner": "alice@example.com"})
    instance, (root, data) = fleet.instance({"Backup": "true", "Owner": "bob", "Team": "payments"})
    carol = fleet.volume({"Backup": "true", "Owner": "carol"})
    dave = fleet.volume({"Backup": "true", "Owner": "dave@example.com"})
    for volume in (alice, carol, dave, root):
        _history(fleet, volume, range(1, 3))
    _history(fleet, data, range(3, 5))  # newest completed backup 3 days old: stale
    error = _history(fleet, dave, range(0, 1), state="error")[0]
    fail_create("IncorrectState", {alice, carol})
    return {
        "alice": alice,
        "instance": instance,
        "data": data,
        "error": error,
        "carol": carol,
        "dave": dave,
    }


def test_each_owner_gets_one_digest_about_only_their_backups_and_the_operators_get_all(
    fleet: Any,
    rotator_env: dict[str, str],
    owner_mail: OwnerMail,
    troubled: dict[str, str],
    load_event: Any,
    mailbox: Mailbox,
) -> None:
    with CallRecorder() as calls:
        invoke(event(load_event, 1))
    (operators,) = mailbox()
    assert operators["subject"].startswith(f"[{STACK}] Backup FAILED for")
    for key in ("alice", "carol", "data", "error"):
        assert troubled[key] in operators["body"], key  # the operators' digest lists everyone's
    mails = {to: (subject, body) for to, subject, body in owner_mail()}
    assert sorted(mails) == ["alice@example.com", "dave@example.com", "payments-oncall@example.com"]
    subject, body = mails["alice@example.com"]
    assert subject == f"[{STACK}] Your backups: 1 backup failed"
    assert troubled["alice"] in body and "IncorrectState" in body
    assert troubled["carol"] not in body and troubled["data"] not in body
    subject, body = mails["payments-oncall@example.com"]  # bob's instance, by its Team tag
    assert subject == f"[{STACK}] Your backups: 1 backup overdue"
    assert troubled["data"] in body and "Stale" in body
    assert troubled["alice"] not in body and troubled["carol"] not in body
    subject, body = mails["dave@example.com"]
    assert subject == f"[{STACK}] Your backups: 1 backup ended in error"
    assert troubled["error"] in body and troubled["data"] not in body
    assert calls.count("ssm", "GetParameter") == 1 and calls.count("sesv2", "SendEmail") == 3


def test_a_dry_run_mails_only_the_operators_and_reads_no_routing_map(
    fleet: Any,
    rotator_env: dict[str, str],
    owner_mail: OwnerMail,
    troubled: dict[str, str],
    load_event: Any,
    mailbox: Mailbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DRY_RUN", "true")
    with CallRecorder() as calls:
        invoke(event(load_event, 1))
    assert len(mailbox()) == 1 and owner_mail() == []
    assert calls.count("ssm", "GetParameter") == 0


def test_routing_off_without_a_sender_changes_nothing_for_the_operators(
    fleet: Any,
    rotator_env: dict[str, str],
    troubled: dict[str, str],
    load_event: Any,
    mailbox: Mailbox,
) -> None:
    with CallRecorder() as calls:
        invoke(event(load_event, 1))
    (operators,) = mailbox()
    assert troubled["alice"] in operators["body"] and troubled["data"] in operators["body"]
    assert calls.count("ssm", "GetParameter") == 0 and calls.count("sesv2") == 0
