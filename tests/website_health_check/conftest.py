"""Fixtures of the health check tests: local web sites on 127.0.0.1 (and TLS ones with a fresh
CA), the function's environment in moto, and the handler invoked as scheduled runs."""

from __future__ import annotations

import datetime as dt
import ssl
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from autopilot import aws
from conftest import REGION, FakeContext
from demo.websites import SiteHandler

PARAM = "/ops-autopilot-test/website-health-check/sites"
STATE_TABLE = "health-state"


def create_state_table(name: str = STATE_TABLE) -> str:
    """The site-state table (template.yaml WebsiteHealthCheckStateTable), in moto."""
    return str(
        boto3.client("dynamodb", region_name=REGION).create_table(
            TableName=name,
            AttributeDefinitions=[{"AttributeName": "url", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "url", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )["TableDescription"]["TableName"]
    )


def set_sites(text: str) -> None:
    boto3.client("ssm", region_name=REGION).put_parameter(
        Name=PARAM, Value=text, Type="String", Overwrite=True
    )


def read_states() -> dict[str, str]:
    """url -> reported status, as the state table holds them."""
    items = boto3.client("dynamodb", region_name=REGION).scan(TableName=STATE_TABLE)["Items"]
    return {
        i["url"]["S"]: i.get("reported", {}).get("S", "") for i in items if not i["url"]["S"].startswith("#")
    }


@pytest.fixture
def sites() -> Callable[[str], None]:
    """``sites("https://a, https://b")``: the site list the next run reads (the SSM parameter)."""
    return set_sites


@pytest.fixture
def states() -> Callable[[], dict[str, str]]:
    """``states()``: url -> reported status, as the state table holds them now."""
    return read_states


@pytest.fixture
def health_env(stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Every variable the function gets: template Globals (stack_env) and its own."""
    env = {
        "POWERTOOLS_SERVICE_NAME": "website_health_check",
        "SITES_PARAMETER": PARAM,
        "STATE_TABLE": create_state_table(),
        "FAILURES_BEFORE_DOWN": "2",
        "CERT_WARNING_DAYS": "14",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return {**stack_env, **env}


Invoke = Callable[..., dict[str, Any]]


@pytest.fixture
def scheduled(load_event: Callable[[str], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """A new scheduled event: its own id, as every occurrence of the schedule has."""

    def make() -> dict[str, Any]:
        event = load_event("website_health_check/eventbridge.scheduled")
        event["id"] = str(uuid.uuid4())
        return event

    return make


@pytest.fixture
def invoke(health_env: dict[str, str], scheduled: Callable[[], dict[str, Any]]) -> Invoke:
    """``invoke()``: the next scheduled run (a new event id); ``invoke(event)``: that event
    (the same event again is a retry or a duplicate delivery)."""
    from website_health_check import app

    def run(event: dict[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = app.lambda_handler(event or scheduled(), FakeContext())  # type: ignore[arg-type]
        return result

    return run


Kill = Callable[[str, int], Callable[[], None]]


@pytest.fixture
def kill_at(monkeypatch: pytest.MonkeyPatch) -> Kill:
    """``revive = kill_at("PutItem", 2)``: the function "dies" at the 2nd dynamodb PutItem on
    the state table: that call raises (it never reaches DynamoDB), as a timeout or a crash at
    that instant would, and the error is nothing the code catches. ``revive()`` ends it."""

    def kill(operation: str, nth: int) -> Callable[[], None]:
        seen = [0]

        def hook(service: str, op: str, params: dict[str, Any]) -> None:
            if service == "dynamodb" and op == operation and params.get("TableName") == STATE_TABLE:
                seen[0] += 1
                if seen[0] == nth:
                    raise RuntimeError(f"killed at {operation} #{nth}")

        monkeypatch.setattr(aws, "call_hooks", [*aws.call_hooks, hook])
        return lambda: aws.call_hooks.remove(hook)

    return kill


def _serve(server: ThreadingHTTPServer) -> Iterator[ThreadingHTTPServer]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def web() -> Iterator[ThreadingHTTPServer]:
    """An HTTP server on 127.0.0.1; ``f"http://127.0.0.1:{web.server_port}/ok"``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), SiteHandler)
    server.daemon_threads = True
    yield from _serve(server)


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_tls_files(directory: Path, days_valid: int) -> tuple[Path, Path, Path]:
    """A CA and a localhost/127.0.0.1 certificate expiring in ``days_valid`` days."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ops-autopilot test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days_valid))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ca_path, cert_path, key_path


@pytest.fixture
def tls_web(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ThreadingHTTPServer]:
    """An HTTPS server whose certificate expires in 3 days, trusted through REQUESTS_CA_BUNDLE."""
    ca, cert, key = make_tls_files(tmp_path, days_valid=3)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca))
    server = ThreadingHTTPServer(("127.0.0.1", 0), SiteHandler)
    server.daemon_threads = True
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    yield from _serve(server)


@pytest.fixture
def untrusted_tls_web(tmp_path: Path) -> Iterator[ThreadingHTTPServer]:
    """An HTTPS server whose CA nobody trusts (REQUESTS_CA_BUNDLE not set)."""
    _, cert, key = make_tls_files(tmp_path, days_valid=90)
    server = ThreadingHTTPServer(("127.0.0.1", 0), SiteHandler)
    server.daemon_threads = True
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    yield from _serve(server)
