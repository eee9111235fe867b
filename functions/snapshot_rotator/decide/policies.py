"""Named retention policies and what a volume's ``Backup`` tag asks for: pure parsing of text.

The operator names policies in one parameter, for example
``gold: newest=14 daily=14 weekly=8 monthly=12 yearly=3; silver: newest=7 days=30 copy=eu-central-1``,
and a resource chooses one with ``Backup=gold``. ``Backup=true`` keeps meaning what it always
meant: the stack's own retention, the :data:`DEFAULT` policy. The text is parsed whole or not at
all: a typo must stop the deployment with a message that quotes it, never silently leave a
volume on a shorter retention than the operator wrote.

``copy`` / ``copy_key`` name a disaster-recovery copy to another region and the KMS key that
encrypts it there; they are only parsed and checked here.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from autopilot.tags import OPT_OUT_VALUES
from snapshot_rotator.decide.retention import RetentionPolicy

DEFAULT: Final = "default"  # the policy ``Backup=true`` selects: the stack's own retention
OPT_IN_VALUE: Final = "true"

_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
# KMS accepts a key id (a UUID, or mrk-<32 hex> for a multi-Region key), a key ARN, an alias
# name or an alias ARN. Checked loosely: the shape, not that the key exists.
_KEY_ID = r"(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})"
_ALIAS = r"alias/[A-Za-z0-9/_-]{1,250}"
_ARN = r"arn:aws[a-z-]*:kms:(?P<region>[a-z0-9-]+):\d{12}:"
_KMS_KEY = re.compile(rf"{_KEY_ID}|{_ALIAS}|{_ARN}(?:key/{_KEY_ID}|{_ALIAS})")
# Names a policy can never have: they already mean something as a Backup tag value.
_RESERVED: Final = frozenset({OPT_IN_VALUE, DEFAULT, *OPT_OUT_VALUES})

# key -> (the RetentionPolicy field, its smallest and largest value): the same limits as the
# stack's own KEEP_* parameters.
_NUMBERS: Final[Mapping[str, tuple[str, int, int]]] = {
    "newest": ("keep_newest", 1, 1000),
    "days": ("keep_days", 0, 3650),
    "daily": ("keep_daily", 0, 3650),
    "weekly": ("keep_weekly", 0, 520),
    "monthly": ("keep_monthly", 0, 240),
    "yearly": ("keep_yearly", 0, 100),
}
_TEXTS: Final = ("copy", "copy_key")
_KEYS: Final = (*_NUMBERS, *_TEXTS)


@dataclass(frozen=True)
class Policy:
    """A named retention policy, and where its disaster-recovery copies go (None: no copies)."""

    name: str
    retention: RetentionPolicy
    copy_region: str | None = None
    copy_kms_key: str | None = None


def _check_name(raw: str, seen: Collection[str]) -> str:
    """The policy name in lower case, or a ValueError saying what a name may be."""
    name = raw.lower()
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"policy name '{raw}' is not allowed: use 1-32 letters, digits and '-', "
            "starting with a letter or digit"
        )
    if name in _RESERVED:
        words = ", ".join(sorted(_RESERVED))
        raise ValueError(f"policy name '{raw}' is reserved: {words} already mean something as a Backup tag")
    if name in seen:
        raise ValueError(f"policy '{name}' is defined twice")
    return name


def _pairs(name: str, body: str) -> dict[str, str]:
    """``key=value`` pairs separated by spaces or commas (spaces around ``=`` allowed)."""
    pairs: dict[str, str] = {}
    for token in re.split(r"[\s,]+", re.sub(r"\s*=\s*", "=", body.strip())):
        if not token:
            continue
        typed, eq, value = token.partition("=")
        key = typed.lower()
        if not eq:
            raise ValueError(f"policy '{name}': '{token}' is not key=value")
        if key not in _KEYS:
            raise ValueError(f"policy '{name}': unknown key '{typed}' (allowed: {', '.join(_KEYS)})")
        if key in pairs:
            raise ValueError(f"policy '{name}': {key} is given twice")
        pairs[key] = value
    return pairs


def _number(name: str, key: str, value: str) -> int:
    _, low, high = _NUMBERS[key]
    if not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:
        raise ValueError(f"policy '{name}': {key}={value} is not a whole number {low}-{high}")
    return int(value)


def _copy(name: str, pairs: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The copy region and key: a region name, and a key only with a region (the key must be
    in the copy's region, so an ARN naming another region is refused here, not at CopySnapshot)."""
    region, key = pairs.get("copy"), pairs.get("copy_key")
    if region is not None and not _REGION.match(region):
        raise ValueError(
            f"policy '{name}': copy={region} is not an AWS region name (like eu-central-1 or us-gov-west-1)"
        )
    if key is None:
        return region, None
    if region is None:
        raise ValueError(f"policy '{name}': copy_key={key} needs copy=<region> (the region the key is in)")
    shape = _KMS_KEY.fullmatch(key)
    if shape is None:
        raise ValueError(
            f"policy '{name}': copy_key={key} is not a KMS key id, key ARN, alias/<name> or alias ARN"
        )
    if shape.group("region") not in (None, region):
        raise ValueError(f"policy '{name}': copy_key={key} is not in the copy region {region}")
    return region, key


