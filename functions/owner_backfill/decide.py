"""owner_backfill's decisions, pure (no boto3, no clock): which untagged resources to look for,
how to look for them in CloudTrail's history at the fewest LookupEvents calls, and which owner
each gets. The owner rules are owner_tagger's (owner_tagger.decide): the identity of the call
that created the resource, a volume launched with an instance gets the instance's owner, an
AMI's backing snapshot the image's, nothing when the identity names nobody.

**Where the owner comes from.** Only from CloudTrail's own record of the creation call
(LookupEvents): a tagger cannot forge it. The event must name the resource, and the resource
must have been created within CREATED_WITHIN of the call - the same test owner_tagger applies.

**The fewest calls.** LookupEvents takes one attribute per call and returns at most 50 events,
newest first, at 2 requests a second per account and region. Two ways to find a resource's
creation event:
- *by event name* (RunInstances, CreateVolume, ...) over the span of the resources' creation
  times: one call per 50 events of that name, whatever the number of resources - 20 calls for
  1,000 launches;
- *by resource* (ResourceName = its id, its creation time +- CREATED_WITHIN): one call each.
Which is cheaper depends on how many other events of that name the history holds, which no call
tells in advance. :func:`next_lookup` pages by name and switches to by-resource once the pages
spent on a name equal the resources still ahead of its cursor (the ski-rental rule), unless the
density of the pages read says the rest is cheaper: never more than three times the calls of the
cheaper way, whatever the history, and near the cheaper way when the history is even.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from autopilot.events import BadEvent, EmptyEvent
from owner_tagger.decide import CREATED_WITHIN, Resolution, caller, created_by_the_call, resolve_owner
from owner_tagger.decide.identity import owner_value
from owner_tagger.event import CreationEvent
from owner_tagger.event import parse as parse_creation

HISTORY: Final = timedelta(days=90)  # what LookupEvents keeps
# A resource created this recently is owner_tagger's (CloudTrail delivers its event within about
# 15 minutes); looking for it now could miss its event, and would race the tagger.
SETTLE: Final = timedelta(minutes=15)
PAGE_MAX: Final = 50  # events per LookupEvents page
# The creation calls of each type, in the order they are paged.
FAMILIES: Final[Mapping[str, tuple[str, ...]]] = {
    "instance": ("RunInstances", "CreateFleet"),
    "volume": ("CreateVolume",),
    "snapshot": ("CreateSnapshot", "CreateSnapshots", "CopySnapshot"),
    "image": ("CreateImage", "CopyImage", "RegisterImage"),
}
NAMES: Final = tuple(name for names in FAMILIES.values() for name in names)
# Why a resource got no owner (remembered, so that it is not looked for again).
NO_EVENT = "no-event"  # no creation event in the history: made before it, or in another way
NOBODY = "nobody"  # the creation event's identity names nobody (a service, no name)
BEFORE_HISTORY = "before-history"  # created more than 90 days ago: CloudTrail keeps no event
NO_PARENT_OWNER = "parent-unowned"  # launched with an instance (or image) that has no owner
REASONS: Final[Mapping[str, str]] = {
    NO_EVENT: "no creation event in CloudTrail's 90 days of history",
    NOBODY: "the identity that created it names nobody",
    BEFORE_HISTORY: "created more than 90 days ago, before CloudTrail's history",
    NO_PARENT_OWNER: "made with an instance or image that has no owner either",
}


@dataclass(frozen=True)
class Resource:
    """An instance, volume, snapshot or AMI of this account and region, as Describe* shows it."""

    id: str
    type: str  # instance, volume, snapshot, image
    created_at: datetime | None
    owner: str | None  # its owner tag's value; None: it has none
    parent: str | None = None  # a volume: the instance it is attached to; a snapshot: its image
    group: str | None = None  # an instance's Auto Scaling group
    name: str = ""  # its Name tag

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "parent": self.parent, "name": self.name}


@dataclass(frozen=True)
class Candidates:
    """The untagged resources of a run, sorted by how their owner is found."""

    lookup: tuple[Resource, ...]  # their own creation event, in CloudTrail's history
    inherit: tuple[Resource, ...]  # made with their parent (instance or image): its owner
    before_history: tuple[Resource, ...]
    recent: int  # created in the last SETTLE: owner_tagger's


def candidates(resources: Iterable[Resource], examined: Mapping[str, str], now: datetime) -> Candidates:
    """The untagged resources not examined before, sorted (see :class:`Candidates`). A volume is
    the instance's when it was created with it (within CREATED_WITHIN), a snapshot the image's
    likewise; otherwise each is looked for by its own creation event."""
    every = {r.id: r for r in resources}
    lookup: list[Resource] = []
    inherit: list[Resource] = []
    old: list[Resource] = []
    recent = 0
    for resource in every.values():
        if resource.owner is not None or resource.id in examined:
            continue
        if resource.created_at is None or resource.created_at < now - HISTORY + SETTLE:
            old.append(resource)
            continue
        if resource.created_at > now - 2 * SETTLE:
            recent += 1
            continue
        parent = every.get(resource.parent or "")
        if parent is not None and created_by_the_call(resource.created_at, parent.created_at):
            inherit.append(resource)
        else:
            lookup.append(replace(resource, parent=None))
    return Candidates(tuple(lookup), tuple(inherit), tuple(old), recent)


# -- the lookup plan: by name while it pays, by resource once it does not ------------------


@dataclass(frozen=True)
class NameCursor:
    """How far the paging of one event name has come in this pass: every event of that name
    between ``oldest`` and the pass's end has been seen (``done``: down to ``start``)."""

    start: str | None = None  # the query's StartTime (ISO), fixed when its paging begins
    oldest: str | None = None  # the oldest event time seen so far (ISO)
    token: str | None = None  # LookupEvents' NextToken, to go on with the same query
    pages: int = 0
    done: bool = False
    # The query's EndTime (ISO) when it is not the pass's end: a token that expired between two
    # runs is replaced by a new query ending at ``oldest`` (what is newer has been seen).
    end: str | None = None

    def passed(self, resource: Resource) -> bool:
        """Whether every event that could have created ``resource`` has been seen."""
        if self.start is None or resource.created_at is None:
            return False
        window_start = resource.created_at - CREATED_WITHIN
        if window_start < datetime.fromisoformat(self.start):
            return False  # older than this query reaches
        return self.done or (self.oldest is not None and datetime.fromisoformat(self.oldest) <= window_start)


