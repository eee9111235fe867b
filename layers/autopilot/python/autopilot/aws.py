"""One way to talk to AWS: shared retry configuration, cached clients, paging, batching.

All clients are created through :func:`client` so that they share :data:`BOTO_CONFIG`
(standard retry mode: throttling and transient errors are retried with backoff, permanent
errors are not) and so that :mod:`autopilot.recorder` can count every call they make.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

T = TypeVar("T")

BOTO_CONFIG = Config(  # type: ignore[call-arg]  # user_agent_appid: botocore>=1.31, not in stubs
    retries={"mode": "standard", "total_max_attempts": 8},
    connect_timeout=5,
    read_timeout=30,
    user_agent_appid="ops-autopilot",
)

# Error codes that are worth another try later; everything else is permanent for this run.
TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "TooManyRequestsException",
        "ServiceUnavailable",
        "Unavailable",
        "InternalError",
        "InternalFailure",
        "RequestTimeout",
        "RequestTimeoutException",
        "ConcurrentSnapshotLimitExceeded",
        "SnapshotCreationPerVolumeRateExceeded",
    }
)

_clients: dict[tuple[str, str | None], Any] = {}
# Hooks called as hook(service, operation, params) before every API call of every client.
call_hooks: list[Callable[[str, str, dict[str, Any]], None]] = []


def _before_call(model: Any, params: dict[str, Any], **_: Any) -> None:
    if call_hooks:
        service = model.service_model.service_name
        for hook in list(call_hooks):
            hook(service, model.name, params)


def client(service: str, region: str | None = None) -> Any:
    """A cached boto3 client with the shared config and call hooks."""
    key = (service, region)
    if key not in _clients:
        new = boto3.client(service, region_name=region, config=BOTO_CONFIG)  # type: ignore[call-overload]
        new.meta.events.register("before-parameter-build", _before_call)
        _clients[key] = new
    return _clients[key]


def reset_clients() -> None:
    """Forget cached clients (tests and the demo switch endpoints between runs)."""
    _clients.clear()


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Yield lists of at most ``size`` items, in order."""
    if size < 1:
        raise ValueError("size must be at least 1")
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


def paginate(aws_client: Any, operation: str, result_key: str, **kwargs: Any) -> Iterator[Any]:
    """Every item of ``result_key`` (a JMESPath, e.g. ``Reservations[].Instances[]``) over all pages."""
    paginator = aws_client.get_paginator(operation)
    yield from paginator.paginate(**kwargs).search(result_key)


def running_instances(page_size: int = 1000) -> Iterator[dict[str, Any]]:
    """Every running EC2 instance of the region (raw DescribeInstances items), filtered
    server-side, ``page_size`` per page (the API's maximum is 1000)."""
    yield from paginate(
        client("ec2"),
        "describe_instances",
        "Reservations[].Instances[]",
        Filters=[{"Name": "instance-state-name", "Values": ["running"]}],
        PaginationConfig={"PageSize": page_size},
    )


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ClientError, or the exception's class name."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "Unknown"))
    return type(exc).__name__


def is_transient(exc: BaseException) -> bool:
    return error_code(exc) in TRANSIENT_CODES
