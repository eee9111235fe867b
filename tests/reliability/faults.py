"""Fault injection into the AWS calls the automations make.

Every client made by ``autopilot.aws.client`` gets three botocore handlers, registered first so
they answer before moto (or a Stubber) does:

- ``before-parameter-build``: counts the logical call and remembers its API parameters;
- ``before-call``: per-resource (permanent) failures, e.g. ``IncorrectInstanceState`` for one
  instance id, answered without retries exactly as AWS would refuse it;
- ``before-send``: per-attempt transient faults (throttling at a seeded rate, read timeouts,
  5xx), so botocore's standard retry mode really retries them; and, optionally, a fake answer
  for operations moto lacks (SSM's DescribeInstanceInformation, ...).

An injected attempt never reaches moto, so a retried mutating call is applied exactly once.
"""

from __future__ import annotations

import io
import json
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError

from autopilot import aws

THROTTLE_CODES = {
    "ec2": "RequestLimitExceeded",
    "json": "ThrottlingException",
    "query": "Throttling",
    "smithy-rpc-v2-cbor": "Throttling",
}
TRANSIENT_INJECTED = {"RequestLimitExceeded", "ThrottlingException", "Throttling", "ServiceUnavailable"}

# A fake backend for operations moto does not implement: (service, operation) -> answer(params).
FakeAnswer = Callable[[dict[str, Any]], dict[str, Any]]


class _Raw(io.BytesIO):
    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.getvalue()


def _cbor_text(text: str) -> bytes:
    data = text.encode()
    head = bytes([0x60 + len(data)]) if len(data) < 24 else bytes([0x78, len(data)])
    return head + data


def error_body(protocol: str, code: str, message: str) -> tuple[bytes, dict[str, str]]:
    """An AWS error response body in the service's wire protocol."""
    if protocol == "ec2":
        body = (
            f"<?xml version='1.0' encoding='UTF-8'?><Response><Errors><Error><Code>{code}</Code>"
            f"<Message>{message}</Message></Error></Errors><RequestID>fault</RequestID></Response>"
        )
        return body.encode(), {"content-type": "text/xml"}
    if protocol == "query":
        body = (
            "<ErrorResponse><Error><Type>Sender</Type>"
            f"<Code>{code}</Code><Message>{message}</Message></Error>"
            "<RequestId>fault</RequestId></ErrorResponse>"
        )
        return body.encode(), {"content-type": "text/xml"}
    if protocol == "smithy-rpc-v2-cbor":
        body = b"\xa2" + _cbor_text("__type") + _cbor_text(code) + _cbor_text("message") + _cbor_text(message)
        return body, {"content-type": "application/cbor", "smithy-protocol": "rpc-v2-cbor"}
    return json.dumps({"__type": code, "message": message}).encode(), {
        "content-type": "application/x-amz-json-1.1"
    }


@dataclass(frozen=True)
class ResourceFault:
    """Refuse ``service.operation`` with ``code`` whenever ``match(params)`` is true."""

    service: str
    operation: str
    code: str
    match: Callable[[dict[str, Any]], bool]


def names(resource_id: str) -> Callable[[dict[str, Any]], bool]:
    """A matcher: the call's parameters mention ``resource_id`` anywhere."""

    def match(params: dict[str, Any]) -> bool:
        return resource_id in json.dumps(params, default=str)

    return match


@dataclass
class Stats:
    calls: Counter[str] = field(default_factory=Counter)  # logical API calls
    attempts: Counter[str] = field(default_factory=Counter)  # HTTP attempts (calls + retries)
    injected: Counter[str] = field(default_factory=Counter)  # faults injected, by kind
    completed: int = 0  # calls that succeeded
    refused: int = 0  # calls answered with an injected per-resource error
    lost: int = 0  # calls whose final answer was an injected transient fault

    def figures(self) -> dict[str, int]:
        calls, attempts = sum(self.calls.values()), sum(self.attempts.values())
        return {
            "operations_attempted": calls,
            "http_attempts": attempts,
            "retried": attempts - calls,
            "faults_injected": sum(self.injected.values()),
            "completed": self.completed,
            "refused_per_resource": self.refused,
            "lost": self.lost,
        }


