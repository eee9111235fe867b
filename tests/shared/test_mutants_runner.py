"""autopilot.runner (safety rule 4: never twice, never lost) where `make mutate`
(tools/mutate.py) found behaviour no test pinned down: each test names the mutants it kills
(mutmut's names; docs/mutation-survivors.md lists the survivors explained instead). A toy
automation against moto's DynamoDB, as in test_runner.py."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from autopilot import aws, runner
from autopilot.config import CommonConfig
from autopilot.events import parse_scheduled
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
