"""Named retention policies (decide/policies.py) and the yearly tier (decide/retention.py):
the yearly rule on hand-made histories, a hypothesis property that checks ``plan_retention``
against an independent re-implementation of the documented rules, the policy parameter's
grammar and every error message, the mail line and the ``Backup`` tag's meanings."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapshot_rotator.decide.policies import (
    DEFAULT,
    BackupTag,
    Policy,
    describe,
    parse_policies,
    read_backup_tag,
)
from snapshot_rotator.decide.retention import (
    COMPLETED,
    ERROR,
    Reason,
    RetentionPolicy,
    Snapshot,
    plan_retention,
)

pytestmark = pytest.mark.unit

STACK = "ops-autopilot-test"
NOW = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
BASE = RetentionPolicy(keep_newest=7, keep_days=30)


def snap(sid: str, start: datetime, *, state: str = COMPLETED) -> Snapshot:
    """A snapshot of vol-1 that this stack made (tagged and in its ledger), no AMI's."""
    return Snapshot(
        id=sid,
        volume_id="vol-1",
        start_time=start,
        state=state,
        tags={"ManagedBy": STACK},
        used_by_ami=False,
        recorded=True,
    )


def at(year: int, month: int, day: int, hour: int = 3) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


def plan(snaps: list[Snapshot], policy: RetentionPolicy) -> dict[str, Reason]:
    return {d.snapshot.id: d.reason for d in plan_retention(snaps, stack_name=STACK, policy=policy, now=NOW)}


# --- the yearly tier ----------------------------------------------------------------------

# Two a year in 2026, 2025, 2023 and 2022; none in 2024. "a" is the newer of each year.
YEARS = [
    snap("y2026a", at(2026, 11, 1)),
    snap("y2026b", at(2026, 2, 1)),
    snap("y2025a", at(2025, 12, 30)),
    snap("y2025b", at(2025, 6, 1)),
    snap("y2023a", at(2023, 8, 1)),
    snap("y2023b", at(2023, 1, 5)),
    snap("y2022a", at(2022, 12, 1)),
]


def test_yearly_keeps_the_newest_of_each_of_the_last_years_that_have_one() -> None:
    # 2024 has no snapshot, so the three years are 2026, 2025 and 2023 (not 2026-2024).
    reasons = plan(YEARS, RetentionPolicy(keep_newest=1, keep_yearly=3))
    assert reasons == {
        "y2026a": Reason.NEWEST,  # also 2026's newest: the first rule that keeps it wins
        "y2026b": Reason.EXPIRED,
        "y2025a": Reason.YEARLY,
        "y2025b": Reason.EXPIRED,
        "y2023a": Reason.YEARLY,
        "y2023b": Reason.EXPIRED,
        "y2022a": Reason.EXPIRED,
    }


def test_yearly_is_off_at_zero() -> None:
    reasons = plan(YEARS, RetentionPolicy(keep_newest=1))
    assert {sid for sid, r in reasons.items() if not r.deletes} == {"y2026a"}
    assert Reason.YEARLY not in reasons.values()


def test_yearly_reaches_as_far_back_as_there_are_years() -> None:
    reasons = plan(YEARS, RetentionPolicy(keep_newest=1, keep_yearly=100))
    assert {sid for sid, r in reasons.items() if r is Reason.YEARLY} == {"y2025a", "y2023a", "y2022a"}


def test_yearly_counts_only_completed_snapshots() -> None:
    # An error snapshot is not a backup: it does not make 2024 a year that has one, nor is it
    # 2025's newest.
    snaps = [*YEARS, snap("e2024", at(2024, 5, 1), state=ERROR), snap("e2025", at(2025, 12, 31), state=ERROR)]
    reasons = plan(snaps, RetentionPolicy(keep_newest=1, keep_yearly=3))
    assert {sid for sid, r in reasons.items() if r is Reason.YEARLY} == {"y2025a", "y2023a"}
    assert reasons["y2025a"] is Reason.YEARLY


