"""Where one invocation stops fitting: Lambda's 15 minutes, and EC2's API throttling.

EC2 throttles each API with a token bucket per account and region (request rate limiting):
non-mutating (Describe*) actions burst 100 and refill 20 per second; mutating actions burst 200
and refill 5 per second. Source: https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html
(also https://docs.aws.amazon.com/AWSEC2/latest/APIReference/throttling.html).

A run of n calls to one API, each taking ``latency`` seconds one after the other, needs at least
max(n x latency, (n - burst) / refill) seconds for that API. Calls per operation grow linearly
with the fleet (measured at the largest size, then extrapolated). The latencies are assumptions
(typical same-region round trips), not measurements; the throttling bound does not depend on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from bench.common import Run

LAMBDA_BUDGET: Final = 900 - 20  # Lambda's maximum timeout less the automations' reporting reserve
NON_MUTATING: Final = (100, 20.0)  # (burst, refill per second)
MUTATING: Final = (200, 5.0)
# Assumed seconds per call (big pages and metric queries are slower than small writes).
LATENCY: Final[dict[str, float]] = {
    "ec2.DescribeInstances": 1.0,
    "ec2.DescribeSnapshots": 1.0,
    "ec2.DescribeVolumes": 0.5,
    "ec2.DescribeImages": 0.5,
    "cloudwatch.GetMetricData": 1.0,
    "ssm.DescribeInstanceInformation": 0.2,
    "ssm.SendCommand": 0.2,
    "ssm.ListCommandInvocations": 0.3,
    "ssm.DescribeInstancePatchStates": 0.2,
}
DEFAULT_LATENCY: Final = 0.1


def bucket(operation: str) -> tuple[int, float] | None:
    service, name = operation.split(".", 1)
    if service != "ec2":
        return None
    return NON_MUTATING if name.startswith("Describe") else MUTATING


def seconds_for(operation: str, calls: float) -> float:
    latency = LATENCY.get(operation, DEFAULT_LATENCY)
    limit = bucket(operation)
    paced = max(0.0, (calls - limit[0]) / limit[1]) if limit else 0.0
    return max(calls * latency, paced)


@dataclass(frozen=True)
class Limits:
    automation: str
    per_unit: dict[str, float]  # calls per fleet unit, per operation
    throttled_from: tuple[int, str] | None  # (fleet size, operation) where a bucket runs dry
    lambda_limit: int | None  # fleet size where one invocation needs more than LAMBDA_BUDGET

    def seconds(self, size: int) -> float:
        return sum(seconds_for(op, rate * size) for op, rate in self.per_unit.items())


def of(run: Run, ceiling: int = 10_000_000) -> Limits:
    per_unit = {op: n / run.size for op, n in run.calls.items()}
    throttled: tuple[int, str] | None = None
    for op, rate in per_unit.items():
        limit = bucket(op)
        if limit and rate > 0:
            size = int(limit[0] / rate) + 1
            if throttled is None or size < throttled[0]:
                throttled = (size, op)
    limits = Limits(run.automation, per_unit, throttled, None)
    low, high = 1, ceiling
    if limits.seconds(high) <= LAMBDA_BUDGET:
        return limits
    while low < high:  # the smallest size over budget
        mid = (low + high) // 2
        if limits.seconds(mid) > LAMBDA_BUDGET:
            high = mid
        else:
            low = mid + 1
    return Limits(run.automation, per_unit, throttled, low)
