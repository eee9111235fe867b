"""website_health_check: wall time of checking N local sites that each answer after 200 ms, as
a ratio to 200 ms (one site's latency), and the AWS calls of a steady-state run.

Minimum calls per run, whatever the number of sites S (the list is one SSM parameter read
with its folder, the states one small DynamoDB table of S items, far under Scan's 1 MB page):
- ssm.GetParametersByPath: 1 (one per 10 parameters when the list is split); dynamodb.Scan: 1;
- the runner (autopilot.runner), every invocation: dynamodb.Query 1 (unfinished work) and the
  claim on the event, dynamodb.PutItem 1 + dynamodb.UpdateItem 1;
- only when some site's state changed: dynamodb.PutItem one per changed site, the outbox entry
  (PutItem + UpdateItem + DeleteItem) and sns.Publish 1 when a transition is mailed (none of
  these in a steady state).
"""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from unittest import mock

import boto3

from autopilot.runtime import Deadline
from bench.common import ACCOUNT, REGION, STACK, LambdaContext, Run, measured, metrics_sent, sandbox
from website_health_check.decide import Site, classify
from website_health_check.service import probe_all

LATENCY = 0.2


class Slow(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        time.sleep(LATENCY)
        body = b"Welcome"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    request_queue_size = 512  # the default backlog of 5 would make the server the bottleneck
    daemon_threads = True


def _serve(port: Any) -> None:
    server = Server(("127.0.0.1", 0), Slow)
    port.value = server.server_port
    server.serve_forever()


def _start_sites() -> tuple[Any, int]:
    # The sites run in another process, so they do not compete with the checker for the GIL.
    port = multiprocessing.Value("i", 0)
    process = multiprocessing.Process(target=_serve, args=(port,), daemon=True)
    process.start()
    while not port.value:
        time.sleep(0.01)
    return process, int(port.value)


def wall_ratio(n: int) -> dict[str, float]:
    process, port = _start_sites()
    sites = [Site(url=f"http://127.0.0.1:{port}/s{i}", name=str(i), expect_text="Welcome") for i in range(n)]
    try:
        started = time.perf_counter()
        probes = probe_all(sites, Deadline(remaining_at_start=120, reserve=10), datetime.now(UTC))
        results = [classify(site, probe, 14) for site, probe in probes]
        wall = time.perf_counter() - started
    finally:
        process.terminate()
    assert len(results) == n and all(r.status.value == "UP" for r in results)
    return {"sites": n, "wall_s": round(wall, 3), "ratio_to_one_site": round(wall / LATENCY, 2)}


def _event(region: str = REGION) -> dict[str, Any]:
    """A scheduled event of a new run (its own id, the time of now) in ``region``."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [],
        "detail": {},
    }


def _table(name: str, keys: list[str], region: str = REGION) -> str:
    """An on-demand table of string keys (hash, then range) in ``region``."""
    schema = [{"AttributeName": k, "KeyType": t} for k, t in zip(keys, ("HASH", "RANGE"), strict=False)]
    return str(
        boto3.client("dynamodb", region_name=region).create_table(
            TableName=name,
            AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k in keys],
            KeySchema=schema,
            BillingMode="PAY_PER_REQUEST",
        )["TableDescription"]["TableName"]
    )


def calls_run(n: int) -> Run:
    """The calls of a steady-state run over n healthy sites (the second run), through the real
    handler and the runner."""
    from website_health_check import app

    process, port = _start_sites()
    try:
        with sandbox():
            topic = boto3.client("sns", region_name=REGION).create_topic(Name="bench")["TopicArn"]
            parameter = "/bench/website-health-check/sites"
            urls = [{"url": f"http://127.0.0.1:{port}/s{i}", "expect_text": "Welcome"} for i in range(n)]
            boto3.client("ssm", region_name=REGION).put_parameter(
                Name=parameter, Type="String", Value=json.dumps(urls)
            )
            env = {
                "STACK_NAME": STACK,
                "TOPIC_ARN": topic,
                "DRY_RUN": "false",
                "OWNER_TAG_KEY": "Owner",
                "OUTBOX_TABLE": _table("bench-outbox", ["pk", "sk"]),
                "SITES_PARAMETER": parameter,
                "STATE_TABLE": _table("bench-health", ["url"]),
                "FAILURES_BEFORE_DOWN": "2",
                "CERT_WARNING_DAYS": "14",
            }
            # Powertools prints the EMF lines even when metrics are disabled.
            with mock.patch.dict(os.environ, env), contextlib.redirect_stdout(io.StringIO()):
                app.lambda_handler(_event(), LambdaContext(120_000))  # first run
                with measured() as (calls, elapsed):
                    result = app.lambda_handler(_event(), LambdaContext(120_000))
    finally:
        process.terminate()
    return Run(
        automation="website_health_check",
        size=n,
        unit="sites (steady state)",
        calls=calls.by_operation(),
        minimum={
            "ssm.GetParametersByPath": 1,
            "dynamodb.Scan": 1,
            "dynamodb.Query": 1,
            "dynamodb.PutItem": 1,
            "dynamodb.UpdateItem": 1,
        },
        seconds=elapsed[0],
        # every site up, no certificate near its end: Checked alone (the aggregates are sent
        # while not zero; per-site metrics are opt-in, priced apart)
        extra={"metrics_sent": metrics_sent(result)},
    )


def main() -> None:
    for n in (1, 10, 50, 200):
        print("health check", wall_ratio(n))


if __name__ == "__main__":
    main()
