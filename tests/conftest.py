"""Every test runs with fake credentials, a fixed region and moto's mock_aws: no test can
reach a real AWS endpoint. Shared fixtures for events, the call recorder and the stack env."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import pytest
from aws_lambda_powertools import Metrics
from moto import mock_aws
from moto.dynamodb.models import DynamoDBBackend
from moto.utilities.utils import load_resource

import change_calendar as fake_calendar  # adds ssm:GetCalendarState to moto
from autopilot import aws
from autopilot.recorder import CallRecorder
from reliability import figures, observed

# Powertools reads these when a handler module is imported (at collection, before fixtures).
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "OpsAutopilot")
os.environ.setdefault("AWS_DEFAULT_REGION", "eu-west-1")


def _only_motos_bundled_amis() -> None:
    """Every new moto EC2 backend - one per test that touches EC2 - loads moto's bundled AMIs
    (ec2/resources/amis.json: 44, ami-12c6146b among them) and ~1,250 more per region
    (latest_amis, ecs/optimized_amis), each with an auto-created EBS snapshot: ~0.3 s a test,
    and every DescribeSnapshots serialises those snapshots (~0.6 s a call). moto loads only the
    file MOTO_AMIS_PATH names when it is set (read when moto.ec2 is imported, after this): here
    a copy of its bundled amis.json, so the AMIs tests (and the demo they run) launch from stay."""
    if "MOTO_AMIS_PATH" in os.environ:
        return
    path = Path(tempfile.gettempdir()) / f"ops-autopilot-moto-{version('moto')}-amis.json"
    if not path.exists():
        partial = path.with_name(f"{path.name}.{os.getpid()}")
        partial.write_text(json.dumps(load_resource("ec2/resources/amis.json")))
        partial.replace(path)  # atomic: xdist workers start at the same time
    os.environ["MOTO_AMIS_PATH"] = str(path)


_only_motos_bundled_amis()


def _one_botocore_loader_per_process() -> None:
    """moto gives every test a new boto3 default session, and every botocore session makes
    its own data loader: each test read and parsed again the JSON service models its clients
    use (EC2's alone is megabytes; about 0.4 s a test). A loader only reads and caches the
    files of botocore's data path, so one loader per data path serves every session alike."""
    original = botocore.session.create_loader
    loaders: dict[str | None, Any] = {}

    def shared(search_path_string: str | None = None) -> Any:
        if search_path_string not in loaders:
            loaders[search_path_string] = original(search_path_string)
        return loaders[search_path_string]

    botocore.session.create_loader = shared


_one_botocore_loader_per_process()

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "events"
REGION = "eu-west-1"
STACK = "ops-autopilot-test"


@pytest.fixture(scope="session", autouse=True)
def _observe_iam_actions() -> Iterator[None]:
    """Records, for the whole session, the IAM actions each automation's code calls
    (tests/reliability/observed.py; judged at the end of the session: pytest_sessionfinish)."""
    # Wraps the layer's own before-call hook rather than joining aws.call_hooks, which tests
    # expect to hold only their own recorders. Clients are made per test, after this.
    original = aws._before_call

    def before_call(model: Any, params: dict[str, Any], **kwargs: Any) -> None:
        observed.hook(model.service_model.service_name, model.name, params)
        original(model, params, **kwargs)

    aws._before_call = before_call  # type: ignore[assignment]
    yield
    aws._before_call = original  # type: ignore[assignment]


# -- The session's figures and the observed-IAM judgement, over every pytest-xdist worker -----
# Each process that runs tests (the one pytest process, or each xdist worker) counts its share
# (tests/reliability/figures.py); a worker hands it to the controller through xdist's
# workeroutput; the process that ends the session adds the shares up, judges IAM once, fails
# the session (exit status 1, an ERROR in the summary) on a mismatch and prints the figures.

COMPLETE_KEY = pytest.StashKey[set[str]]()
DESELECTED_KEY = pytest.StashKey[bool]()
SHARES_KEY = pytest.StashKey[list[dict[str, Any]]]()
LOST_KEY = pytest.StashKey[list[str]]()
REPORT_KEY = pytest.StashKey[list[str]]()
COLLECTED_KEY = pytest.StashKey[list[str]]()
SHARE = "ops_autopilot_figures"
IAM_CHECK = "tests/reliability/test_iam_observed.py"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--repeat",
        type=int,
        default=1,
        help="run every selected test this many times (make stress: the concurrency tests under load)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    count = int(metafunc.config.getoption("repeat"))
    if count > 1:
        metafunc.fixturenames.append("repetition")
        metafunc.parametrize("repetition", range(1, count + 1), indirect=True, ids=lambda n: f"rep{n}")


@pytest.fixture
def repetition(request: pytest.FixtureRequest) -> int:
    """Which repetition of the test this is (``--repeat N``); 1 without it."""
    return int(getattr(request, "param", 1))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slow tests first; and which test folders run in full in this session: the observed-IAM
    judgement only judges automations whose whole test folder (and tests/reliability/) ran
    unfiltered."""
    # Under xdist the long tests then start while there is still short work for the other
    # worker, rather than one worker finishing a long test alone at the end.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable
    filtered = bool(config.getoption("keyword") or config.getoption("markexpr"))
    files = {Path(str(item.path)) for item in items}
    complete = {folder.name for folder in {f.parent for f in files} if set(folder.glob("test_*.py")) <= files}
    config.stash[COMPLETE_KEY] = set() if filtered else complete


def pytest_deselected(items: list[pytest.Item]) -> None:
    if items:
        items[0].config.stash[DESELECTED_KEY] = True


def pytest_collection_finish(session: pytest.Session) -> None:
    session.config.stash[COLLECTED_KEY] = [item.nodeid for item in session.items]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "teardown":  # every test that started, passed or not, ends with one
        figures.ran.add(report.nodeid)


def _complete(config: pytest.Config) -> set[str] | None:
    if COMPLETE_KEY not in config.stash:
        return None  # collected nothing (the xdist controller collects nothing itself)
    return set() if config.stash.get(DESELECTED_KEY, False) else config.stash[COMPLETE_KEY]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object | None) -> None:
    """xdist controller: a worker finished (or died) and sent its share."""
    config: pytest.Config = node.config
    output = getattr(node, "workeroutput", None) or {}
    if error is not None or SHARE not in output:
        config.stash.setdefault(LOST_KEY, []).append(f"{node.gateway.id}: {error or 'no figures'}")
    else:
        config.stash.setdefault(SHARES_KEY, []).append(output[SHARE])


@pytest.hookimpl(tryfirst=True)  # before the terminal summary and the junit report
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    mine = figures.share(_complete(config), config.stash.get(COLLECTED_KEY, None))
    if hasattr(config, "workerinput"):  # an xdist worker: the controller adds up and judges
        config.workeroutput[SHARE] = mine  # type: ignore[attr-defined]
        return
    controller = config.pluginmanager.has_plugin("dsession")
    totals = figures.add_up(config.stash.get(SHARES_KEY, []) if controller else [mine])
    lost = config.stash.get(LOST_KEY, [])
    if exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        why: str | None = f"the session ended with exit status {int(exitstatus)}"
    elif totals.not_run:  # --collect-only, -x, ...
        why = f"{len(totals.not_run)} of the {len(totals.collected)} tests collected did not run"
    elif lost:
        why = f"a worker's calls were lost ({'; '.join(lost)})"
    else:
        why = None
    verdict = figures.judge_iam(totals, why)
    if totals.ran:  # nothing to report after --collect-only
        config.stash[REPORT_KEY] = figures.summary(totals) + verdict.lines
    if verdict.failures:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        for name, message in sorted(verdict.failures.items()):
            nodeid = f"{IAM_CHECK}::granted_actions_are_exactly_the_observed_calls[{name}]"
            report = pytest.TestReport(
                nodeid, (IAM_CHECK, None, nodeid.split("::")[1]), {}, "failed", message, "sessionfinish"
            )
            if reporter is not None:  # listed under ERRORS, counted in the last line
                reporter.stats.setdefault("error", []).append(report)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    lines = terminalreporter.config.stash.get(REPORT_KEY, [])
    if lines:
        terminalreporter.section("reliability and IAM figures")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def reliability_report() -> list[str]:
    """Lines printed at the end of the run (faults survived ...), from every xdist worker."""
    return figures.lines


@pytest.fixture(autouse=True)
def _paced_on_a_simulated_clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """autopilot.pacing waits on a simulated clock: a test never sleeps for a token (and can
    read how long the calls would have waited: the returned list's one value, in seconds)."""
    from autopilot import pacing

    now = [0.0]
    monkeypatch.setattr(pacing, "clock", lambda: now[0])
    monkeypatch.setattr(pacing, "sleep", lambda seconds: now.__setitem__(0, now[0] + seconds))
    return now


@pytest.fixture(autouse=True)
def _no_metrics_left_by_earlier_tests() -> None:
    """Powertools keeps the metrics added and not yet flushed in dicts shared by every Metrics
    instance (class attributes): a test that runs code adding metrics without the handler's
    log_metrics flush would hand them to whichever test runs next in the same process."""
    Metrics._metrics.clear()
    Metrics._metadata.clear()
    Metrics._dimensions.clear()
    Metrics._dimensions.update(Metrics._default_dimensions)


# DynamoDB applies each write - its condition check and the write itself - atomically. moto
# does not: two threads can both pass the same condition (attribute_not_exists) and both
# write. Tests that deliver events concurrently rely on DynamoDB's behaviour, so moto's item
# writes are serialised here (one lock for all tables: coarser than DynamoDB, never finer).
_DYNAMODB_LOCK = threading.RLock()
_ATOMIC_DYNAMODB_WRITES = ("put_item", "update_item", "delete_item", "transact_write_items", "get_item")


def _atomic(method: Callable[..., Any]) -> Callable[..., Any]:
    def locked(*args: Any, **kwargs: Any) -> Any:
        with _DYNAMODB_LOCK:
            return method(*args, **kwargs)

    return locked


@pytest.fixture(autouse=True)
def _fake_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "OpsAutopilot")
    monkeypatch.setenv("POWERTOOLS_DEV", "false")
    for name in _ATOMIC_DYNAMODB_WRITES:
        monkeypatch.setattr(DynamoDBBackend, name, _atomic(getattr(DynamoDBBackend, name)))
    aws.reset_clients()
    with mock_aws():
        yield
    aws.reset_clients()


@pytest.fixture
def load_event() -> Callable[[str], dict[str, Any]]:
    """load_event("owner_tagger/run_instances.sso_user") -> the parsed events/<path>.json, its
    time the runner's clock's (``as_delivered_now=False``: the file's own time)."""

    def load(name: str, as_delivered_now: bool = True) -> dict[str, Any]:
        path = EVENTS / (name if name.endswith(".json") else f"{name}.json")
        data: dict[str, Any] = json.loads(path.read_text())
        return at_clock(data) if as_delivered_now else data

    return load


def at_clock(event: dict[str, Any]) -> dict[str, Any]:
    """The sample event as delivered now: its ``time`` (and a CloudTrail event's ``eventTime``)
    set to the runner's clock, which refuses events far from it (autopilot.events.require_fresh)."""
    from autopilot import runner

    now = runner.clock().strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(event.get("time"), str):
        event["time"] = now
    detail = event.get("detail")
    if isinstance(detail, dict) and isinstance(detail.get("eventTime"), str):
        detail["eventTime"] = now
    return event


@pytest.fixture
def calls() -> Iterator[CallRecorder]:
    """Records every AWS call made through autopilot.aws.client during the test."""
    with CallRecorder() as recorder:
        yield recorder


@pytest.fixture
def topic_arn() -> str:
    return str(boto3.client("sns", region_name=REGION).create_topic(Name="alarms")["TopicArn"])


@pytest.fixture
def mailbox(topic_arn: str) -> Callable[[], list[dict[str, Any]]]:
    """Subscribes an SQS queue to the topic; calling the fixture returns the mails sent so far
    as dicts with subject, body and attributes (automation, severity)."""
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(QueueName="mailbox")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    boto3.client("sns", region_name=REGION).subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn)
    seen: list[dict[str, Any]] = []

    def read() -> list[dict[str, Any]]:
        while True:
            batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
            if not batch:
                return list(seen)
            for message in batch:
                envelope = json.loads(message["Body"])
                seen.append(
                    {
                        "subject": envelope.get("Subject"),
                        "body": envelope["Message"],
                        "attributes": {
                            k: v["Value"] for k, v in envelope.get("MessageAttributes", {}).items()
                        },
                    }
                )
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    return read


