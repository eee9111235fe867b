"""The ``StopAfter`` tag value: a whole number and a unit, ``90m``, ``8h`` or ``2d``.

Anything else is malformed and raises :class:`BadDuration` with a reason a human can act on;
a malformed value is never guessed (``8`` is not "8 hours", ``1.5h`` is not "90 minutes").
"""

from __future__ import annotations

import re
from datetime import timedelta

UNITS = {"m": 60, "h": 3600, "d": 86400}
MAX_LIFETIME = timedelta(days=366)
_PATTERN = re.compile(r"^([0-9]{1,6})([mhd])$", re.ASCII)


class BadDuration(ValueError):
    """A StopAfter value that is not ``<whole number><m|h|d>``."""


def parse_stop_after(raw: str) -> timedelta:
    """``"90m"`` -> 90 minutes. Surrounding spaces and the unit's case are forgiven; nothing else."""
    value = raw.strip()
    match = _PATTERN.match(value.lower())
    if not match:
        raise BadDuration(f"StopAfter={raw!r} is not a whole number followed by m, h or d (e.g. 90m, 8h, 2d)")
    amount = int(match.group(1))
    if amount == 0:
        raise BadDuration(f"StopAfter={raw!r} is zero; use AutoStop=false to never stop, or a positive value")
    lifetime = timedelta(seconds=amount * UNITS[match.group(2)])
    if lifetime > MAX_LIFETIME:
        raise BadDuration(f"StopAfter={raw!r} is longer than {MAX_LIFETIME.days} days")
    return lifetime


def format_duration(delta: timedelta) -> str:
    """A short human duration: ``2d 3h``, ``9h 12m``, ``45m`` (rounded down to minutes)."""
    minutes = max(0, int(delta.total_seconds() // 60))
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {mins}m"
    return f"{mins}m"
