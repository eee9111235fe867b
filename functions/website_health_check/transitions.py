"""When does a site's state change, and when does that deserve a mail? (pure)

Each site has a *reported* status (what the last mail said; UP for a new site) and a streak:
how many checks in a row observed the same different status. A site is reported DOWN or
DEGRADED only after ``threshold`` consecutive checks agree (no mail for a single blip), and
reported UP again (RECOVERED) on the first good check. Nothing changes while the observed
status equals the reported one, so a site that stays down mails once, not every 5 minutes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum


class Status(StrEnum):
    UP = "UP"
    DEGRADED = "DEGRADED"
    DOWN = "DOWN"


@dataclass(frozen=True)
class SiteState:
    url: str
    reported: Status = Status.UP
    since: str = ""
    streak_status: Status = Status.UP
    streak: int = 0
    reason: str = ""
    version: int = 0


@dataclass(frozen=True)
class Transition:
    url: str
    old: Status
    new: Status
    reason: str
    down_since: str  # when the problem was first reported (for RECOVERED mails)

    @property
    def kind(self) -> str:
        if self.new is Status.UP:
            return "RECOVERED"
        return self.new.value


def advance(
    state: SiteState, observed: Status, reason: str, threshold: int, now: datetime
) -> tuple[SiteState, Transition | None]:
    """The site's next state after one check, and the transition to report, if any.
    A site seen for the first time starts from ``SiteState(url)`` (reported UP)."""
    if threshold < 1:
        raise ValueError("threshold must be at least 1")
    if observed == state.reported:
        # Nothing new to say: forget any half-built streak.
        return replace(state, streak_status=observed, streak=0), None
    streak = state.streak + 1 if observed == state.streak_status else 1
    needed = 1 if observed is Status.UP else threshold
    if streak < needed:
        return replace(state, streak_status=observed, streak=streak, reason=reason), None
    transition = Transition(state.url, state.reported, observed, reason, state.since)
    new_state = replace(
        state, reported=observed, since=now.isoformat(), streak_status=observed, streak=0, reason=reason
    )
    return new_state, transition
