"""What every call-count benchmark shares: a fake, offline AWS environment, moto fixes for
fleet sizes moto was not written for, and the record of one measured run.

Nothing here can reach AWS: the credentials are fake, every client is created inside
``moto.mock_aws`` and any endpoint override from the caller's environment is removed.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
from moto import mock_aws
from moto.core.responses import ActionResult
from moto.ec2.models.core import TaggedEC2Resource
from moto.ec2.responses.elastic_block_store import ElasticBlockStore
from moto.ec2.responses.instances import InstanceResponse
from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix

from autopilot import aws
from autopilot.recorder import CallRecorder

REGION = "eu-west-1"
ACCOUNT = "123456789012"  # moto's default account
STACK = "ops-autopilot-bench"
ROOT = Path(__file__).resolve().parent.parent


def offline_environment() -> None:
    """Fake credentials and quiet Powertools, set before any client exists."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        os.environ.pop(name, None)
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "bench-not-a-key",
            "AWS_SECRET_ACCESS_KEY": "bench-not-a-secret",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "POWERTOOLS_METRICS_NAMESPACE": "OpsAutopilot",
            "POWERTOOLS_METRICS_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": "ERROR",
            "POWERTOOLS_SERVICE_NAME": "bench",
        }
    )


# ---- moto at fleet scale -------------------------------------------------------------------
# moto answers DescribeSnapshots and DescribeVolumes in one page whatever MaxResults says, and
# pages DescribeInstances by reservation (EC2 counts instances), so these wrappers make them
# page like EC2 (at most the API's maximum per page); the page counts are then measured.
# moto also finds each resource's tags by scanning every tag of the account (quadratic: minutes
# for 10,000 snapshots); the lookup becomes a dict access with the same result.


def _pager(original: Callable[[Any], Any], key: str, maximum: int) -> Callable[[Any], Any]:
    def paged(self: Any) -> Any:
        result = original(self)
        items = result.result[key]
        size = min(int(self._get_param("MaxResults") or maximum), maximum)
        start = int(self._get_param("NextToken") or 0)
        page: dict[str, Any] = {key: items[start : start + size]}
        if start + size < len(items):
            page["NextToken"] = str(start + size)
        return type(result)(page)

    return paged


def _describe_instances_by_instance(self: Any) -> Any:
    """moto's DescribeInstances without ids, paged by instance (up to 1,000) as EC2 does."""
    if self._get_param("InstanceIds", []) or not self._get_param("MaxResults"):
        return _original_describe_instances(self)
    self.error_on_dryrun()
    reservations = self.ec2_backend.describe_instances(filters=self._filters_from_querystring())
    items = [(r, i) for r in reservations for i in r.instances]
    size = min(int(self._get_param("MaxResults")), 1000)
    start = int(self._get_param("NextToken") or 0)
    page: list[Any] = []
    for reservation, instance in items[start : start + size]:
        if not page or page[-1].id != reservation.id:
            part = copy.copy(reservation)
            part.instances = []
            page.append(part)
        page[-1].instances.append(instance)
    more = start + size < len(items)
    return ActionResult({"Reservations": page, "NextToken": str(start + size) if more else None})


_original_describe_instances = InstanceResponse.describe_instances


def _indexed_get_tags(self: Any) -> list[dict[str, str]]:
    tags = self.ec2_backend.tags.get(self.id, {}) if self.id else {}
    kind = EC2_PREFIX_TO_RESOURCE.get(get_prefix(self.id), "") if self.id else ""
    return [{"resource_id": self.id, "key": k, "value": v, "resource_type": kind} for k, v in tags.items()]


def sample_event(path: Path) -> dict[str, Any]:
    """A sample event from events/ as delivered now (demo.sandbox.sample_event: its time the
    clock's, since the runner refuses events far from its clock)."""
    from demo.sandbox import ROOT as DEMO_ROOT
    from demo.sandbox import sample_event as delivered_now

    return delivered_now(str(path.resolve().relative_to(DEMO_ROOT / "events")))


