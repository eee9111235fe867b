"""Who hears about a resource: its owner first (PRODUCT.md "Beyond one topic").

A finding about a resource (to be stopped, stopped, ...) goes to one address, found in order:

1. the owner tag's value, when it is an e-mail address (``Owner=alice@example.com``);
2. the routing map: the owner tag's value, else the team tag's (``Team``), as a key of the map
   (``{"alice": "alice@example.com", "payments": "payments-oncall@example.com"}``);
3. nobody: the finding is in the operators' digest (the stack topic) only - as every finding is.

The map is the SSM parameter ``/<stack>/mail-routing`` (a JSON object, read each run that has
findings to route; edits apply at the next run). A malformed map is reported and ignored
entirely (owners with an e-mail tag are still reached): no entry of it is guessed at.

Each recipient gets **one digest per run** (``Routed``: built by the automation's report,
sent by the runner through Amazon SES after the operators' digest is recorded, and marked sent
per recipient only after SES accepted it: ``autopilot.runner``). Routing is off - everything
to the stack topic, as before - unless the stack has a sender (``MAIL_FROM``: an SES verified
identity).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from autopilot import aws

# An address SES can send to: one @, a dot in the domain, no spaces or angle brackets. Not RFC
# 5322 (a tag is no place for quoted local parts); anything else is a name for the map.
_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
MAX_ADDRESS = 254


def is_email(value: str | None) -> bool:
    return bool(value) and len(str(value)) <= MAX_ADDRESS and _EMAIL.match(str(value).strip()) is not None


class RoutingError(ValueError):
    """The routing map cannot be used; ``problems`` says every reason."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Routes:
    """The routing map (owner or team -> address) and why it may be empty."""

    addresses: Mapping[str, str] = field(default_factory=dict)
    problems: tuple[str, ...] = ()  # a map that could not be used (reported, then ignored)

    def recipient(self, owner: str | None, team: str | None = None) -> str | None:
        """The address for a resource with this owner and team tag, or None (operators only)."""
        owner = (owner or "").strip()
        if is_email(owner):
            return owner.lower()
        for key in (owner, (team or "").strip()):
            if key and key in self.addresses:
                return self.addresses[key]
        return None

    @classmethod
    def parse(cls, text: str) -> Routes:
        """The map from its parameter's text; raises RoutingError naming every problem."""
        text = text.strip()
        if not text:
            return cls()
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as err:
            raise RoutingError([f"not valid JSON: {err.msg} at line {err.lineno}"]) from None
        if not isinstance(raw, dict):
            raise RoutingError(
                ['must be a JSON object of owner or team -> address, like {"alice": "a@x.com"}']
            )
        problems = [
            f"{key!r}: {value!r} is not an e-mail address"
            for key, value in raw.items()
            if not isinstance(value, str) or not is_email(value)
        ]
        problems += [f"{key!r}: an empty key" for key in raw if not str(key).strip()]
        if problems:
            raise RoutingError(problems)
        return cls({str(k).strip(): str(v).strip().lower() for k, v in raw.items()})


def read(parameter: str) -> Routes:
    """The routing map in ``parameter`` (1 ssm:GetParameter); a missing parameter is an empty
    map, a malformed one an empty map that carries its problems (and is logged by the caller)."""
    if not parameter:
        return Routes()
    ssm = aws.client("ssm")
    try:
        text = str(ssm.get_parameter(Name=parameter)["Parameter"]["Value"])
    except ssm.exceptions.ParameterNotFound:
        return Routes()
    try:
        return Routes.parse(text)
    except RoutingError as err:
        return Routes(problems=tuple(err.problems))


def by_recipient(items: Iterable[tuple[str | None, Any]]) -> dict[str, list[Any]]:
    """Group (address or None, item) pairs by address, in first-seen order; None is dropped."""
    grouped: dict[str, list[Any]] = {}
    for address, item in items:
        if address:
            grouped.setdefault(address, []).append(item)
    return grouped