@dataclass(frozen=True)
class ByName:
    name: str
    start: datetime
    token: str | None
    end: datetime | None = None  # None: the pass's end


@dataclass(frozen=True)
class ByResource:
    resources: tuple[Resource, ...]


Lookup = ByName | ByResource


def pages_left(cursor: NameCursor, target: datetime, end: datetime) -> float:
    """The pages still to read down to ``target``, at the density of events the pages read so
    far (from ``end``, the pass's end, down to the oldest seen) showed; infinite when unknown."""
    if cursor.oldest is None or cursor.pages == 0:
        return math.inf
    oldest = datetime.fromisoformat(cursor.oldest)
    covered = (end - oldest).total_seconds()
    if covered <= 0:
        return math.inf
    return cursor.pages * max(0.0, (oldest - target).total_seconds()) / covered


def next_lookup(
    pending: Sequence[Resource], cursors: Mapping[str, NameCursor], end: datetime
) -> Lookup | None:
    """The next LookupEvents query for the resources still ``pending`` (no creation event found
    yet), or None when every one of them has been looked for in every way it could be found.

    Paging a name stops in favour of asking for each resource once the pages spent equal the
    resources still ahead - unless the pages read so far say the rest of the span is cheaper
    than that, up to twice as many pages: at most three times the calls of the cheaper way."""
    for name in NAMES:
        family = [r for r in pending if name in FAMILIES[r.type]]
        cursor = cursors.get(name, NameCursor())
        ahead = [r for r in family if not cursor.passed(r)]
        if not ahead:
            continue
        target = min(r.created_at for r in ahead if r.created_at) - CREATED_WITHIN
        if cursor.done or (
            cursor.pages >= len(ahead)
            and (cursor.pages >= 2 * len(ahead) or pages_left(cursor, target, end) >= len(ahead))
        ):
            # Paging on would cost more than asking for each of them: ask for each.
            return ByResource(tuple(ahead))
        start = datetime.fromisoformat(cursor.start) if cursor.start else target
        return ByName(name, start, cursor.token, datetime.fromisoformat(cursor.end) if cursor.end else None)
    return None