def test_yearly_uses_the_calendar_year_not_the_iso_year() -> None:
    # 2025-12-30 is in ISO week 1 of 2026, but it is a 2025 backup.
    snaps = [snap("new", at(2026, 3, 1)), snap("dec30", at(2025, 12, 30)), snap("jun", at(2025, 6, 1))]
    assert plan(snaps, RetentionPolicy(keep_newest=1, keep_yearly=2))["dec30"] is Reason.YEARLY


def test_yearly_comes_after_monthly() -> None:
    # The last 3 months that have one: Nov 2026 (the newest), Feb 2026 and Dec 2025. y2025a is
    # the newest of Dec 2025 and of 2025: monthly keeps it first.
    reasons = plan(YEARS, RetentionPolicy(keep_newest=1, keep_monthly=3, keep_yearly=3))
    assert reasons["y2026b"] is Reason.MONTHLY
    assert reasons["y2025a"] is Reason.MONTHLY
    assert reasons["y2023a"] is Reason.YEARLY
    assert reasons["y2025b"] is Reason.EXPIRED


def test_yearly_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match=r"^keep_yearly must not be negative$"):
        RetentionPolicy(keep_newest=1, keep_yearly=-1)


# --- property: plan_retention against an independent reading of the rules -----------------


def expected_reasons(snaps: list[Snapshot], policy: RetentionPolicy) -> dict[str, Reason]:
    """The documented rules, written out plainly for completed snapshots of one volume (no AMI,
    nothing held): each is kept by the first rule that keeps it, else it expires."""
    newest_first = sorted(snaps, key=lambda s: s.start_time, reverse=True)
    kept: dict[str, Reason] = {s.id: Reason.NEWEST for s in newest_first[: policy.keep_newest]}
    if policy.keep_days:
        for s in snaps:
            if NOW - s.start_time < timedelta(days=policy.keep_days):
                kept.setdefault(s.id, Reason.YOUNG)
    tiers: list[tuple[int, Reason, Callable[[datetime], tuple[int, ...]]]] = [
        (policy.keep_daily, Reason.DAILY, lambda t: (t.year, t.month, t.day)),
        (policy.keep_weekly, Reason.WEEKLY, lambda t: tuple(t.isocalendar())[:2]),
        (policy.keep_monthly, Reason.MONTHLY, lambda t: (t.year, t.month)),
        (policy.keep_yearly, Reason.YEARLY, lambda t: (t.year,)),
    ]
    for count, reason, period_of in tiers:
        newest_of: dict[tuple[int, ...], Snapshot] = {}
        for s in snaps:
            period = period_of(s.start_time)
            if period not in newest_of or s.start_time > newest_of[period].start_time:
                newest_of[period] = s
        for period in sorted(newest_of, reverse=True)[:count]:
            kept.setdefault(newest_of[period].id, reason)
    return {s.id: kept.get(s.id, Reason.EXPIRED) for s in snaps}


MINUTES_A_DAY = 60 * 24
# Clusters at three scales so that every tier matters: two weeks, a year and a half, six years;
# a few minutes in the future too (a clock ahead of the run's ``now``).
offsets = st.one_of(
    st.integers(min_value=-30, max_value=MINUTES_A_DAY * 14),
    st.integers(min_value=0, max_value=MINUTES_A_DAY * 550),
    st.integers(min_value=0, max_value=MINUTES_A_DAY * 365 * 6),
)
histories = st.lists(offsets, max_size=40, unique=True).map(
    lambda minutes: [snap(f"s{i:02d}", NOW - timedelta(minutes=m)) for i, m in enumerate(minutes)]
)
retention_policies = st.builds(
    RetentionPolicy,
    keep_newest=st.integers(min_value=1, max_value=8),
    keep_days=st.integers(min_value=0, max_value=40),
    keep_daily=st.integers(min_value=0, max_value=10),
    keep_weekly=st.integers(min_value=0, max_value=8),
    keep_monthly=st.integers(min_value=0, max_value=14),
    keep_yearly=st.integers(min_value=0, max_value=5),
)


