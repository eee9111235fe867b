"""autopilot.runner (safety rule 4: never twice, never lost) where `make mutate`
(tools/mutate.py) found behaviour no test pinned down: each test names the mutants it kills
(mutmut's names; docs/mutation-survivors.md lists the survivors explained instead). A toy
automation against moto's DynamoDB, as in test_runner.py."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from autopilot import aws, runner
from autopilot.config import CommonConfig, ConfigError
from autopilot.events import MAX_EVENT_AGE, describe, parse_scheduled
from autopilot.outbox import Entry, Mail, Outbox, OutboxError
from autopilot.runner import Automation, Context, Counts, Plan, Run
from conftest import REGION, STACK, FakeContext

pytestmark = pytest.mark.integration

CONFIG = {"setting": "the automation's own"}


class Log:
    """A logger that keeps what it is told: (message, extra) per line."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def info(self, message: str, extra: Mapping[str, Any] | None = None) -> None:
        self.lines.append((message, dict(extra or {})))

    warning = error = exception = info


class Metrics:
    def add_metric(self, **_: Any) -> None:
        pass


class Toy:
    """Plans one piece of work with one decision, and records what plan and act were given."""

    def __init__(self) -> None:
        self.runs: list[Run[Any, Any]] = []
        self.acts: list[tuple[Any, bool]] = []

    def plan(self, run: Run[Any, Any]) -> Plan:
        self.runs.append(run)
        return Plan({"volumes": ["vol-1"]}, Counts(checked=1), [{"resource": "vol-1", "outcome": "tag"}])

    def act(self, ctx: Context[Any], intent: Mapping[str, Any]) -> dict[str, Any]:
        self.acts.append((ctx.config, ctx.resumed))
        return {"tagged": list(intent["volumes"])}

    def automation(self) -> Automation[Any, Any]:
        return Automation(
            "toy", parse_scheduled, lambda: CONFIG, self.plan, self.act, lambda *_: None, lambda *_: Counts()
        )


def _event(load_event: Any) -> dict[str, Any]:
    event: dict[str, Any] = load_event("idle_stopper/eventbridge.scheduled")
    event["id"] = "00000000-0000-0000-0000-000000000042"
    return event


def _invoke(toy: Toy, event: dict[str, Any], log: Log, request: str = "req-7") -> dict[str, Any]:
    context = FakeContext()
    context.aws_request_id = request  # type: ignore[misc]
    return runner.handle(toy.automation(), event, context, log, Metrics())


def test_the_claim_is_written_in_the_automations_own_partition_with_its_expiry(
    stack_env: dict[str, str], load_event: Any
) -> None:
    # x__claim_store__mutmut_14 (the claim's partition not claim#<automation>: in AWS the role's
    # dynamodb:LeadingKeys condition refuses the write, and every run fails), _20, _27, _28
    # (the TTL attribute not "expiration": claims would never expire).
    _invoke(Toy(), _event(load_event), Log())
    items = boto3.client("dynamodb", region_name=REGION).scan(TableName=stack_env["OUTBOX_TABLE"])["Items"]
    assert [item["pk"]["S"] for item in items] == ["claim#toy"]  # the outbox entry is gone: done
    assert "expiration" in items[0]