def not_found(pending: Sequence[Resource], cursors: Mapping[str, NameCursor]) -> list[Resource]:
    """The pending resources every name of whose family has passed them: no event made them."""
    return [r for r in pending if all(cursors.get(n, NameCursor()).passed(r) for n in FAMILIES[r.type])]


# -- matching events to resources, and the owners ------------------------------------------


@dataclass(frozen=True)
class Found:
    """The creation event of a resource, and the owner it names."""

    resource: Resource
    owner: Resolution
    event: Mapping[str, Any]  # name, id, time, caller: for the mail and the log


def match(
    event: CreationEvent, pending: Mapping[str, Resource], caller: Mapping[str, str] | None
) -> list[Found]:
    """The pending resources this creation event made (it names them, and they were created
    within CREATED_WITHIN of its call), each with the owner its identity names."""
    owner = resolve_owner(event.identity)
    summary = {
        "name": event.event_name,
        "id": event.event_id,
        "time": event.event_time.isoformat() if event.event_time else None,
        "caller": caller,
    }
    found: list[Found] = []
    for resource_id in event.resource_ids:
        resource = pending.get(resource_id)
        if resource is None or resource.type != event.resource_type:
            continue
        if not created_by_the_call(resource.created_at, event.event_time):
            continue  # not this call's: the event cannot give it an owner
        found.append(Found(resource, owner, summary))
    return found


@dataclass(frozen=True)
class Write:
    resource: Resource
    value: str
    source: str  # cloudtrail | group (its Auto Scaling group's owner) | instance | image
    event: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.resource.as_dict(),
            "value": self.value,
            "source": self.source,
            "event": dict(self.event),
        }


def owners(
    found: Iterable[Found], group_owner: Mapping[str, str]
) -> tuple[list[Write], list[tuple[Resource, str]]]:
    """The writes for the resources whose creation event was found, and those left without an
    owner (with the reason). An Auto Scaling launch names the service: the group's own owner
    tag is the owner when it has one (as owner_tagger does)."""
    writes: list[Write] = []
    unresolved: list[tuple[Resource, str]] = []
    for item in found:
        group_value = owner_value(group_owner.get(item.resource.group or "", ""))
        if item.owner.kind == "service" and group_value:
            writes.append(Write(item.resource, group_value, "group", item.event))
        elif item.owner.value is not None:
            writes.append(Write(item.resource, item.owner.value, "cloudtrail", item.event))
        else:
            unresolved.append((item.resource, NOBODY))
    return writes, unresolved


def inherited(
    children: Iterable[Resource], parent_owner: Mapping[str, str], parent_unowned: set[str]
) -> tuple[list[Write], list[tuple[Resource, str]], list[Resource]]:
    """Volumes and backing snapshots made with their parent: the parent's owner when it has one
    (its tag, or the one found for it in this run); no owner when the parent has been found to
    have none; else they wait for their parent (returned third)."""
    writes: list[Write] = []
    unresolved: list[tuple[Resource, str]] = []
    waiting: list[Resource] = []
    for child in children:
        parent = child.parent or ""
        value = owner_value(parent_owner.get(parent))
        if value:
            writes.append(Write(child, value, "instance" if child.type == "volume" else "image"))
        elif parent in parent_unowned:
            unresolved.append((child, NO_PARENT_OWNER))
        else:
            waiting.append(child)
    return writes, unresolved, waiting


# -- one page of the history, and the search over it ---------------------------------------


@dataclass(frozen=True)
class Page:
    """One LookupEvents answer: its events as EventBridge would have delivered them (so that
    owner_tagger's parser reads them), the oldest event time on it, and the next page's token."""

    events: list[dict[str, Any]]
    oldest: datetime | None
    token: str | None


