"""Local sites for bench.health_engine, served by a process of their own (its CPU is not the
checker's): an asyncio server (stdlib only) on 127.0.0.1, ``PORTS`` plain-HTTP ports and as
many HTTPS ports, every ``/site/<i>`` answering after ``LATENCY`` seconds with a ~2 KB HTML
page that contains :func:`marker` (``Connection: close``, one request per connection).

HTTPS: a local CA and a server certificate for IP 127.0.0.1 (ECDSA P-256, valid ``CERT_DAYS``
days), made with ``cryptography``; the CA's PEM is written to the folder the parent passed, for
the checkers to trust. The listen backlog is ``BACKLOG``, so 1,000 connections at once queue
rather than fail.

    python -m bench.health_sites DIR     # serves until its stdin closes (LocalSites does that)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import ssl
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path
from types import TracebackType
from typing import Any

HOST = "127.0.0.1"
PORTS = 8  # per scheme
LATENCY = 0.2  # seconds before each answer
PAGE_BYTES = 2048
BACKLOG = 4096  # capped by net.core.somaxconn (4,096 here)
CERT_DAYS = 90
MAX_REQUEST_HEAD = 16 * 1024
_REQUEST = re.compile(rb"^GET /site/(\d+) HTTP/1\.[01]\r\n")


def marker(index: int) -> str:
    """The text site ``index``'s page contains (the checkers' expected text)."""
    return f"bench site {index} is up"


def page(index: int) -> bytes:
    """Site ``index``'s HTML page: ``PAGE_BYTES`` bytes with :func:`marker` in the middle."""
    head = f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Site {index}</title>'
    body = f"</head><body><h1>Bench site {index}</h1><p>{marker(index)}</p>"
    tail = "</body></html>\n"
    filler = "<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.</p>\n"
    text = head + body
    while len(text) + len(filler) + len(tail) <= PAGE_BYTES:
        text += filler
    return (text + " " * (PAGE_BYTES - len(text) - len(tail)) + tail).encode()


def _response(status: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


# -- certificates --------------------------------------------------------------------------


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for IP 127.0.0.1 signed by it, in ``folder``: (CA PEM,
    server certificate PEM, server key PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ops-autopilot bench CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=CERT_DAYS + 1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=CERT_DAYS))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(IPv4Address(HOST)), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "server.pem", folder / "server-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


# -- the server (in its own process) -------------------------------------------------------


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One connection: read the request head, wait LATENCY, answer, close. Whatever the client
    does (close after the handshake, reset) ends only this connection."""
    try:
        async with asyncio.timeout(30):
            head = await reader.readuntil(b"\r\n\r\n")
            match = _REQUEST.match(head)
            await asyncio.sleep(LATENCY)
            if match:
                writer.write(_response("200 OK", page(int(match.group(1)))))
            else:
                writer.write(_response("404 Not Found", b"<!doctype html><p>no such site</p>\n"))
            await writer.drain()
    except (OSError, TimeoutError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(5):
                await writer.wait_closed()


def _quiet(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Failed handshakes and resets are the clients' business here, not worth a traceback."""
    if not isinstance(context.get("exception"), OSError | EOFError):
        loop.default_exception_handler(context)


async def _serve(folder: Path) -> None:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_quiet)
    _, cert, key = make_certificates(folder)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    servers: dict[str, list[asyncio.Server]] = {"http": [], "https": []}
    for scheme, context in (("http", None), ("https", tls)):
        for _ in range(PORTS):
            server = await asyncio.start_server(
                _answer, HOST, 0, ssl=context, backlog=BACKLOG, limit=MAX_REQUEST_HEAD
            )
            servers[scheme].append(server)
    ports = {scheme: [s.sockets[0].getsockname()[1] for s in found] for scheme, found in servers.items()}
    print(json.dumps({"ports": ports, "ca": str(folder / "ca.pem")}), flush=True)
    stdin_closed: asyncio.Future[None] = loop.create_future()

    def readable() -> None:  # the parent closed our stdin (or died): time to go
        if not stdin_closed.done():
            stdin_closed.set_result(None)

    loop.add_reader(sys.stdin.fileno(), readable)
    await stdin_closed
    for found in servers.values():
        for server in found:
            server.close()


def serve(folder: Path) -> None:
    """Serve the sites until stdin closes (the body of ``python -m bench.health_sites DIR``)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    asyncio.run(_serve(folder))


# -- the parent's handle ------------------------------------------------------------------


class LocalSites:
    """The sites' process, for a ``with`` block: ``targets`` lists N sites of one scheme
    (spread over the ports), ``ca_file`` is the CA to trust for https, ``cpu_seconds`` the
    CPU the server has used so far."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._process: subprocess.Popen[str] | None = None
        self.ports: dict[str, list[int]] = {}
        self.ca_file = ""

    def __enter__(self) -> LocalSites:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.health_sites", str(self.folder)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        ready = self._process.stdout.readline()
        if not ready:
            self._process.wait(10)
            raise RuntimeError(f"the sites' process exited ({self._process.returncode}) before serving")
        found = json.loads(ready)
        self.ports, self.ca_file = found["ports"], found["ca"]
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        process = self._process
        if process is None:
            return
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def targets(self, scheme: str, count: int, timeout: float) -> list[dict[str, Any]]:
        """``count`` sites of ``scheme``: url, name, expect_text and timeout of each."""
        ports = self.ports[scheme]
        return [
            {
                "url": f"{scheme}://{HOST}:{ports[i % len(ports)]}/site/{i}",
                "name": f"site {i}",
                "expect_text": marker(i),
                "timeout": timeout,
            }
            for i in range(count)
        ]

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the sites' process so far (Linux /proc)."""
        assert self._process is not None
        stat = Path(f"/proc/{self._process.pid}/stat").read_text()
        fields = stat.rpartition(")")[2].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat
        return ticks / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