@settings(max_examples=400, deadline=None)
@given(histories, retention_policies)
def test_property_plan_follows_the_documented_rules(snaps: list[Snapshot], policy: RetentionPolicy) -> None:
    assert plan(snaps, policy) == expected_reasons(snaps, policy)


# --- parse_policies -----------------------------------------------------------------------

GOLD_AND_SILVER = (
    "gold: newest=14 daily=14 weekly=8 monthly=12 yearly=3; "
    "silver: newest=7 days=30 copy=eu-central-1 copy_key=alias/backup"
)


def test_parses_every_key() -> None:
    policies = parse_policies(GOLD_AND_SILVER, BASE)
    assert policies == {
        DEFAULT: Policy(DEFAULT, BASE),
        "gold": Policy(
            "gold",
            RetentionPolicy(keep_newest=14, keep_daily=14, keep_weekly=8, keep_monthly=12, keep_yearly=3),
        ),
        "silver": Policy(
            "silver",
            RetentionPolicy(keep_newest=7, keep_days=30),
            copy_region="eu-central-1",
            copy_kms_key="alias/backup",
        ),
    }
    assert list(policies) == [DEFAULT, "gold", "silver"]


@pytest.mark.parametrize("text", ["", "   ", ";", " ; ;\n; "])
def test_empty_text_or_parts_give_only_the_default(text: str) -> None:
    assert parse_policies(text, BASE) == {DEFAULT: Policy(DEFAULT, BASE)}


@pytest.mark.parametrize(
    "text",
    [
        "gold:newest=3,daily=7",
        "  gold :  newest = 3 ,  daily=7  ;  ",
        "gold:\n\tnewest=3\n\tdaily=7",
        "GOLD: newest=3 daily=7",
        "Gold: NEWEST=3 Daily=7",
        "gold: newest=3,,daily=7",
    ],
)
def test_whitespace_commas_and_case_are_free(text: str) -> None:
    assert parse_policies(text, BASE)["gold"] == Policy("gold", RetentionPolicy(keep_newest=3, keep_daily=7))


def test_names_are_stored_in_lower_case() -> None:
    assert set(parse_policies("Tier-1: newest=1; 9lives: newest=9", BASE)) == {DEFAULT, "tier-1", "9lives"}


@pytest.mark.parametrize(
    ("key", "low", "high", "field"),
    [
        ("newest", 1, 1000, "keep_newest"),
        ("days", 0, 3650, "keep_days"),
        ("daily", 0, 3650, "keep_daily"),
        ("weekly", 0, 520, "keep_weekly"),
        ("monthly", 0, 240, "keep_monthly"),
        ("yearly", 0, 100, "keep_yearly"),
    ],
)
def test_each_number_at_its_limits(key: str, low: int, high: int, field: str) -> None:
    base = "" if key == "newest" else "newest=1 "
    for value in (low, high):
        policy = parse_policies(f"p: {base}{key}={value}", BASE)["p"]
        assert getattr(policy.retention, field) == value
    for bad in (str(low - 1), str(high + 1), "x", "1.5", "+3", "-0", "", "٣"):
        with pytest.raises(ValueError) as err:
            parse_policies(f"p: {base}{key}={bad}", BASE)
        assert str(err.value) == f"policy 'p': {key}={bad} is not a whole number {low}-{high}"


def test_the_example_message() -> None:
    with pytest.raises(ValueError) as err:
        parse_policies("gold: newest=14 weekly=x", BASE)
    assert str(err.value) == "policy 'gold': weekly=x is not a whole number 0-520"