@dataclass
class FaultInjector:
    seed: int = 9
    throttle_rate: float = 0.0
    timeout_rate: float = 0.0
    server_error_rate: float = 0.0
    resource_faults: list[ResourceFault] = field(default_factory=list)
    fakes: dict[tuple[str, str], FakeAnswer] = field(default_factory=dict)
    stats: Stats = field(default_factory=Stats)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)  # noqa: S311 - reproducible faults, not crypto
        self._lock = threading.Lock()
        self._local = threading.local()
        self._wired: set[int] = set()
        self._forced: dict[str, list[str]] = {}

    # -- wiring ------------------------------------------------------------------------------
    def install(self, monkeypatch: pytest.MonkeyPatch) -> FaultInjector:
        original = aws.client

        def client(service: str, region: str | None = None) -> Any:
            made = original(service, region)
            if id(made) not in self._wired:
                self._wired.add(id(made))
                events = made.meta.events
                events.register_first("before-parameter-build", self._on_call)
                events.register_first("before-call", self._on_before_call)
                events.register_first("before-send", self._on_send)
                events.register("after-call", self._on_after_call)
            return made

        monkeypatch.setattr(aws, "client", client)
        return self

    # -- handlers ----------------------------------------------------------------------------
    def _on_call(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        name = f"{model.service_model.service_name}.{model.name}"
        with self._lock:
            self.stats.calls[name] += 1
        self._local.current = (
            model.service_model.service_name,
            model.name,
            json.loads(json.dumps(params, default=str)),
        )

    def _on_before_call(self, model: Any, **_: Any) -> Any:
        service, operation, params = self._local.current
        for fault in self.resource_faults:
            if (fault.service, fault.operation) == (service, operation) and fault.match(params):
                with self._lock:
                    self.stats.injected[fault.code] += 1
                    self.stats.attempts[f"{service}.{operation}"] += 1
                    self.stats.refused += 1
                parsed = {
                    "Error": {"Code": fault.code, "Message": f"injected {fault.code}"},
                    "ResponseMetadata": {"HTTPStatusCode": 400},
                }
                return AWSResponse("https://fault.invalid", 400, {}, _Raw(b"")), parsed
        return None

    def _on_send(self, request: Any, **_: Any) -> Any:
        response = self._answer(request)
        if response is not None:
            # botocore still calls every later before-send handler (moto's too) and keeps the
            # first answer: point the request nowhere so that moto does not also carry it out.
            request.url = "https://fault-injected.invalid/"
        return response

    def _answer(self, request: Any) -> Any:
        service, operation, params = self._local.current
        name = f"{service}.{operation}"
        with self._lock:
            self.stats.attempts[name] += 1
            roll = self._random.random()
        protocol = _protocol(service, request)
        # The first call of every operation meets each enabled fault kind once (so every kind
        # of call is really retried); after that, faults come at the seeded rates.
        forced = self._forced.setdefault(
            name,
            [k for k, rate in (("throttle", self.throttle_rate), ("timeout", self.timeout_rate),
                               ("5xx", self.server_error_rate)) if rate > 0],
        )  # fmt: skip
        kind = forced.pop(0) if forced else None
        if kind == "timeout":
            roll = self.throttle_rate
        elif kind == "5xx":
            roll = self.throttle_rate + self.timeout_rate
        if kind == "throttle" or roll < self.throttle_rate:
            return self._error(request, protocol, 400, THROTTLE_CODES.get(protocol, "Throttling"), "throttle")
        roll -= self.throttle_rate
        if roll < self.timeout_rate:
            with self._lock:
                self.stats.injected["timeout"] += 1
            raise ReadTimeoutError(endpoint_url=request.url)
        roll -= self.timeout_rate
        if roll < self.server_error_rate:
            return self._error(request, protocol, 503, "ServiceUnavailable", "5xx")
        fake = self.fakes.get((service, operation))
        if fake is not None:
            body = json.dumps(fake(params), default=str).encode()
            return AWSResponse(request.url, 200, {"content-type": "application/x-amz-json-1.1"}, _Raw(body))
        return None

    def _error(self, request: Any, protocol: str, status: int, code: str, kind: str) -> AWSResponse:
        with self._lock:
            self.stats.injected[kind] += 1
        body, headers = error_body(protocol, code, f"injected {kind}")
        return AWSResponse(request.url, status, headers, _Raw(body))

    def _on_after_call(self, http_response: Any, parsed: dict[str, Any], **_: Any) -> None:
        with self._lock:
            if http_response.status_code < 300:
                self.stats.completed += 1
            elif parsed.get("Error", {}).get("Code") in TRANSIENT_INJECTED:
                self.stats.lost += 1


def _protocol(service: str, request: Any) -> str:
    """The wire protocol this client really speaks (botocore picks one of a service's list)."""
    content_type = (
        str(request.headers.get("Content-Type", b""), "utf-8")
        if isinstance(request.headers.get("Content-Type"), bytes)
        else str(request.headers.get("Content-Type", ""))
    )
    if "cbor" in content_type:
        return "smithy-rpc-v2-cbor"
    if "json" in content_type:
        return "json"
    return "ec2" if service == "ec2" else "query"
