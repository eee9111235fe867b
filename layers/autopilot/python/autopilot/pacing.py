"""Calls paced at what the API allows, instead of at whatever rate ends in throttling.

EC2 throttles each API with a token bucket per account and region (request rate limiting):
non-mutating actions burst 100 and refill 20 a second, mutating actions burst 200 and refill
5 a second (https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html). A run
that deletes 3,000 snapshots as fast as it can spends the bucket in the first seconds and then
lives on botocore's retries (each throttled call waits and tries again, up to 8 times) until
one outlives them. A :class:`Pacer` waits for the token instead, so the calls go at the refill
rate, none is refused, and the time a run needs is known in advance: ``(n - burst) / refill``.

The bucket's state at the start is not known: other callers share it, and the round before
this one (rounds come 10 seconds apart) left it empty. The pacer assumes it is empty, which
costs at most a burst's worth of time (40 s) and never a refused call. :data:`clock` and
:data:`sleep` are module attributes so that a benchmark can run a day of calls on a simulated
clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

# (burst, refill per second)
EC2_MUTATING = (200, 5.0)
EC2_NON_MUTATING = (100, 20.0)

clock: Callable[[], float] = time.monotonic
sleep: Callable[[float], None] = time.sleep


@dataclass
class Bucket:
    burst: int
    rate: float  # tokens a second
    tokens: float = 0.0
    at: float | None = None  # when ``tokens`` was last brought up to date; None: not yet used

    def _refill(self, now: float) -> None:
        if self.at is None:  # first use: assumed empty (others, or the last round, used it)
            self.tokens, self.at = 0.0, now
            return
        self.tokens = min(float(self.burst), self.tokens + (now - self.at) * self.rate)
        self.at = now

    def wait(self, now: float) -> float:
        """Seconds until a token is there (0 if one is)."""
        self._refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate


@dataclass
class Pacer:
    """One bucket per API operation name."""

    limits: dict[str, tuple[int, float]]
    buckets: dict[str, Bucket] = field(default_factory=dict)
    waited: float = 0.0  # seconds slept, for the run's log line

    def ready(self, operation: str) -> bool:
        """Whether a token of ``operation`` is there now (taking it would not wait)."""
        limit = self.limits.get(operation)
        if limit is None:
            return True
        return self.buckets.setdefault(operation, Bucket(*limit)).wait(clock()) == 0.0

    def take(self, operation: str, budget: float) -> bool:
        """Wait for a token of ``operation`` and take it; False (nothing taken, no sleep) when
        the wait would be longer than ``budget`` seconds (the invocation's time left)."""
        limit = self.limits.get(operation)
        if limit is None:
            return True
        bucket = self.buckets.setdefault(operation, Bucket(*limit))
        wait = bucket.wait(clock())
        if wait > budget:
            return False
        if wait > 0:
            sleep(wait)
            self.waited += wait
            bucket.wait(clock())
        bucket.tokens -= 1
        return True