def test_the_claim_store_uses_the_layers_client_and_is_made_once_per_client(
    stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # x__claim_store__mutmut_1, _16, _22 (a client of its own, without the layer's retry
    # configuration), _5, _6, _29 (a new store at every call), _7, _8 (no store at the first
    # call), _9 (a new store while the client is the same).
    monkeypatch.setattr(runner, "_stores", {})
    table = stack_env["OUTBOX_TABLE"]
    store = runner._claim_store(table, "toy")
    assert store.client is aws.client("dynamodb")
    assert runner._claim_store(table, "toy") is store
    aws.reset_clients()  # a new client (the next test's credentials) gets a store of its own
    fresh = runner._claim_store(table, "toy")
    assert fresh is not store and fresh.client is aws.client("dynamodb")


def test_the_run_is_named_after_its_automation_and_request_and_logs_each_decision(
    stack_env: dict[str, str], load_event: Any
) -> None:
    # x__work__mutmut_17 (the run's automation None), _23, _30, _31 (its id not the request's:
    # the outbox entry's key names the run), _34, _35, _37, _38, _39 (the decision's log line
    # lost), _107, _108, _113, _114, _116, _117, _118 (the "run finished" line and status).
    toy, log = Toy(), Log()
    result = _invoke(toy, _event(load_event), log, request="req-7")
    (run,) = toy.runs
    assert (run.automation, run.run_id, run.config) == ("toy", "req-7", CONFIG)
    assert ("decision", {"resource": "vol-1", "outcome": "tag"}) in log.lines
    assert result["status"] == "done" and log.lines[-1] == ("run finished", result)


def test_an_earlier_runs_work_is_finished_with_the_automations_config(
    stack_env: dict[str, str], load_event: Any
) -> None:
    # x__work__mutmut_3 (the unfinished work of a run that died carried out with no config).
    Outbox(stack_env["OUTBOX_TABLE"], "toy").record("dead-run", {"volumes": ["vol-0"]}, lease_until=0.0)
    toy = Toy()
    _invoke(toy, _event(load_event), Log())
    assert toy.acts == [(CONFIG, True), (CONFIG, False)]  # the dead run's intent first, then this run's


def test_the_given_up_mail_says_what_was_half_done_and_the_last_error(stack_env: dict[str, str]) -> None:
    # x__given_up__mutmut_3, _6, _8 (the intent's layout), _16, _17, _18, _19, _20, _21, _22, _23,
    # _24, _25, _26 (the body's lines, the error code and message, at most 500 characters of it),
    # _28 (the stack in the subject).
    entry = Entry(
        "toy", "2024-05-14T09:17:00Z#r1#abcd1234", "acting", {"volumes": ["vol-1", "vol-2"]}, attempts=3
    )
    err = ClientError({"Error": {"Code": "AccessDenied", "Message": "x" * 600}}, "CreateTags")
    mail = runner._given_up("toy", CommonConfig.from_env(), entry, err)
    assert (mail.subject, mail.severity) == (f"[{STACK}] toy: could not finish a run, given up", "critical")
    message = str(err)[:500]
    assert mail.body == "\n".join(
        [
            "A run of toy recorded what it was about to do, then could not finish it: 3 invocations "
            "tried and failed. It is given up now; check the resources below and finish or undo the "
            "work by hand.",
            "",
            f"Error of the last attempt: AccessDenied: {message}",
            "Outbox entry: 2024-05-14T09:17:00Z#r1#abcd1234",
            "",
            "What the run was about to do (its recorded intent):",
            '{\n "volumes": [\n  "vol-1",\n  "vol-2"\n ]\n}',
        ]
    )


def test_a_given_up_intent_is_cut_only_past_its_limit_and_says_so(stack_env: dict[str, str]) -> None:
    # x__given_up__mutmut_9 (cut at exactly the limit), _10, _11, _12, _13 (the cut and its note).
    common = CommonConfig.from_env()
    empty = len(json.dumps({"x": ""}, indent=1))
    at_limit = {"x": "a" * (runner.GIVEN_UP_INTENT_CHARS - empty)}
    body = runner._given_up("toy", common, Entry("toy", "sk", "acting", at_limit), RuntimeError()).body
    assert body.endswith(json.dumps(at_limit, indent=1))
    over = {"x": "a" * (runner.GIVEN_UP_INTENT_CHARS - empty + 1)}
    body = runner._given_up("toy", common, Entry("toy", "sk", "acting", over), RuntimeError()).body
    cut = json.dumps(over, indent=1)[: runner.GIVEN_UP_INTENT_CHARS]
    assert body.endswith(cut + "\n... (cut; the whole intent is in the function's log)")


class Watcher(Toy):
    """Looks at the outbox while acting: what a concurrent invocation would find there."""

    def __init__(self, table: str) -> None:
        super().__init__()
        self.table = table
        self.seen: list[tuple[list[str], list[str]]] = []

    def act(self, ctx: Context[Any], intent: Mapping[str, Any]) -> dict[str, Any]:
        items = boto3.client("dynamodb", region_name=REGION).scan(TableName=self.table)["Items"]
        keys = [item["sk"]["S"] for item in items if item["pk"]["S"] == "outbox#toy"]
        takeable = [e.sk for e in Outbox(self.table, "toy").unfinished()]
        self.seen.append((keys, takeable))
        return super().act(ctx, intent)


def test_while_a_run_acts_its_entry_is_leased_to_it_and_named_after_its_request(
    stack_env: dict[str, str], load_event: Any
) -> None:
    # x__lease__mutmut_1 (time.time() - the time left: the lease already over while acting, so a
    # concurrent invocation would take the entry over and act a second time), x__work__mutmut_45
    # (outbox.record(None, ...): the entry's key no longer names the run).
    watcher = Watcher(stack_env["OUTBOX_TABLE"])
    _invoke(watcher, _event(load_event), Log(), request="req-7")
    ((keys, takeable),) = watcher.seen
    assert len(keys) == 1 and keys[0].split("#")[1] == "req-7"
    assert takeable == []  # leased to this invocation: nobody else may take it


def test_a_mail_sns_refused_is_counted_once(
    stack_env: dict[str, str], load_event: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # x__work__mutmut_91, _92 (held -= 1, held += 2: the count of held mails in the error).
    class Mailing(Toy):
        def automation(self) -> Automation[Any, Any]:
            automation = super().automation()
            mail = Mail("[s] subject", "body", "info")
            return Automation(automation.name, automation.parse, automation.config, automation.plan,
                              automation.act, lambda *_: mail, automation.counts)  # fmt: skip

    def refused(*_: Any, **__: Any) -> str:
        raise ClientError({"Error": {"Code": "KMSDisabledException", "Message": "no"}}, "Publish")

    monkeypatch.setattr(runner, "publish", refused)
    with pytest.raises(OutboxError, match=r"^1 mail\(s\) not accepted by SNS"):
        _invoke(Mailing(), _event(load_event), Log())


# ---- the open survivors of the recorded run (docs/mutation-survivors.md, runner.py) -----------

NOW = datetime(2024, 5, 14, 9, 17, tzinfo=UTC)  # a fixed clock, for the scheduled-time checks
NOT_ACCEPTED = (
    "mail(s) not accepted by SNS or SES; they stay in the outbox and are sent by the retry or the next run"
)


class Recording:
    """Metrics that keep every (name, value) they are given, in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def add_metric(self, name: str, unit: Any, value: Any) -> None:
        self.seen.append((name, value))


def _standard(failed: Any = 0) -> list[tuple[str, Any]]:
    """The standard counts as sent: a zero is not (a metric is billed per hour sent)."""
    return [("Failed", failed)] if failed else []


class Rich(Toy):
    """Toy with a mail per run and counts per intent; an intent with "broken" fails when resumed.
    Keeps every context act got, and the intents report and counts got."""

    def __init__(self, max_event_age: timedelta = MAX_EVENT_AGE) -> None:
        super().__init__()
        self.max_event_age = max_event_age
        self.contexts: list[Context[Any]] = []
        self.reported: list[dict[str, Any]] = []
        self.counted: list[dict[str, Any]] = []

    def act(self, ctx: Context[Any], intent: Mapping[str, Any]) -> dict[str, Any]:
        self.contexts.append(ctx)
        if ctx.resumed and intent.get("broken"):
            raise RuntimeError("permanently broken")
        return super().act(ctx, intent)

    def report(self, ctx: Context[Any], intent: Mapping[str, Any], result: Mapping[str, Any]) -> Mail:
        self.reported.append(dict(intent))
        return Mail(f"[{STACK}] toy: {','.join(intent['volumes'])}", "body", "info")

    def counts(self, intent: Mapping[str, Any], result: Mapping[str, Any]) -> Counts:
        self.counted.append(dict(intent))
        return Counts(changed=len(intent["volumes"]))

    def automation(self) -> Automation[Any, Any]:
        return Automation(
            "toy", parse_scheduled, lambda: CONFIG, self.plan, self.act, self.report, self.counts,
            max_event_age=self.max_event_age,
        )  # fmt: skip


def _dead(
    table: str, run_id: str, intent: dict[str, Any], attempts: int = 0, mail: Mail | None = None
) -> Entry:
    """An earlier run's entry whose lease ran out: still acting, or acted with ``mail`` held."""
    outbox = Outbox(table, "toy")
    entry = outbox.record(run_id, intent, lease_until=0.0)
    if mail is not None:
        outbox.acted(entry, {"tagged": intent["volumes"]}, mail)
    if attempts:
        boto3.client("dynamodb", region_name=REGION).update_item(
            TableName=table, Key=entry.key, UpdateExpression="SET attempts = :n",
            ExpressionAttributeValues={":n": {"N": str(attempts)}},
        )  # fmt: skip
    return entry


def _handle(toy: Toy, event: dict[str, Any], log: Log, metrics: Any, context: Any = None) -> dict[str, Any]:
    if context is None:
        context = FakeContext()
        context.aws_request_id = "req-7"  # type: ignore[misc]
    return runner.handle(toy.automation(), event, context, log, metrics)


def _refused(*_: Any, **__: Any) -> str:
    raise ClientError({"Error": {"Code": "KMSDisabledException", "Message": "no"}}, "Publish")


def test_a_resumed_run_gets_the_automations_context_and_its_intent_is_reported(
    stack_env: dict[str, str], load_event: Any
) -> None:
    # x__finish_earlier__mutmut_28, _29, _31, _32 (the resumed context's automation, config, now,
    # deadline lost), _53 (report not given the intent); x_handle__mutmut_64 (the deadline not
    # the invocation's: Lambda's time left, here 300 s).
    dead = {"volumes": ["vol-0"]}
    _dead(stack_env["OUTBOX_TABLE"], "dead", dead)
    toy = Rich()
    _handle(toy, _event(load_event), Log(), Recording())
    resumed, fresh = toy.contexts
    assert (resumed.automation, resumed.config, resumed.resumed) == ("toy", CONFIG, True)
    assert isinstance(resumed.now, datetime) and abs(resumed.now - runner.clock()) < timedelta(minutes=1)
    assert resumed.deadline.remaining_at_start == 300.0 and fresh.deadline.remaining_at_start == 300.0
    assert toy.reported == [dead, {"volumes": ["vol-1"]}]


def test_the_counts_of_every_finished_entry_add_up_with_the_runs_own(
    stack_env: dict[str, str], load_event: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # x__work__mutmut_41 (the earlier entries' counts replaced by the plan's), x__finish_earlier__mutmut_96
    # (each entry's counts replace the ones before), _98 (counts not given the intent), _13 (an entry
    # another invocation took first stops the others from being finished: break for continue).
    table = stack_env["OUTBOX_TABLE"]
    taken = _dead(table, "dead-0", {"volumes": ["vol-x"]})
    _dead(table, "dead-a", {"volumes": ["vol-a"]})
    _dead(table, "dead-b", {"volumes": ["vol-b", "vol-c"]})

    class Raced(Outbox):
        def take(self, entry: Entry, lease_until: float) -> bool:
            return entry.sk != taken.sk and super().take(entry, lease_until)

    monkeypatch.setattr(runner, "Outbox", Raced)
    toy, metrics = Rich(), Recording()
    result = _handle(toy, _event(load_event), Log(), metrics)
    assert toy.counted == [{"volumes": ["vol-a"]}, {"volumes": ["vol-b", "vol-c"]}, {"volumes": ["vol-1"]}]
    assert (result["Checked"], result["Changed"], result["Failed"], result["mails_held"]) == (1, 4, 0, 0)
    assert metrics.seen == [("Checked", 1), ("Changed", 4)]  # no zero sent; Checked once


def test_work_given_up_is_counted_once_logged_and_mailed_with_its_error(
    stack_env: dict[str, str], load_event: Any, mailbox: Any
) -> None:
    # x__finish_earlier__mutmut_58 (the failure replaces the counts before it), _61 (counted twice),
    # _17, _18, _20 - _26 (the "finishing the work" warning: its entry and attempt), _63, _64,
    # _66 - _70 (the "giving up" error line and its entry), _72 (the mail names no automation),
    # _75 (the mail's error not the last attempt's).
    table = stack_env["OUTBOX_TABLE"]
    fine = _dead(table, "dead-a", {"volumes": ["vol-a"]})
    broken = _dead(table, "dead-b", {"volumes": ["vol-b"], "broken": True}, attempts=2)
    log = Log()
    result = _handle(Rich(), _event(load_event), log, Recording())
    assert (result["Changed"], result["Failed"]) == (2, 1)
    assert [line for line in log.lines if line[0] != "mail sent"][:3] == [
        ("finishing the work of a run that did not complete", {"entry": fine.sk, "attempt": 1}),
        ("finishing the work of a run that did not complete", {"entry": broken.sk, "attempt": 3}),
        ("giving up an earlier run's work", {"entry": broken.sk}),
    ]
    (given_up,) = [m for m in mailbox() if m["attributes"]["severity"] == "critical"]
    assert given_up["subject"] == f"[{STACK}] toy: could not finish a run, given up"
    assert "\nError of the last attempt: RuntimeError: permanently broken\n" in given_up["body"]
    assert given_up["body"].startswith("A run of toy recorded what it was about to do")


def test_every_blocked_entry_is_tried_logged_and_counted_in_the_error(
    stack_env: dict[str, str], load_event: Any
) -> None:
    # x__finish_earlier__mutmut_92, _93, _94 (the count of blocked entries in the error), _95
    # (the second entry not tried: break for continue), _83, _84, _86 - _90 (the "could not
    # finish" error line and its entry); x_handle__mutmut_108 (a raising run counted as 2 failures).
    table = stack_env["OUTBOX_TABLE"]
    first = _dead(table, "dead-a", {"volumes": ["vol-a"], "broken": True})
    second = _dead(table, "dead-b", {"volumes": ["vol-b"], "broken": True})
    toy, log, metrics = Rich(), Log(), Recording()
    message = (
        "2 earlier run(s) could not be finished; no new work starts until they are "
        "(or are given up after 3 attempts, with a mail)"
    )
    with pytest.raises(OutboxError) as raised:
        _handle(toy, _event(load_event), log, metrics)
    assert str(raised.value) == message
    assert [c.resumed for c in toy.contexts] == [True, True] and toy.runs == []
    assert [line for line in log.lines if line[0].startswith("could not")] == [
        ("could not finish an earlier run's work", {"entry": first.sk}),
        ("could not finish an earlier run's work", {"entry": second.sk}),
    ]
    assert metrics.seen == _standard(failed=1)


def test_every_mail_sns_refused_is_counted_and_logged_with_its_entry_and_code(
    stack_env: dict[str, str], load_event: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # x__finish_earlier__mutmut_113, _114, _115 and x__work__mutmut_90 (the count of held mails:
    # two earlier ones and this run's), x__raise_if_held__mutmut_1, _2, _3 (the error's text),
    # x__send__mutmut_14, _15, _17 - _26 (the "mail not sent" error line: subject, code, entry).
    table = stack_env["OUTBOX_TABLE"]
    held = [
        _dead(table, f"dead-{n}", {"volumes": [f"vol-{n}"]}, mail=Mail(f"[{STACK}] held {n}", "b", "info"))
        for n in ("a", "b")
    ]
    monkeypatch.setattr(runner, "publish", _refused)
    log = Log()
    with pytest.raises(OutboxError) as raised:
        _handle(Rich(), _event(load_event), log, Recording())
    assert str(raised.value) == f"3 {NOT_ACCEPTED}"
    failures = [line for line in log.lines if line[0].startswith("mail not sent")]
    (new,) = [e for e in Outbox(table, "toy").unfinished() if e.sk not in {h.sk for h in held}]
    assert failures == [
        ("mail not sent; kept in the outbox for the retry or the next run",
         {"subject": subject, "code": "KMSDisabledException", "entry": sk})
        for subject, sk in ((f"[{STACK}] held a", held[0].sk), (f"[{STACK}] held b", held[1].sk),
                            (f"[{STACK}] toy: vol-1", new.sk))
    ]  # fmt: skip


def test_a_sent_mail_is_logged_with_its_subject_and_message_id(
    stack_env: dict[str, str], load_event: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # x__send__mutmut_29, _30, _32 - _38 (the "mail sent" line, its subject and SNS's message id).
    sent: list[tuple[Any, ...]] = []

    def publish(*args: Any) -> str:
        sent.append(args)
        return "message-1"

    monkeypatch.setattr(runner, "publish", publish)
    log = Log()
    _handle(Rich(), _event(load_event), log, Recording())
    assert sent == [(stack_env["TOPIC_ARN"], f"[{STACK}] toy: vol-1", "body", "toy", "info")]
    assert ("mail sent", {"subject": f"[{STACK}] toy: vol-1", "message_id": "message-1"}) in log.lines


class _NoRequestId:
    """A Lambda context without an aws_request_id (as a local invocation may pass)."""

    function_name = FakeContext.function_name
    invoked_function_arn = FakeContext.invoked_function_arn

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


MISSING = object()


@pytest.mark.parametrize(("request_id", "run_id"), [("req-9", "req-9"), (MISSING, "local"), ("", "local"),
                                                    (5, "local"), (None, "local")])  # fmt: skip
def test_the_run_id_is_the_request_id_or_local(
    stack_env: dict[str, str], load_event: Any, request_id: Any, run_id: str
) -> None:
    # x__run_id__mutmut_1, _2, _7, _8, _9 (the request id lost), _6 (a context without one
    # raises), _10 (an empty or non-string id used), _11, _12 (the fallback's name).
    context: Any = _NoRequestId()
    if request_id is not MISSING:
        context.aws_request_id = request_id
    toy = Rich()
    _handle(toy, _event(load_event), Log(), Recording(), context)
    assert [run.run_id for run in toy.runs] == [run_id]


def test_an_event_with_a_blank_id_is_refused_naming_why(stack_env: dict[str, str], load_event: Any) -> None:
    # x_handle__mutmut_12 (a blank id let through), _17 - _20 (the reason), _26 (the event not
    # described in the log line).
    event = _event(load_event)
    event["id"] = "   "
    log, metrics = Log(), Recording()
    reason = "event has no id (every EventBridge event has one; it keys the run's claim)"
    assert _handle(Toy(), event, log, metrics) == {"status": "ignored", "reason": reason}
    assert log.lines == [("ignored malformed event", {"reason": reason, "event": describe(event)})]
    assert metrics.seen == [*_standard(), ("MalformedEvents", 1)]


def test_a_broken_deployment_raises_and_reports_one_failure(
    stack_env: dict[str, str], load_event: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # x_handle__mutmut_39 - _44 (the Failed=1 metrics of a config error).
    monkeypatch.delenv("OUTBOX_TABLE")
    metrics = Recording()
    with pytest.raises(ConfigError, match="OUTBOX_TABLE"):
        _handle(Toy(), _event(load_event), Log(), metrics)
    assert metrics.seen == _standard(failed=1)


def test_a_scheduled_event_its_schedule_never_named_is_refused_as_stale(
    stack_env: dict[str, str], load_event: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # x__require_scheduled_time__mutmut_3, _4 (never refused), _13 - _17, _19 - _21 (the reason:
    # the clock's time, the schedule, the minutes), x_handle__mutmut_45, _46 (never refused),
    # _51 - _54 (its zero metrics), _55 - _62 (reject's arguments).
    monkeypatch.setattr(runner, "clock", lambda: NOW)
    monkeypatch.setenv("SCHEDULE", "cron(0 3 * * ? *)")
    event = _event(load_event)
    log, metrics, toy = Log(), Recording(), Rich(max_event_age=timedelta(minutes=90, seconds=30))
    reason = (
        "scheduled event at 2024-05-14T09:17:00+00:00 by the clock, but the schedule cron(0 3 * * ? *) "
        "named no time in the 90 minutes before: not a delivery of this function's rule"
    )
    assert _handle(toy, event, log, metrics) == {"status": "ignored", "reason": reason}
    assert log.lines == [("ignored stale event", {"reason": reason, "event": describe(event)})]
    assert metrics.seen == [*_standard(), ("StaleEvents", 1)] and toy.runs == []


@pytest.mark.parametrize(
    ("schedule", "why"),
    [
        ("cron(0 9 * * ? *)", "17 minutes before the clock: within the event's age, beyond the 5 ahead"),
        ("cron(18 9 * * ? *)", "a minute after the clock: EventBridge's clock may run a little ahead"),
        (None, "no schedule: nothing to check"),
    ],
)
def test_a_scheduled_event_its_schedule_named_is_run(
    stack_env: dict[str, str],
    load_event: Any,
    monkeypatch: pytest.MonkeyPatch,
    schedule: str | None,
    why: str,
) -> None:
    # x__require_scheduled_time__mutmut_10 (the age checked as MAX_EVENT_AHEAD), _11 (no time
    # ahead allowed), _2 (no schedule: raises).
    monkeypatch.setattr(runner, "clock", lambda: NOW)
    if schedule is None:
        monkeypatch.delenv("SCHEDULE")
    else:
        monkeypatch.setenv("SCHEDULE", schedule)
    assert _handle(Rich(), _event(load_event), Log(), Recording())["status"] == "done", why


def test_an_event_older_than_the_automations_own_limit_is_refused(
    stack_env: dict[str, str], load_event: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # x_handle__mutmut_11 (the automation's max_event_age not given to accept: the default's 2h15 used).
    event = _event(load_event)
    monkeypatch.setattr(runner, "clock", lambda: datetime.now(UTC) + timedelta(minutes=30))
    toy = Rich(max_event_age=timedelta(minutes=10))
    assert _handle(toy, event, Log(), Recording())["status"] == "ignored" and toy.runs == []


def test_a_delivery_while_the_first_is_running_does_nothing_and_says_so(
    stack_env: dict[str, str], load_event: Any
) -> None:
    # x_handle__mutmut_84 - _102 (the "being handled by another invocation" line, its id, the zero
    # metrics, the status), _81 (the claim's in-progress expiry not the invocation's deadline),
    # _77 (the claim kept an hour, not two days).
    event = _event(load_event)
    table = stack_env["OUTBOX_TABLE"]
    second: dict[str, Any] = {}
    claims: list[dict[str, Any]] = []

    class Concurrent(Rich):
        def plan(self, run: Run[Any, Any]) -> Plan:
            items = boto3.client("dynamodb", region_name=REGION).scan(TableName=table)["Items"]
            claims.extend(item for item in items if item["pk"]["S"] == "claim#toy")
            log, metrics = Log(), Recording()

            def deliver() -> None:
                result = _handle(Rich(), event, log, metrics)
                second.update(result=result, log=log.lines, metrics=metrics.seen)

            thread = threading.Thread(target=deliver)
            thread.start()
            thread.join()
            return super().plan(run)

    started = time.time()
    assert _handle(Concurrent(), event, Log(), Recording())["status"] == "done"
    assert second == {
        "result": {"status": "in-progress-elsewhere"},
        "log": [
            ("duplicate delivery: this event is being handled by another invocation", {"id": event["id"]})
        ],
        "metrics": _standard(),
    }
    (claim,) = claims
    in_progress_ms = int(claim["in_progress_expiration"]["N"])
    assert started * 1000 + 299_000 <= in_progress_ms <= time.time() * 1000 + 300_000
    items = boto3.client("dynamodb", region_name=REGION).scan(TableName=table)["Items"]
    (kept,) = [int(i["expiration"]["N"]) for i in items if i["pk"]["S"] == "claim#toy"]
    assert (
        int(started) + runner.CLAIM_KEEPS_SECONDS - 1 <= kept <= int(time.time()) + runner.CLAIM_KEEPS_SECONDS
    )


def test_the_same_id_with_other_content_is_the_same_delivery(
    stack_env: dict[str, str], load_event: Any
) -> None:
    # x_handle__mutmut_72, _75 (the claim keyed by the whole event, not its id).
    event = _event(load_event)
    assert _handle(Rich(), event, Log(), Recording())["status"] == "done"
    replayed = {**event, "replay-name": "again"}
    toy = Rich()
    assert _handle(toy, replayed, Log(), Recording())["status"] == "duplicate" and toy.runs == []


def test_a_duplicate_finishes_earlier_work_with_its_config_says_so_and_raises_for_a_held_mail(
    stack_env: dict[str, str], load_event: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # x_handle__mutmut_110, _111, _113 - _120 (the "handled already" line and its id), _123 (the
    # earlier work carried out with no config), _140 (a mail SNS refused on a duplicate not raised).
    event = _event(load_event)
    _handle(Rich(), event, Log(), Recording())
    _dead(stack_env["OUTBOX_TABLE"], "dead", {"volumes": ["vol-0"]})
    monkeypatch.setattr(runner, "publish", _refused)
    toy, log = Rich(), Log()
    with pytest.raises(OutboxError) as raised:
        _handle(toy, event, log, Recording())
    assert str(raised.value) == f"1 {NOT_ACCEPTED}"
    assert log.lines[0] == ("duplicate delivery: this event was handled already", {"id": event["id"]})
    assert toy.acts == [(CONFIG, True)] and toy.runs == []
