"""Wall time of checking N local sites that each answer after 200 ms, as a ratio to 200 ms,
and the health check's cold start (python -m bench.health_check)."""

from __future__ import annotations

import multiprocessing
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from autopilot.runtime import Deadline
from bench.coldstart import measure
from website_health_check.app import check_all
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


def wall_ratio(n: int) -> dict[str, float]:
    # The sites run in another process, so they do not compete with the checker for the GIL.
    port = multiprocessing.Value("i", 0)
    process = multiprocessing.Process(target=_serve, args=(port,), daemon=True)
    process.start()
    while not port.value:
        time.sleep(0.01)
    sites = [
        Site(url=f"http://127.0.0.1:{port.value}/s{i}", name=str(i), expect_text="Welcome") for i in range(n)
    ]
    try:
        started = time.perf_counter()
        results = check_all(sites, Deadline(remaining_at_start=120, reserve=10), cert_warning_days=14)
        wall = time.perf_counter() - started
    finally:
        process.terminate()
    assert len(results) == n and all(r.status.value == "UP" for r in results)
    return {"sites": n, "wall_s": round(wall, 3), "ratio_to_one_site": round(wall / LATENCY, 2)}


def main() -> None:
    for n in (1, 10, 50, 200):
        print("health check", wall_ratio(n))
    print(
        "cold start website_health_check.app", measure("website_health_check.app", ["ssm", "dynamodb", "sns"])
    )


if __name__ == "__main__":
    main()
