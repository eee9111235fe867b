"""Two local sites, one healthy and one broken: the DOWN mail, then the fix and RECOVERED; then a
heartbeat (a nightly job's dead man's switch) pinged, missed on a SIMULATED clock, and pinged again;
then one site checked from three regions with a quorum of 2 (SIMULATED clock; which regions
reach the site is SIMULATED by switching the local site between the regions' runs)."""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from demo import websites
from demo.sandbox import LambdaContext, Sandbox, sample_event, step

TITLE = "two local sites, one breaks and recovers"
EVENT = "website_health_check/eventbridge.scheduled"


def run(sb: Sandbox) -> None:
    shop, blog = websites.start(), websites.start(healthy=False)
    shop_url = f"http://127.0.0.1:{shop.server_port}/ok"
    blog_url = f"http://127.0.0.1:{blog.server_port}/toggle"
    parameter = f"/{sb.stack_name}/website-health-check/sites"
    sb.client("ssm").put_parameter(
        Name=parameter,
        Type="String",
        Overwrite=True,
        Value=json.dumps([{"url": u, "expect_text": "Welcome"} for u in (shop_url, blog_url)]),
    )
    table = sb.client("dynamodb").create_table(
        TableName=f"{sb.stack_name}-WebsiteHealthCheckStateTable",
        AttributeDefinitions=[{"AttributeName": "url", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "url", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )["TableDescription"]["TableName"]
    env = {**sb.base_env(), "SITES_PARAMETER": parameter, "STATE_TABLE": table, "FAILURES_BEFORE_DOWN": "2"}
    print(f"Sites: {shop_url} (healthy), {blog_url} (answers 503).")
    print("A site is reported DOWN after 2 failed checks in a row (WebsiteHealthCheckFailuresBeforeAlarm=2).")
    try:
        for n in (1, 2, 3):
            step(f"Scheduled run {n}")
            result = sb.invoke("website_health_check", EVENT, env)
            report(result)
            sb.print_mails()
        step("Someone fixes the blog; next scheduled run")
        blog.healthy = True  # type: ignore[attr-defined]
        result = sb.invoke("website_health_check", EVENT, env)
        report(result)
        sb.print_mails()
    finally:
        shop.shutdown()
        blog.shutdown()
    heartbeat(sb, parameter, table, env)
    regions(sb, parameter, table, env)


FUNCTION_URL = "https://demo1234567890.lambda-url.eu-west-1.on.aws/"  # HeartbeatFunction's, in AWS


@contextlib.contextmanager
def clock_at(when: datetime) -> Iterator[None]:
    """SIMULATED time: the runner's and the heartbeat function's clock at ``when``."""
    from autopilot import runner
    from heartbeat import ping

    saved = runner.clock, ping.clock
    runner.clock = ping.clock = lambda: when  # type: ignore[method-assign]
    try:
        yield
    finally:
        runner.clock, ping.clock = saved  # type: ignore[method-assign]


def ping_request(sb: Sandbox, path: str, table: str) -> int:
    """The heartbeat function on a function-URL request (what `curl <url>` sends)."""
    from heartbeat import ping

    event = {"version": "2.0", "rawPath": path, "requestContext": {"http": {"method": "GET", "path": path}}}
    level = ping.logger.log_level
    ping.logger.setLevel("ERROR")  # its log lines (the heartbeat's id, never the token) stay out of the story
    try:
        with sb.environment({"STATE_TABLE": table}), contextlib.redirect_stdout(io.StringIO()):
            return int(ping.lambda_handler(event, LambdaContext())["statusCode"])
    finally:
        ping.logger.setLevel(level)


def heartbeat(sb: Sandbox, parameter: str, table: str, env: dict[str, str]) -> None:
    entry = {"heartbeat": "nightly-backup", "period": "1d", "grace": "1h", "name": "Nightly backup"}
    sb.client("ssm").put_parameter(Name=parameter, Type="String", Overwrite=True, Value=json.dumps([entry]))
    folder = f"/{sb.stack_name}/heartbeats"
    env = {**env, "HEARTBEAT_URL": FUNCTION_URL, "HEARTBEAT_PARAMETERS": folder}
    start = datetime.now(UTC).replace(second=0, microsecond=0)

    def run_at(when: datetime) -> dict[str, Any]:
        event = {**sample_event(EVENT), "id": str(uuid.uuid4()), "time": when.strftime("%Y-%m-%dT%H:%M:%SZ")}
        with clock_at(when):
            result: dict[str, Any] = sb.invoke("website_health_check", event, env)
        return result

    step(f"The site list now holds a heartbeat: {json.dumps(entry)}")
    run_at(start)
    name = f"{folder}/nightly-backup"
    url = sb.client("ssm").get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
    print(f"  its URL was made into the SSM SecureString {name} (not printed here: it holds the token)")
    path = "/" + str(url).removeprefix(FUNCTION_URL)
    with clock_at(start + timedelta(minutes=1)):
        print(f"  the job pings it: HTTP {ping_request(sb, path, table)}")
        wrong = path.rsplit("/", 1)[0] + "/" + "x" * 43
        print(f"  someone guesses a token: HTTP {ping_request(sb, wrong, table)} (nothing changed, counted)")
    step("SIMULATED clock: 25 h 10 min later, the next night's ping never came (period 1d + grace 1h)")
    run_at(start + timedelta(hours=25, minutes=10))
    sb.print_mails()
    step("SIMULATED clock: the job runs again an hour later and pings; the next check")
    later = start + timedelta(hours=26, minutes=10)
    with clock_at(later):
        print(f"  the job pings it: HTTP {ping_request(sb, path, table)}")
    run_at(later + timedelta(minutes=5))
    sb.print_mails()


def report(result: dict[str, object]) -> None:
    print(
        f"  checked {result['Checked']} sites, {result['SitesDown']} down now; "
        f"state changes mailed: {result['Changed']}"
    )


HOME, MEMBERS = "eu-west-1", ("us-east-1", "ap-southeast-2")
RESULTS = "ops-autopilot-health-results"


def regions(sb: Sandbox, parameter: str, table: str, env: dict[str, str]) -> None:
    """WebsiteHealthCheckRegions=eu-west-1,us-east-1,ap-southeast-2, quorum 2: the home and two
    members, each its own stack (outbox, topic) in its region of the sandbox."""
    import boto3

    site = websites.start()
    url = f"http://127.0.0.1:{site.server_port}/toggle"
    sb.client("ssm").put_parameter(
        Name=parameter, Type="String", Overwrite=True, Value=json.dumps([{"url": url}])
    )
    sb.client("dynamodb").create_table(
        TableName=RESULTS,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    several = {
        "HEALTH_CHECK_REGIONS": ",".join((HOME, *MEMBERS)),
        "HEALTH_CHECK_QUORUM": "2",
        "RESULTS_TABLE": RESULTS,
        "SCHEDULE": "rate(5 minutes)",
    }
    stacks = {HOME: {**env, **several, "AWS_REGION": HOME, "AWS_DEFAULT_REGION": HOME}}
    for region in MEMBERS:
        sb.create_outbox(region)
        topic = boto3.client("sns", region_name=region, endpoint_url=sb.endpoint).create_topic(Name="alarms")
        stacks[region] = {
            **env,
            **several,
            "TOPIC_ARN": topic["TopicArn"],
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
        }
    now = [datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(days=2)]

    def round_(failing: set[str], silent: frozenset[str] = frozenset()) -> dict[str, Any]:
        """Each region's scheduled run (home at :00, members at :01 and :02), the site answering
        503 to the ``failing`` ones; the home's result."""
        home: dict[str, Any] = {}
        for n, region in enumerate((HOME, *MEMBERS)):
            when = now[0] + timedelta(minutes=n)
            site.healthy = region not in failing  # type: ignore[attr-defined]
            if region not in silent:
                event = {**sample_event(EVENT), "id": str(uuid.uuid4()), "region": region}
                event["time"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
                with clock_at(when):
                    result = sb.invoke("website_health_check", event, stacks[region])
                home = result if region == HOME else home
        now[0] += timedelta(minutes=5)
        return home

    step(
        "Three regions, quorum 2 (WebsiteHealthCheckRegions=eu-west-1,us-east-1,ap-southeast-2): "
        "the home publishes the list, the members check it and send it their results"
    )
    try:
        round_(set())
        round_(set())
        print("  (no mail: every region reaches the site)")
        step("SIMULATED network: only us-east-1 cannot reach the site, for 3 rounds of 5 minutes")
        for _ in range(3):
            result = round_({"us-east-1"})
        print(
            f"  the home counts it down: {result['SitesDown']} (one region alone is its path, not the site)"
        )
        sb.print_mails()
        step("SIMULATED network: us-east-1 and ap-southeast-2 cannot reach it (quorum reached), 3 rounds")
        for _ in range(3):
            round_({"us-east-1", "ap-southeast-2"})
        sb.print_mails()
        step("SIMULATED: every region reaches it again, and ap-southeast-2's function stops running")
        round_(set())
        round_(set(), frozenset({"ap-southeast-2"}))
        for _ in range(2):
            result = round_(set(), frozenset({"ap-southeast-2"}))
        sb.print_mails()
        print(
            f"  RegionsSilent = {result['RegionsSilent']} at the home: WebsiteHealthCheckRegionSilentAlarm "
            "mails the stack's topic (a silent region is an alarm, not a quorum change)"
        )
    finally:
        site.shutdown()