@pytest.fixture
def stack_env(monkeypatch: pytest.MonkeyPatch, topic_arn: str) -> dict[str, str]:
    """The environment every function gets from template Globals (DRY_RUN=false here), and a
    schedule (each scheduled function's own SCHEDULE) that names every minute, so a scheduled
    event delivered now is on time."""
    env = {
        "STACK_NAME": STACK,
        "TOPIC_ARN": topic_arn,
        "DRY_RUN": "false",
        "OWNER_TAG_KEY": "Owner",
        "OUTBOX_TABLE": create_outbox_table(),
        "SCHEDULE": EVERY_MINUTE,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


SENDER = "ops-autopilot@example.com"  # MailSenderAddress in the owner-mail tests
ROUTING_PARAMETER = f"/{STACK}/mail-routing"


class OwnerMail:
    """Owner-routed mail in moto: the sender verified in SES, the routing map in SSM; calling it
    returns the mails SES accepted as (to, subject, body), in order."""

    def __call__(self) -> list[tuple[str, str, str]]:
        from moto.ses.models import ses_backends

        messages = ses_backends["123456789012"][REGION].sent_messages
        return [(m.destinations["ToAddresses"][0], m.subject, m.body) for m in messages]

    def routes(self, mapping: dict[str, str]) -> None:
        boto3.client("ssm", region_name=REGION).put_parameter(
            Name=ROUTING_PARAMETER, Type="String", Value=json.dumps(mapping), Overwrite=True
        )


@pytest.fixture
def owner_mail(stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> OwnerMail:
    """Routing on (MAIL_FROM, MAIL_ROUTING_PARAMETER), the map {"payments": ...} by team."""
    boto3.client("ses", region_name=REGION).verify_email_identity(EmailAddress=SENDER)
    mail = OwnerMail()
    mail.routes({"payments": "payments-oncall@example.com"})
    monkeypatch.setenv("MAIL_FROM", SENDER)
    monkeypatch.setenv("MAIL_ROUTING_PARAMETER", ROUTING_PARAMETER)
    return mail


@pytest.fixture
def change_calendar(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """CHANGE_CALENDAR names an OPEN calendar (``freeze-calendar``); the fake's module
    (tests/change_calendar.py) closes, fails or forgets it."""
    fake_calendar.reset()
    fake_calendar.set_state(CALENDAR, "OPEN")
    monkeypatch.setenv("CHANGE_CALENDAR", CALENDAR)
    yield fake_calendar
    fake_calendar.reset()


CALENDAR = "freeze-calendar"
OUTBOX_TABLE = "ops-autopilot-test-outbox"
EVERY_MINUTE = "cron(* * * * ? *)"


def create_outbox_table(name: str = OUTBOX_TABLE, region: str = REGION) -> str:
    """The stack's outbox table (template.yaml OutboxTable), in moto."""
    client = boto3.client("dynamodb", region_name=region)
    if name not in client.list_tables()["TableNames"]:
        client.create_table(
            TableName=name,
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
    return name


def continuation(execution: str, round_: int, automation: str) -> dict[str, Any]:
    """What a stack's rounds state machine sends (SnapshotRotatorRounds in template.yaml): an
    event of its own source and id, timed now."""
    from datetime import UTC, datetime

    return {
        "version": "0",
        "id": f"{execution}-round-{round_}",
        "detail-type": "Continue the run",
        "source": "ops-autopilot.continue",
        "account": "123456789012",
        "region": REGION,
        "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "resources": [],
        "detail": {"automation": automation, "round": round_},
    }


@pytest.fixture
def rounds_machine(monkeypatch: pytest.MonkeyPatch) -> str:
    """A state machine in moto that does nothing, as the stack's CONTINUATION_STATE_MACHINE: the
    tests invoke the rounds themselves and read its executions."""
    import boto3

    arn = boto3.client("stepfunctions", region_name=REGION).create_state_machine(
        name="ops-autopilot-rounds-test",
        definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
        roleArn="arn:aws:iam::123456789012:role/rounds",
    )["stateMachineArn"]
    monkeypatch.setenv("CONTINUATION_STATE_MACHINE", arn)
    return str(arn)


def ec2_tags(resource_id: str) -> dict[str, str]:
    """The tags of one EC2 resource, as a dict (DescribeTags, moto)."""
    import boto3

    found = boto3.client("ec2", region_name=REGION).describe_tags(
        Filters=[{"Name": "resource-id", "Values": [resource_id]}]
    )["Tags"]
    return {t["Key"]: t["Value"] for t in found}


class FakeContext:
    """The parts of the Lambda context object the handlers use."""

    function_name = "test-function"
    memory_limit_in_mb = 256
    invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:test-function"
    aws_request_id = "00000000-0000-0000-0000-000000000000"

    def __init__(self, remaining_ms: int = 300_000) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.fixture
def lambda_context() -> FakeContext:
    return FakeContext()