NAME_RULE = "is not allowed: use 1-32 letters, digits and '-', starting with a letter or digit"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gold newest=3", "'gold newest=3' has no ':': write each policy as <name>: newest=N ..."),
        ("gold: newest=3; silver", "'silver' has no ':': write each policy as <name>: newest=N ..."),
        ("gold:", "policy 'gold': newest=N is required (a whole number 1-1000)"),
        ("gold: daily=7", "policy 'gold': newest=N is required (a whole number 1-1000)"),
        ("gold: newest=3 newest=4", "policy 'gold': newest is given twice"),
        ("gold: newest=3 Newest=3", "policy 'gold': newest is given twice"),
        (
            "gold: newest=3 hourly=2",
            "policy 'gold': unknown key 'hourly' (allowed: newest, days, daily, weekly, monthly, yearly, "
            "copy, copy_key)",
        ),
        ("gold: newest=3 daily", "policy 'gold': 'daily' is not key=value"),
        ("gold: newest=3; GOLD: newest=4", "policy 'gold' is defined twice"),
        (
            ": newest=3",
            f"policy name '' {NAME_RULE}",
        ),
        (
            "-gold: newest=3",
            f"policy name '-gold' {NAME_RULE}",
        ),
        (
            "gold_1: newest=3",
            f"policy name 'gold_1' {NAME_RULE}",
        ),
        (
            "my gold: newest=3",
            f"policy name 'my gold' {NAME_RULE}",
        ),
        (
            f"{'a' * 33}: newest=3",
            f"policy name '{'a' * 33}' {NAME_RULE}",
        ),
    ],
)
def test_errors_quote_the_bad_part(text: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_policies(text, BASE)
    assert str(err.value) == message


def test_a_name_of_32_characters_is_allowed() -> None:
    assert "a" * 32 in parse_policies(f"{'a' * 32}: newest=1", BASE)


@pytest.mark.parametrize("name", ["true", "default", "false", "no", "never", "off", "TRUE", "Default", "Off"])
def test_names_that_mean_something_as_a_tag_are_reserved(name: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_policies(f"gold: newest=1; {name}: newest=3", BASE)
    assert str(err.value) == (
        f"policy name '{name}' is reserved: default, false, never, no, off, true already mean "
        "something as a Backup tag"
    )


@pytest.mark.parametrize("region", ["eu-central-1", "us-gov-west-1", "ap-southeast-12", "us-east-1"])
def test_copy_takes_a_region_name(region: str) -> None:
    assert parse_policies(f"dr: newest=1 copy={region}", BASE)["dr"].copy_region == region


@pytest.mark.parametrize(
    "region", ["", "EU-CENTRAL-1", "eu-central", "eucentral-1", "eu-central-123", "e-central-1", "eu-1"]
)
def test_copy_refuses_what_is_not_a_region_name(region: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_policies(f"dr: newest=1 copy={region}", BASE)
    assert str(err.value) == (
        f"policy 'dr': copy={region} is not an AWS region name (like eu-central-1 or us-gov-west-1)"
    )


KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
MRK_ID = "mrk-1234abcd12ab34cd56ef1234567890ab"


@pytest.mark.parametrize(
    "key",
    [
        KEY_ID,
        MRK_ID,
        "alias/backup",
        "alias/dr/ebs_key-2",
        f"arn:aws:kms:eu-central-1:111122223333:key/{KEY_ID}",
        f"arn:aws:kms:eu-central-1:111122223333:key/{MRK_ID}",
        "arn:aws:kms:eu-central-1:111122223333:alias/backup",
    ],
)
def test_copy_key_takes_every_kind_of_kms_key_name(key: str) -> None:
    policy = parse_policies(f"dr: newest=1 copy=eu-central-1 copy_key={key}", BASE)["dr"]
    assert (policy.copy_region, policy.copy_kms_key) == ("eu-central-1", key)


def test_copy_key_in_another_partition() -> None:
    key = f"arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/{KEY_ID}"
    assert parse_policies(f"gov: newest=1 copy=us-gov-west-1 copy_key={key}", BASE)["gov"].copy_kms_key == key


@pytest.mark.parametrize(
    "key",
    [
        "backup",
        "alias/",
        "alias/has*star",
        "1234abcd",
        f"arn:aws:kms:eu-central-1:1111:key/{KEY_ID}",
        f"arn:aws:s3:eu-central-1:111122223333:key/{KEY_ID}",
        "arn:aws:kms:eu-central-1:111122223333:key/backup",
    ],
)
def test_copy_key_refuses_what_is_not_a_kms_key_name(key: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_policies(f"dr: newest=1, copy=eu-central-1, copy_key={key}", BASE)
    assert str(err.value) == (
        f"policy 'dr': copy_key={key} is not a KMS key id, key ARN, alias/<name> or alias ARN"
    )


def test_copy_key_arn_must_be_in_the_copy_region() -> None:
    key = f"arn:aws:kms:eu-west-1:111122223333:key/{KEY_ID}"
    with pytest.raises(ValueError) as err:
        parse_policies(f"dr: newest=1 copy=eu-central-1 copy_key={key}", BASE)
    assert str(err.value) == f"policy 'dr': copy_key={key} is not in the copy region eu-central-1"


def test_copy_key_needs_copy() -> None:
    with pytest.raises(ValueError) as err:
        parse_policies("dr: newest=1 copy_key=alias/backup", BASE)
    assert str(err.value) == (
        "policy 'dr': copy_key=alias/backup needs copy=<region> (the region the key is in)"
    )


def test_one_bad_policy_fails_the_whole_text() -> None:
    with pytest.raises(ValueError, match="policy 'bad'"):
        parse_policies("gold: newest=3; bad: newest=0; silver: newest=2", BASE)


# --- describe -----------------------------------------------------------------------------


def test_describe_names_the_tiers_that_are_on() -> None:
    policies = parse_policies(GOLD_AND_SILVER + "; dr: newest=3 copy=us-east-1", BASE)
    assert describe(policies["gold"]) == "gold: newest 14, daily 14, weekly 8, monthly 12, yearly 3"
    assert (
        describe(policies["silver"])
        == "silver: newest 7, days 30, copies to eu-central-1 with key alias/backup"
    )
    assert describe(policies["dr"]) == "dr: newest 3, copies to us-east-1"
    assert describe(policies[DEFAULT]) == "default: newest 7, days 30"


def test_describe_the_example() -> None:
    policy = Policy(
        "gold",
        RetentionPolicy(keep_newest=14, keep_daily=14, keep_weekly=8, keep_monthly=12, keep_yearly=3),
        copy_region="eu-central-1",
    )
    assert (
        describe(policy)
        == "gold: newest 14, daily 14, weekly 8, monthly 12, yearly 3, copies to eu-central-1"
    )


# --- read_backup_tag ----------------------------------------------------------------------

NAMES = frozenset({DEFAULT, "gold", "silver"})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, BackupTag("absent")),
        ("true", BackupTag("policy", DEFAULT, "true")),
        (" True ", BackupTag("policy", DEFAULT, " True ")),
        ("default", BackupTag("policy", DEFAULT, "default")),
        ("DEFAULT", BackupTag("policy", DEFAULT, "DEFAULT")),
        ("gold", BackupTag("policy", "gold", "gold")),
        (" Gold\n", BackupTag("policy", "gold", " Gold\n")),
        ("false", BackupTag("opted_out", raw="false")),
        ("No", BackupTag("opted_out", raw="No")),
        (" NEVER ", BackupTag("opted_out", raw=" NEVER ")),
        ("off", BackupTag("opted_out", raw="off")),
        ("bronze", BackupTag("unknown", raw="bronze")),
        ("", BackupTag("unknown", raw="")),
        ("  ", BackupTag("unknown", raw="  ")),
        ("yes", BackupTag("unknown", raw="yes")),
        ("gold silver", BackupTag("unknown", raw="gold silver")),
    ],
)
def test_read_backup_tag(value: str | None, expected: BackupTag) -> None:
    assert read_backup_tag(value, NAMES) == expected


def test_read_backup_tag_true_and_default_need_no_policy_list() -> None:
    assert read_backup_tag("true", ()) == BackupTag("policy", DEFAULT, "true")
    assert read_backup_tag("default", ()) == BackupTag("policy", DEFAULT, "default")
    assert read_backup_tag("gold", ()) == BackupTag("unknown", raw="gold")


def test_read_backup_tag_with_parsed_policies() -> None:
    policies = parse_policies(GOLD_AND_SILVER, BASE)
    assert read_backup_tag("SILVER", policies) == BackupTag("policy", "silver", "SILVER")
