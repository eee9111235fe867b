"""Tags: EC2-style tag lists to and from dicts, and the product-wide tag rules.

The rules every automation shares are declared here once:
- :data:`OPT_OUT_VALUES` - the words that opt a resource out, for every opt-out tag
  (``AutoStop``, ``AutoPatch``, ``Backup`` ...): ``false``, ``no``, ``never``, ``off``;
- :func:`valid_key` - what a tag key may be (EC2's rule), for the configurable keys such as
  the owner tag key;
- :func:`clean_value` - a value made acceptable to EC2.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

MAX_TAG_KEY: Final = 128
MAX_TAG_VALUE: Final = 256
# The opt-out words, the same for every opt-out tag (compared case-insensitively, trimmed).
OPT_OUT_VALUES: Final = frozenset({"false", "no", "never", "off"})
# Characters EC2 allows in tag keys and values (letters, digits, spaces and + - = . _ : / @),
# Unicode letters too.
# Keys are one line: spaces, but no tabs or line breaks (fullmatch: "$" would let a final
# line break through).
_KEY = re.compile(rf"[\w +\-=.:/@]{{1,{MAX_TAG_KEY}}}", re.UNICODE)
_NOT_ALLOWED = re.compile(r"[^\w\s+\-=.:/@]", re.UNICODE)


def as_dict(tags: Iterable[Mapping[str, Any]] | None) -> dict[str, str]:
    return {str(t["Key"]): str(t.get("Value", "")) for t in tags or () if "Key" in t}


def as_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def clean_value(value: str) -> str:
    """``value`` made acceptable as a tag value: allowed characters only, one line, ≤ 256 chars."""
    cleaned = _NOT_ALLOWED.sub("_", " ".join(value.split()))
    return cleaned[:MAX_TAG_VALUE]


def valid_key(key: str) -> bool:
    """An EC2 tag key a user may set: 1-128 allowed characters, not blank, not ``aws:``."""
    return bool(_KEY.fullmatch(key)) and key.strip() == key and not key.lower().startswith("aws:")


def is_opt_out(value: str | None) -> bool:
    """True when a tag value is one of the opt-out words (``AutoStop=Never``, ``AutoPatch=off``)."""
    return value is not None and value.strip().lower() in OPT_OUT_VALUES


def opted_out(tags: Mapping[str, str], key: str) -> bool:
    """True when ``tags[key]`` opts the resource out."""
    return is_opt_out(tags.get(key))