def as_utc(value: object) -> datetime | None:
    """An aware UTC time from a datetime or ISO 8601 text (DescribeImages' CreationDate); None
    for anything else."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def page(answer: Mapping[str, Any]) -> Page:
    """A LookupEvents answer as a :class:`Page`."""
    events: list[dict[str, Any]] = []
    oldest: datetime | None = None
    for item in answer.get("Events", []):
        when = as_utc(item.get("EventTime"))
        if when is not None and (oldest is None or when < oldest):
            oldest = when
        events.append(as_delivered(item, when))
    return Page(events, oldest, answer.get("NextToken") or None)


def as_delivered(item: Mapping[str, Any], when: datetime | None) -> dict[str, Any]:
    """A history item in the shape of the EventBridge event owner_tagger parses: the record
    (CloudTrailEvent, JSON text) is the event's detail."""
    try:
        detail = json.loads(str(item.get("CloudTrailEvent") or "{}"))
    except ValueError:
        detail = {}
    detail = detail if isinstance(detail, dict) else {}
    return {
        "id": str(item.get("EventId") or ""),
        "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.ec2",
        "time": when.strftime("%Y-%m-%dT%H:%M:%SZ") if when else str(detail.get("eventTime", "")),
        "account": str(detail.get("recipientAccountId", "")),
        "region": str(detail.get("awsRegion", "")),
        "detail": detail,
    }


# fetch((attribute, value), start, end, token) -> the page, or None when the run's time is up
Fetch = Callable[[tuple[str, str], datetime, datetime, "str | None"], "Page | None"]


class TokenExpired(Exception):
    """LookupEvents refused a page token (InvalidNextTokenException)."""


@dataclass
class Search:
    """The outcome of :func:`search`: the creation events found, the resources still pending
    (the run's time ran out), those asked for by id that no event made, the calls made."""

    found: list[Found] = field(default_factory=list)
    pending: dict[str, Resource] = field(default_factory=dict)
    asked: list[Resource] = field(default_factory=list)
    calls: int = 0


def search(
    resources: Sequence[Resource], cursors: dict[str, NameCursor], end: datetime, fetch: Fetch
) -> Search:
    """Query CloudTrail's history as :func:`next_lookup` says until nothing is pending or
    ``fetch`` says the time is up; ``cursors`` is brought up to date. The I/O is ``fetch``'s."""
    out = Search(pending={r.id: r for r in resources})
    while out.pending:
        step = next_lookup(list(out.pending.values()), cursors, end)
        if step is None:
            break
        if isinstance(step, ByName):
            cursor = cursors.get(step.name, NameCursor())
            try:
                got = fetch(("EventName", step.name), step.start, step.end or end, step.token)
            except TokenExpired:
                out.calls += 1  # the token expired between two runs: a new query, from the oldest seen
                cursors[step.name] = replace(cursor, token=None, end=cursor.oldest)
                continue
            if got is None:
                break
            out.calls += 1
            seen = [t for t in (cursor.oldest, got.oldest.isoformat() if got.oldest else None) if t]
            oldest = min(seen, key=datetime.fromisoformat) if seen else None
            cursors[step.name] = NameCursor(
                step.start.isoformat(), oldest, got.token, cursor.pages + 1, got.token is None, cursor.end
            )
            out.found += events_found(got.events, out.pending)
            continue
        # One resource, then the plan again: what its answer found (an event may name several)
        # and the shrinking number ahead may make paging the cheaper way once more - and a run
        # that ends after any call has decided exactly what one long run would have.
        resource = step.resources[0]
        if resource.created_at is None:  # not asked for (next_lookup never offers one)
            out.pending.pop(resource.id)
            out.asked.append(resource)
            continue
        token: str | None = None
        while True:
            start = resource.created_at - CREATED_WITHIN
            stop = min(resource.created_at + CREATED_WITHIN, end)
            got = fetch(("ResourceName", resource.id), start, stop, token)
            if got is None:
                return out  # out of time: the rest in the next run
            out.calls += 1
            out.found += events_found(got.events, out.pending)
            if resource.id not in out.pending or got.token is None:
                break
            token = got.token
        if resource.id in out.pending:  # asked for by its id: no creation event made it
            out.pending.pop(resource.id)
            out.asked.append(resource)
    return out


def events_found(events: Iterable[Mapping[str, Any]], pending: dict[str, Resource]) -> list[Found]:
    """The pending resources these history events created (each leaves ``pending``). An event
    owner_tagger's parser cannot read is skipped: it proves nothing."""
    found: list[Found] = []
    for raw in events:
        detail = raw.get("detail")
        if not isinstance(detail, Mapping) or detail.get("eventName") not in NAMES:
            continue
        try:
            parsed = parse_creation(raw)
        except (BadEvent, EmptyEvent):
            continue
        for item in match(parsed, pending, caller(parsed.identity)):
            pending.pop(item.resource.id, None)
            found.append(item)
    return found
