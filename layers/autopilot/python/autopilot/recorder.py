"""Count AWS API calls by operation (tests, benchmarks, the demo).

    with CallRecorder() as calls:
        run_the_automation()
    assert calls.count("ec2", "CreateTags") == 1

It hooks every client made by :func:`autopilot.aws.client`, so it sees exactly the calls
the automations make, whether they go to moto, a local moto server or AWS.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from autopilot import aws


@dataclass(frozen=True)
class Call:
    service: str
    operation: str
    params: dict[str, Any]


@dataclass
class CallRecorder:
    calls: list[Call] = field(default_factory=list)

    def _hook(self, service: str, operation: str, params: dict[str, Any]) -> None:
        self.calls.append(Call(service, operation, copy.deepcopy(params)))

    def __enter__(self) -> CallRecorder:
        aws.call_hooks.append(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        aws.call_hooks.remove(self._hook)

    def by_operation(self) -> Counter[str]:
        return Counter(f"{c.service}.{c.operation}" for c in self.calls)

    def count(self, service: str | None = None, operation: str | None = None) -> int:
        return sum(
            1
            for c in self.calls
            if (service is None or c.service == service) and (operation is None or c.operation == operation)
        )

    def of(self, service: str, operation: str) -> list[dict[str, Any]]:
        """The parameters of every call to one operation, in order."""
        return [c.params for c in self.calls if c.service == service and c.operation == operation]

    def mutating(self) -> list[Call]:
        """Calls that change something or send something (anything but reads)."""
        readonly = ("Describe", "List", "Get", "Receive", "Lookup", "Scan", "Query", "BatchGet", "Search")
        return [c for c in self.calls if not c.operation.startswith(readonly)]
