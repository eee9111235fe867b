"""EC2-style tag lists ([{"Key": .., "Value": ..}]) to and from dicts, and tag value rules."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

MAX_TAG_VALUE = 256
# Characters EC2 allows in tag values (letters, digits, spaces and + - = . _ : / @), Unicode letters too.
_NOT_ALLOWED = re.compile(r"[^\w\s+\-=.:/@]", re.UNICODE)


def as_dict(tags: Iterable[Mapping[str, Any]] | None) -> dict[str, str]:
    return {str(t["Key"]): str(t.get("Value", "")) for t in tags or () if "Key" in t}


def as_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def clean_value(value: str) -> str:
    """``value`` made acceptable as a tag value: allowed characters only, one line, ≤ 256 chars."""
    cleaned = _NOT_ALLOWED.sub("_", " ".join(value.split()))
    return cleaned[:MAX_TAG_VALUE]
