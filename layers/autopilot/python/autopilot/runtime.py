"""Time budget of one invocation: stop starting new work before Lambda's timeout."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Deadline:
    """Seconds left in this invocation, keeping ``reserve`` seconds for reporting."""

    remaining_at_start: float
    reserve: float = 20.0
    _start: float = field(default_factory=time.monotonic)

    @classmethod
    def from_context(cls, context: Any, reserve: float = 20.0, fallback: float = 900.0) -> Deadline:
        getter = getattr(context, "get_remaining_time_in_millis", None)
        remaining = getter() / 1000.0 if callable(getter) else fallback
        return cls(remaining_at_start=remaining, reserve=reserve)

    def remaining(self) -> float:
        """Seconds left for work (already less the reserve); never negative."""
        return max(0.0, self.remaining_at_start - self.reserve - (time.monotonic() - self._start))

    def expired(self) -> bool:
        return self.remaining() <= 0.0
