"""website_health_check: wall time of checking N local sites that each answer after 200 ms, as
a ratio to 200 ms (one site's latency), and the AWS calls of a steady-state run.

Minimum calls per run, whatever the number of sites S (the list is one SSM parameter, the
states one small DynamoDB table of S items, far under Scan's 1 MB page):
- ssm.GetParameter: 1; dynamodb.Scan: 1;
- dynamodb.PutItem: one per site whose state changed (0 in a steady state; S on the very
  first run); sns.Publish: 1 only when some site changed (0 in a steady state).
"""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3

from autopilot.config import CommonConfig
from autopilot.runtime import Deadline
from bench.common import REGION, STACK, Run, measured, sandbox
from website_health_check.app import Config, check_all, execute
from website_health_check.sites import Site

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
        results = check_all(sites, Deadline(remaining_at_start=120, reserve=10), cert_warning_days=14)
        wall = time.perf_counter() - started
    finally:
        process.terminate()
    assert len(results) == n and all(r.status.value == "UP" for r in results)
    return {"sites": n, "wall_s": round(wall, 3), "ratio_to_one_site": round(wall / LATENCY, 2)}


def calls_run(n: int) -> Run:
    """The calls of a steady-state run over n healthy sites (the second run; the first one
    writes every site's first state)."""
    process, port = _start_sites()
    try:
        with sandbox():
            topic = boto3.client("sns", region_name=REGION).create_topic(Name="bench")["TopicArn"]
            parameter = "/bench/sites"
            urls = [{"url": f"http://127.0.0.1:{port}/s{i}", "expect_text": "Welcome"} for i in range(n)]
            boto3.client("ssm", region_name=REGION).put_parameter(
                Name=parameter, Type="String", Value=json.dumps(urls)
            )
            table = boto3.client("dynamodb", region_name=REGION).create_table(
                TableName="bench-health",
                AttributeDefinitions=[{"AttributeName": "url", "AttributeType": "S"}],
                KeySchema=[{"AttributeName": "url", "KeyType": "HASH"}],
                BillingMode="PAY_PER_REQUEST",
            )["TableDescription"]["TableName"]
            config = Config(
                common=CommonConfig(stack_name=STACK, region=REGION, topic_arn=topic, dry_run=False),
                sites_parameter=parameter,
                state_table=table,
                failures_before_down=2,
                cert_warning_days=14,
            )
            # Powertools prints per-site metrics (single_metric) even when metrics are disabled.
            with contextlib.redirect_stdout(io.StringIO()):
                execute(config, Deadline(remaining_at_start=120, reserve=10))  # first run: writes states
                with measured() as (calls, elapsed):
                    execute(config, Deadline(remaining_at_start=120, reserve=10))
    finally:
        process.terminate()
    return Run(
        automation="website_health_check",
        size=n,
        unit="sites (steady state)",
        calls=calls.by_operation(),
        minimum={"ssm.GetParameter": 1, "dynamodb.Scan": 1},
        seconds=elapsed[0],
    )


def main() -> None:
    for n in (1, 10, 50, 200):
        print("health check", wall_ratio(n))


if __name__ == "__main__":
    main()
