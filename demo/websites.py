"""Small local web sites on 127.0.0.1, used by the demo and by the health check's tests."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class SiteHandler(BaseHTTPRequestHandler):
    """Paths: /ok, /error (500), /wrongtext, /slow (1.5 s), /redirect-loop, /moved (-> /ok),
    /big (2 MiB, text at the end), /toggle (follows server.healthy)."""

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/slow":
            time.sleep(1.5)
            self._send(200, "Welcome, slowly")
        elif path == "/error":
            self._send(500, "Internal Server Error")
        elif path == "/wrongtext":
            self._send(200, "Maintenance page")
        elif path == "/redirect-loop":
            self._redirect("/redirect-loop")
        elif path == "/moved":
            self._redirect("/ok")
        elif path == "/big":
            self._send(200, "x" * (2 * 1024 * 1024) + "Welcome")
        elif path == "/toggle":
            healthy = getattr(self.server, "healthy", True)
            self._send(200 if healthy else 503, "Welcome" if healthy else "Down for maintenance")
        else:
            self._send(200, "<html><body>Welcome to the shop</body></html>")

    def _send(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


def start(healthy: bool = True) -> ThreadingHTTPServer:
    """Serve SiteHandler on a free port of 127.0.0.1 in a daemon thread (stop: .shutdown())."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), SiteHandler)
    server.daemon_threads = True
    server.healthy = healthy  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