@contextmanager
def sandbox() -> Iterator[None]:
    """An empty in-process moto account with the scale fixes above; fresh clients."""
    aws.reset_clients()
    patches: list[Any] = [
        mock.patch.object(
            ElasticBlockStore,
            "describe_snapshots",
            _pager(ElasticBlockStore.describe_snapshots, "Snapshots", 1000),
        ),
        mock.patch.object(
            ElasticBlockStore, "describe_volumes", _pager(ElasticBlockStore.describe_volumes, "Volumes", 500)
        ),
        mock.patch.object(InstanceResponse, "describe_instances", _describe_instances_by_instance),
        mock.patch.object(TaggedEC2Resource, "get_tags", _indexed_get_tags),
    ]
    with mock_aws():
        for p in patches:
            p.start()
        try:
            yield
        finally:
            for p in reversed(patches):
                p.stop()
            aws.reset_clients()


def outbox_table(name: str = "bench-outbox") -> str:
    """The stack's outbox table (pk, sk; on demand) in the sandbox, for the runner."""
    return str(
        boto3.client("dynamodb", region_name=REGION).create_table(
            TableName=name,
            AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k in ("pk", "sk")],
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )["TableDescription"]["TableName"]
    )


class SimulatedClock:
    """Time that passes only when something sleeps: pacing and modelled latencies cost no wall
    time, and the seconds they add up to are exact (``now``)."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class LambdaContext:
    """The Lambda context a bench invokes a handler with: this account's function, and
    ``millis`` of time left (each bench gives its run the time it may take)."""

    function_name = "bench"
    memory_limit_in_mb = 256
    invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:bench"

    def __init__(self, millis: int, request_id: str = "bench") -> None:
        self.millis = millis
        self.aws_request_id = request_id

    def get_remaining_time_in_millis(self) -> int:
        return self.millis


# ---- one measured run ----------------------------------------------------------------------


@dataclass
class Run:
    """One invocation (or one sweep) of an automation at one fleet size."""

    automation: str
    size: int
    unit: str  # what ``size`` counts, e.g. "running instances"
    calls: Counter[str]
    minimum: dict[str, int]  # the least calls per operation this size needs (see each module)
    seconds: float  # wall time in moto, in this process: a trend, not AWS's latency
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    @property
    def minimum_total(self) -> int:
        return sum(self.minimum.values())

    @property
    def ratio(self) -> float:
        return self.total / self.minimum_total if self.minimum_total else math.inf

    def over(self) -> dict[str, tuple[int, int]]:
        """Operations called more often than their minimum: {op: (measured, minimum)}."""
        ops = set(self.calls) | set(self.minimum)
        return {
            op: (self.calls.get(op, 0), self.minimum.get(op, 0))
            for op in sorted(ops)
            if self.calls.get(op, 0) != self.minimum.get(op, 0)
        }


def metrics_sent(result: dict[str, Any]) -> int:
    """Custom metrics a completed run with this handler result sent (autopilot.runner._emit):
    Checked always (its samples are the runs completed), Changed, Skipped and Failed when not
    zero, and the automation's ``Automation.metrics`` when not zero or in ``always_sent``."""
    import importlib

    from autopilot.runner import COMPLETED_METRIC, STANDARD_METRICS

    automation = importlib.import_module(f"{result['automation']}.app").AUTOMATION
    sendable = set(STANDARD_METRICS) | automation.metrics
    return sum(
        1
        for name, value in result.items()
        if name in sendable and (value or name == COMPLETED_METRIC or name in automation.always_sent)
    )


@contextmanager
def measured() -> Iterator[tuple[CallRecorder, list[float]]]:
    """Record every call of the automation's clients and the wall time of the block."""
    elapsed: list[float] = []
    with CallRecorder() as calls:
        started = time.perf_counter()
        try:
            yield calls, elapsed
        finally:
            elapsed.append(time.perf_counter() - started)


def pages(items: int, per_page: int) -> int:
    """Pages a paginated list of ``items`` takes (an empty list still takes one call)."""
    return max(1, math.ceil(items / per_page))