def _policy(part: str, seen: Collection[str]) -> Policy:
    raw_name, colon, body = part.partition(":")
    if not colon:
        raise ValueError(f"'{part}' has no ':': write each policy as <name>: newest=N ...")
    name = _check_name(raw_name.strip(), seen)
    pairs = _pairs(name, body)
    if "newest" not in pairs:
        raise ValueError(f"policy '{name}': newest=N is required (a whole number 1-1000)")
    numbers = {_NUMBERS[k][0]: _number(name, k, v) for k, v in pairs.items() if k in _NUMBERS}
    region, key = _copy(name, pairs)
    return Policy(name, RetentionPolicy(**numbers), copy_region=region, copy_kms_key=key)


def parse_policies(text: str, default: RetentionPolicy) -> dict[str, Policy]:
    """The policies named in ``text`` (``;``-separated ``<name>: key=value ...``), by lower-case
    name, always with :data:`DEFAULT` -> ``default`` first. Raises ValueError quoting the first
    bad part; there is never a partial result."""
    policies = {DEFAULT: Policy(DEFAULT, default)}
    for part in text.split(";"):
        if part.strip():
            policy = _policy(part.strip(), policies.keys())
            policies[policy.name] = policy
    return policies


def describe(policy: Policy) -> str:
    """One short line for the mails, in the words the operator wrote: tiers that are off are left out."""
    r = policy.retention
    parts = [
        f"{key} {value}"
        for key, value in (
            ("newest", r.keep_newest),
            ("days", r.keep_days),
            ("daily", r.keep_daily),
            ("weekly", r.keep_weekly),
            ("monthly", r.keep_monthly),
            ("yearly", r.keep_yearly),
        )
        if value
    ]
    if policy.copy_region:
        key = f" with key {policy.copy_kms_key}" if policy.copy_kms_key else ""
        parts.append(f"copies to {policy.copy_region}{key}")
    return f"{policy.name}: {', '.join(parts)}"


BackupTagKind = Literal["absent", "policy", "opted_out", "unknown"]


@dataclass(frozen=True)
class BackupTag:
    """What a ``Backup`` tag value asks for. ``policy``: the policy name (kind "policy" only);
    ``raw``: the value as the user typed it (for the mail, e.g. an unknown policy name)."""

    kind: BackupTagKind
    policy: str | None = None
    raw: str = ""


def read_backup_tag(value: str | None, policies: Collection[str]) -> BackupTag:
    """The meaning of a ``Backup`` tag value (trimmed, case-insensitive): ``true`` (or
    ``default`` typed out) is the default policy, an opt-out word opts out, a name in
    ``policies`` (lower-case, as :func:`parse_policies` gives them) selects that policy, and
    anything else - an empty value too - is unknown: reported, never guessed at."""
    if value is None:
        return BackupTag("absent")
    word = value.strip().lower()
    if word in (OPT_IN_VALUE, DEFAULT):
        return BackupTag("policy", DEFAULT, value)
    if word in OPT_OUT_VALUES:
        return BackupTag("opted_out", raw=value)
    if word in policies:
        return BackupTag("policy", word, value)
    return BackupTag("unknown", raw=value)
