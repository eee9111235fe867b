"""The failure sequences the runner's outbox must survive, on the real handler and moto:

(a) a run killed between two state writes: the retry (or the next run) finishes the recorded
    intent and every DOWN is mailed exactly once - on the old code the sites written before
    the kill stayed DOWN in the table and were never mailed;
(b) SNS refusing the mail for one run: the next run sends it, once, and does not mail again;
(c) 500 sites going DOWN at once: one outbox entry (well under DynamoDB's 400 KB item limit),
    one digest, every state written.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from autopilot import aws, runner
from autopilot.outbox import Entry, Outbox, OutboxError
from autopilot.recorder import CallRecorder
from conftest import REGION

pytestmark = pytest.mark.integration
Mailbox = Callable[[], list[dict[str, Any]]]
Invoke = Callable[..., dict[str, Any]]


def unfinished() -> list[Entry]:
    return list(Outbox(os.environ["OUTBOX_TABLE"], "website_health_check").unfinished())


def versions() -> dict[str, int]:
    items = boto3.client("dynamodb", region_name=REGION).scan(TableName="health-state")["Items"]
    return {i["url"]["S"]: int(i["version"]["N"]) for i in items}


@pytest.fixture
def three_down(
    web: ThreadingHTTPServer, sites: Callable[[str], None], monkeypatch: pytest.MonkeyPatch, health_env: Any
) -> list[str]:
    """Three sites answering 503, reported DOWN at the first failed check."""
    monkeypatch.setenv("FAILURES_BEFORE_DOWN", "1")
    web.healthy = False  # type: ignore[attr-defined]
    down = [f"http://127.0.0.1:{web.server_port}/toggle?{n}" for n in (1, 2, 3)]
    sites(", ".join(down))
    return down


@pytest.mark.parametrize("retry", ["the same event again", "the next scheduled run"])
def test_a_run_killed_after_its_first_state_write_is_finished_and_mailed_once(
    retry: str,
    three_down: list[str],
    invoke: Invoke,
    scheduled: Callable[[], dict[str, Any]],
    kill_at: Callable[[str, int], Callable[[], None]],
    states: Callable[[], dict[str, str]],
    mailbox: Mailbox,
) -> None:
    event = scheduled()
    revive = kill_at("PutItem", 2)  # the first site's DOWN is written, then the function dies
    with pytest.raises(RuntimeError, match="killed"):
        invoke(event)
    assert states() == {three_down[0]: "DOWN"} and mailbox() == []
    (entry,) = unfinished()
    assert entry.status == "acting"  # the intent was recorded before the first write
    assert [w["url"] for w in entry.intent["writes"]] == three_down

    revive()
    result = invoke(event if retry == "the same event again" else scheduled())
    assert states() == dict.fromkeys(three_down, "DOWN")
    assert versions() == dict.fromkeys(three_down, 1)  # each state written exactly once
    (mail,) = mailbox()
    assert mail["subject"] == "[ops-autopilot-test] 3 sites changed state: 3 DOWN"
    assert all(mail["body"].count(url) == 1 for url in three_down), mail["body"]
    assert result["Changed"] == 3  # the finished run's work, counted by the run that finished it
    assert unfinished() == []

    invoke()  # the sites are still down: nothing new to say
    assert len(mailbox()) == 1


def test_a_mail_sns_refused_is_sent_by_the_next_run_once(
    three_down: list[str],
    invoke: Invoke,
    states: Callable[[], dict[str, str]],
    mailbox: Mailbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_publish = runner.publish
    refused: list[str] = []

    def sns_down_once(*args: Any, **kwargs: Any) -> str:
        if not refused:
            refused.append(args[1])
            raise ClientError(
                {"Error": {"Code": "KMSDisabledException", "Message": "key disabled"}}, "Publish"
            )
        return real_publish(*args, **kwargs)

    monkeypatch.setattr(runner, "publish", sns_down_once)
    with pytest.raises(OutboxError):  # the invocation fails: Errors alarm ...
        invoke()
    assert states() == dict.fromkeys(three_down, "DOWN") and mailbox() == []
    assert [e.status for e in unfinished()] == ["acted"]  # ... and the mail is kept
    invoke()  # the next scheduled run: a new event, the sites still down
    (mail,) = mailbox()
    assert mail["subject"] == refused[0] == "[ops-autopilot-test] 3 sites changed state: 3 DOWN"
    assert unfinished() == []
    invoke()
    assert len(mailbox()) == 1
    assert versions() == dict.fromkeys(three_down, 1)


@pytest.mark.parametrize("killed", [False, True], ids=["one run", "killed after writing the states"])
def test_500_sites_down_at_once_are_one_outbox_entry_and_one_digest_naming_all_of_them(
    killed: bool,
    health_env: dict[str, str],
    invoke: Invoke,
    sites: Callable[[str], None],
    states: Callable[[], dict[str, str]],
    mailbox: Mailbox,
    calls: CallRecorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """500 sites refusing at once (port 9: nothing listens) make one digest that names every
    one of them, also when the first invocation dies after its 500 state writes and before the
    mail: the next one finds the recorded intent, counts the writes as its own and mails once."""
    monkeypatch.setenv("FAILURES_BEFORE_DOWN", "1")
    many = [f"http://127.0.0.1:9/site-{n:03d}/health" for n in range(500)]
    sites(", ".join(many))
    if killed:

        def die(service: str, op: str, params: dict[str, Any]) -> None:
            # The entry's "acted" update (the result and the mail): the calls before it happened.
            if service == "dynamodb" and op == "UpdateItem" and _outbox(params.get("Key")):
                aws.call_hooks.remove(die)
                raise RuntimeError("killed after the state writes, before the mail was recorded")

        # Appended to the hooks list itself (not a patched copy: the recorder fixture removes
        # its own hook from the list it joined, and a restored copy would keep it for the next test).
        aws.call_hooks.append(die)
        try:
            with pytest.raises(RuntimeError, match="killed after the state writes"):
                invoke()
        finally:
            if die in aws.call_hooks:
                aws.call_hooks.remove(die)
        assert states() == dict.fromkeys(many, "DOWN") and mailbox() == []
        assert [e.status for e in unfinished()] == ["acting"]
    result = invoke()
    if not killed:
        assert (result["Checked"], result["Changed"], result.get("SitesDown", 0)) == (500, 500, 500)
    assert states() == dict.fromkeys(many, "DOWN")
    recorded = [p["Item"]["data"]["B"] for p in calls.of("dynamodb", "PutItem") if _outbox(p.get("Item"))]
    acted = [
        p["ExpressionAttributeValues"][":data"]["B"]
        for p in calls.of("dynamodb", "UpdateItem")
        if _outbox(p["Key"]) and ":data" in p.get("ExpressionAttributeValues", {})
    ]
    assert len(recorded) == 1  # one entry for the whole run, however many invocations finish it
    assert len(zlib.decompress(acted[-1])) > 100_000  # the intent, the result and the mail ...
    assert max(len(recorded[0]), len(acted[-1])) < 100_000  # ... compressed: far under 400 KB
    (mail,) = mailbox()
    assert mail["subject"] == "[ops-autopilot-test] 500 sites changed state: 500 DOWN"
    assert "DOWN (500)" in mail["body"] and "more" not in mail["body"]
    assert all(f"- {url} - connection refused" in mail["body"] for url in many)
    assert calls.count("sns", "Publish") == 1 and unfinished() == []


def _outbox(key: dict[str, Any] | None) -> bool:
    return str((key or {}).get("pk", {}).get("S", "")).startswith("outbox#")
