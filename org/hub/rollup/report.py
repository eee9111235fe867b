"""The daily roll-up, pure: from the day's summary items to the mail's subject and body.

An item is one (account, region, automation) of one day: how many runs, and their Checked,
Changed, Skipped and Failed summed. An account-region that reported at all is expected to have
every automation of ``expected`` run; an account that reported in the last days but not on the
day is listed as silent - its stacks may be gone, failing or cut off.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

COUNTS = ("checked", "changed", "skipped", "failed")


@dataclass(frozen=True)
class Summary:
    account: str
    region: str
    automation: str
    runs: int
    checked: int = 0
    changed: int = 0
    skipped: int = 0
    failed: int = 0

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> Summary:
        account, region, automation = str(item["sk"]).split("#", 2)
        return cls(
            account, region, automation, int(item.get("runs", 0)), *(int(item.get(c, 0)) for c in COUNTS)
        )


@dataclass
class Rollup:
    subject: str
    body: str
    failed: int
    missing: int
    silent: list[str] = field(default_factory=list)


def build(
    day: str,
    summaries: Iterable[Summary],
    expected: Sequence[str],
    known_accounts: Iterable[str],
    org_name: str = "the organisation",
) -> Rollup:
    """The roll-up of ``day`` (YYYY-MM-DD, UTC): per account, per region, what each automation
    did; what failed first; automations that did not run; accounts that sent nothing."""
    by_place: dict[tuple[str, str], dict[str, Summary]] = defaultdict(dict)
    for s in summaries:
        by_place[(s.account, s.region)][s.automation] = s
    accounts = sorted({a for a, _ in by_place})
    silent = sorted(set(known_accounts) - set(accounts))
    failed = sum(s.failed for place in by_place.values() for s in place.values())
    missing_lines: list[str] = []
    sections: list[str] = []
    for account in accounts:
        lines = [f"Account {account}", "-" * (8 + len(account))]
        for region in sorted(r for a, r in by_place if a == account):
            place = by_place[(account, region)]
            lines.append(f"  {region}")
            for name in sorted(set(place) | set(expected)):
                s = place.get(name)
                if s is None:
                    lines.append(f"    {name}: DID NOT RUN")
                    missing_lines.append(f"- {account} {region} {name}")
                    continue
                flag = "  <- FAILED" if s.failed else ""
                lines.append(
                    f"    {name}: {s.runs} run{'s' if s.runs != 1 else ''}, {s.checked} checked, "
                    f"{s.changed} changed, {s.skipped} skipped, {s.failed} failed{flag}"
                )
        sections.append("\n".join(lines))
    head = [
        f"ops-autopilot across {org_name} on {day} (UTC): {len(accounts)} account"
        f"{'s' if len(accounts) != 1 else ''} reported, {failed} failed, "
        f"{len(missing_lines)} automation{'s' if len(missing_lines) != 1 else ''} did not run, "
        f"{len(silent)} silent account{'s' if len(silent) != 1 else ''}.",
        "",
    ]
    if missing_lines:
        head += [
            "Did not run (failed before its end, not triggered, or not deployed there)",
            *missing_lines,
            "",
        ]
    if silent:
        head += [
            "Sent nothing on this day (reported before: stack deleted, failing, or forwarding broken)",
            *[f"- {a}" for a in silent],
            "",
        ]
    body = "\n".join([*head, "\n\n".join(sections), "", "--", "ops-autopilot roll-up hub (org/hub.yaml)."])
    worst = "FAILURES" if failed else ("GAPS" if missing_lines or silent else "OK")
    subject = (
        f"[ops-autopilot roll-up] {day}: {worst} - {len(accounts)} accounts, "
        f"{failed} failed, {len(missing_lines)} not run"
    )
    return Rollup(subject, body, failed, len(missing_lines), silent)
