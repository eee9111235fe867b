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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

from autopilot import aws
from autopilot.notify import Digest, Item, plural
from autopilot.outbox import Routed

if TYPE_CHECKING:
    from autopilot.config import CommonConfig

logger = Logger(child=True)

# The IAM actions of owner-routed mail (the template's OwnerMailPolicy): the routing map, and
# SES for the runner's sending of the digests (granted only when the stack has a sender).
PERMISSIONS = frozenset({"ssm:GetParameter", "ses:SendEmail"})

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

    def recipients(self, people: Iterable[tuple[str, str | None, str | None]]) -> dict[str, str]:
        """{key: address} for the (key, owner, team) whose owner or team routes somewhere."""
        return {key: address for key, owner, team in people if (address := self.recipient(owner, team))}

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


def load(common: CommonConfig) -> Routes | None:
    """The routing map for a run with findings to route, or None when routing is off (no sender,
    or a dry run). A map that cannot be used is logged (every problem) and is empty: owners whose
    tag is an address are still reached. 1 ssm:GetParameter."""
    if not common.routes_mail:
        return None
    routes = read(common.routing_parameter)
    if routes.problems:
        logger.error(
            "routing map unusable: owner digests only for owner tags that are addresses",
            extra={"parameter": common.routing_parameter, "problems": list(routes.problems)},
        )
    return routes


def by_recipient(items: Iterable[tuple[str | None, Any]]) -> dict[str, list[Any]]:
    """Group (address or None, item) pairs by address, in first-seen order; None is dropped."""
    grouped: dict[str, list[Any]] = {}
    for address, item in items:
        if address:
            grouped.setdefault(address, []).append(item)
    return grouped


# -- owner digests ------------------------------------------------------------------------------

# The owner digests of one run are kept in its outbox entry with its intent and result (one
# DynamoDB item): past this many bytes (subject and body, before compression) the remaining
# recipients are not mailed this run - counted and named in the operators' digest, which lists
# every finding anyway.
ROUTED_BYTES = 120_000


@dataclass(frozen=True)
class Kind:
    """A kind of finding in an owner's digest: its section heading, and the subject's words for
    it (``{count}`` becomes "2 instances"; without it the words stand alone)."""

    heading: str
    told: str


@dataclass(frozen=True)
class Finding:
    """One finding for one recipient (``to``: an address, or None: the operators only), listed
    under its kind's heading as an item or as a line of text."""

    to: str | None
    kind: str
    item: Item | None = None
    line: str = ""


@dataclass(frozen=True)
class Owners:
    """A run's owner digests, and the recipients left unmailed (over :data:`ROUTED_BYTES`)."""

    mails: tuple[Routed, ...] = ()
    unmailed: tuple[str, ...] = ()

    def note(self) -> list[str]:
        """The operators' digest's line about the unmailed recipients, if any."""
        if not self.unmailed:
            return []
        shown = ", ".join(self.unmailed[:20]) + (" ..." if len(self.unmailed) > 20 else "")
        return [
            f"Owner digests not sent this run to {plural(len(self.unmailed), 'recipient')} "
            f"(one run's owner mail is limited to {ROUTED_BYTES // 1000} KB; their findings are in "
            f"this digest): {shown}."
        ]


def owner_digests(
    findings: Iterable[Finding],
    kinds: Mapping[str, Kind],
    *,
    digest: Digest,
    noun: str,
    advice: Sequence[str],
    now: datetime | None = None,
) -> Owners:
    """One digest per recipient, about their own findings only: a section per kind (in the order
    of ``kinds``), the subject counting each ("Your volumes: 2 volumes failed"). ``digest``: an
    empty one naming the automation, stack and region (copied for each recipient)."""
    mails: list[Routed] = []
    unmailed: list[str] = []
    size = 0
    for address, mine in by_recipient((f.to, f) for f in findings).items():
        own = Digest(digest.automation, digest.stack_name, digest.region)
        for key, kind in kinds.items():
            items = [f.item for f in mine if f.kind == key and f.item is not None]
            lines = [f.line for f in mine if f.kind == key and f.item is None]
            if items or lines:
                own.section(kind.heading, items or None, text=lines or None)
        own.advice = list(advice)
        counts = {key: sum(1 for f in mine if f.kind == key) for key in kinds}
        told = ", ".join(
            kind.told.format(count=plural(counts[key], noun)) for key, kind in kinds.items() if counts[key]
        )
        summary = f"ops-autopilot {digest.automation}, about your {noun}s."
        rendered = own.mail(f"Your {noun}s: {told}", summary, "info", now=now)
        if rendered is None:
            continue
        cost = len(rendered.subject.encode()) + len(rendered.body.encode())
        if size + cost > ROUTED_BYTES:
            unmailed.append(address)
            continue
        size += cost
        mails.append(Routed(address, rendered.subject, rendered.body))
    return Owners(tuple(mails), tuple(unmailed))
