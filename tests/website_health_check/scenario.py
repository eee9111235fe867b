"""The reliability scenario of website_health_check: three local sites (one healthy, two
failing), the real handler on its real sample event, and a check that all of the work got
done: both failing sites stored DOWN and mailed in one digest (used by tests/reliability:
faults, idempotency, bad input). Discovered by tests/reliability/scenarios.py; every
automation has one."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer
from typing import Any

import boto3

from conftest import REGION, FakeContext
from reliability.scenarios import Ctx, Scenario, event

# Environment of the bad-input tests (besides the stack's own): the least the handler needs.
BAD_INPUT_ENV: dict[str, str] = {"SITES_PARAMETER": "/x/sites", "STATE_TABLE": "state"}
# The sample event of a normal run (events/website_health_check/...).
VALID_SAMPLE = "eventbridge.scheduled"


def scenario(ctx: Ctx) -> Scenario:
    from demo.websites import SiteHandler
    from website_health_check import app

    server = ThreadingHTTPServer(("127.0.0.1", 0), SiteHandler)
    server.daemon_threads = True
    server.healthy = False  # type: ignore[attr-defined]  # /toggle answers 503
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    ctx.cleanups.append(stop)
    table = boto3.client("dynamodb", region_name=REGION).create_table(
        TableName="health-state",
        AttributeDefinitions=[{"AttributeName": "url", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "url", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )["TableDescription"]["TableName"]
    parameter = "/ops-autopilot-test/website-health-check/sites"
    base = f"http://127.0.0.1:{server.server_port}"
    sites = [f"{base}/ok", f"{base}/toggle", f"{base}/error"]
    boto3.client("ssm", region_name=REGION).put_parameter(
        Name=parameter, Value=", ".join(sites), Type="String", Overwrite=True
    )
    ctx.env(
        POWERTOOLS_SERVICE_NAME="website_health_check",
        SITES_PARAMETER=parameter,
        STATE_TABLE=table,
        FAILURES_BEFORE_DOWN="1",
        CERT_WARNING_DAYS="14",
    )

    def state() -> dict[str, str]:
        items = boto3.client("dynamodb", region_name=REGION).scan(TableName=table)["Items"]
        return {i["url"]["S"]: i.get("reported", {}).get("S", "") for i in items}

    def verify() -> None:
        now = state()
        assert {u: now.get(u) for u in sites[1:]} == {sites[1]: "DOWN", sites[2]: "DOWN"}, now

    def check_concurrent(calls: Any, mails: list[dict[str, Any]]) -> None:
        """Each changed site mailed exactly once overall, in one digest; each state written once."""
        bodies = "".join(m["body"] for m in mails)
        assert len(mails) == 1, [m["subject"] for m in mails]
        assert [bodies.count(f"- {url}\n") for url in sites] == [0, 1, 1], bodies
        writes = [p["Item"]["url"]["S"] for p in calls.of("dynamodb", "PutItem") if p["TableName"] == table]
        assert sorted(writes) == sorted(sites[1:]), writes

    return Scenario(
        "website_health_check",
        lambda: app.lambda_handler(event("website_health_check/eventbridge.scheduled"), FakeContext()),  # type: ignore[arg-type]
        verify,
        resources=sites,
        mails=ctx.mailbox,
        expected_mails=1,
        extra={"state": state},
        check_concurrent=check_concurrent,
    )
