"""Decide, per resource, whether to write the owner tag and with which value. Pure.

Rules, in order (docs/owner_tagger.md "Decisions"):
1. A resource that already has the owner tag keeps it, whatever its value (never overwritten).
2. A volume or network interface launched with an instance that already has an owner tag
   gets the instance's value (the owner someone chose on purpose beats the caller's identity).
3. Otherwise it gets the owner resolved from the CloudTrail identity.
4. If there is none, it is left untagged and reported as unresolved.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from autopilot.tags import clean_value
from owner_tagger.identity import Resolution

Action = Literal["tag", "keep", "unresolved"]


@dataclass(frozen=True)
class Target:
    """A resource the creation call made: its id, EC2 type and the instance it came with."""

    id: str
    type: str  # instance, volume, network-interface, snapshot, image
    parent: str | None = None
    name: str = ""


@dataclass(frozen=True)
class Decision:
    target: Target
    action: Action
    value: str | None  # tag: the value to write; keep: the existing value; unresolved: None
    source: str  # identity | instance | existing | none


@dataclass(frozen=True)
class Plan:
    decisions: tuple[Decision, ...]

    def of(self, action: Action) -> list[Decision]:
        return [d for d in self.decisions if d.action == action]

    def writes(self) -> dict[str, list[str]]:
        """Owner value -> resource ids to tag with it (one CreateTags batch per value)."""
        grouped: dict[str, list[str]] = {}
        for d in self.of("tag"):
            if d.value is not None:  # always set for "tag" (decide() guarantees it)
                grouped.setdefault(d.value, []).append(d.target.id)
        return grouped


def _usable(value: str | None) -> str | None:
    if value is None:
        return None
    cleaned = clean_value(value).strip()
    return cleaned or None


def decide(targets: Iterable[Target], current: Mapping[str, str], owner: Resolution) -> Plan:
    """One decision per distinct target. ``current`` maps resource id -> its existing owner tag
    value (absent = no owner tag); it must cover every target and every target's parent."""
    decisions: list[Decision] = []
    seen: set[str] = set()
    for target in targets:
        if target.id in seen:
            continue
        seen.add(target.id)
        if target.id in current:
            decisions.append(Decision(target, "keep", current[target.id], "existing"))
            continue
        inherited = _usable(current.get(target.parent)) if target.parent else None
        if inherited:
            decisions.append(Decision(target, "tag", inherited, "instance"))
        elif owner.value is not None:
            decisions.append(Decision(target, "tag", owner.value, "identity"))
        else:
            decisions.append(Decision(target, "unresolved", None, "none"))
    return Plan(tuple(decisions))
