"""autopilot.routing, pure: who a finding goes to, and the owner digests of a run - one per
recipient, only their own findings, within the run's byte budget."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autopilot import routing
from autopilot.notify import Digest, Item

pytestmark = pytest.mark.unit

KINDS = {
    "failed": routing.Kind("Backups that FAILED", "{count} failed"),
    "stale": routing.Kind("Stale", "{count} overdue"),
}


def _digests(findings: list[routing.Finding]) -> routing.Owners:
    return routing.owner_digests(
        findings, KINDS, digest=Digest("snapshot_rotator", "stack", "eu-west-1"), noun="backup", advice=["a"]
    )


def test_an_address_tag_wins_then_the_map_by_owner_then_by_team_else_nobody() -> None:
    routes = routing.Routes({"bob": "bob@example.com", "payments": "pay@example.com"})
    assert routes.recipient("Alice@Example.com", "payments") == "alice@example.com"
    assert routes.recipient("bob", "payments") == "bob@example.com"
    assert routes.recipient("carol", "payments") == "pay@example.com"
    assert routes.recipient("carol", "sales") is None and routes.recipient(None) is None
    assert routes.recipients([("v-1", "carol", "payments"), ("v-2", "dave", None)]) == {
        "v-1": "pay@example.com"
    }


@pytest.mark.parametrize(
    "text", ['["a@x.com"]', '{"alice": "not an address"}', '{"": "a@x.com"}', "{not json"]
)
def test_a_malformed_map_names_its_problem_and_guesses_no_entry(text: str) -> None:
    with pytest.raises(routing.RoutingError) as err:
        routing.Routes.parse(text)
    assert err.value.problems


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["a@x.com", "b@x.com", "c@x.com", None]), st.sampled_from(list(KINDS))),
        max_size=30,
    )
)
def test_each_recipient_gets_one_digest_with_exactly_their_own_findings(
    plan: list[tuple[str | None, str]],
) -> None:
    findings = [routing.Finding(to, kind, Item(f"vol-{n:04d}")) for n, (to, kind) in enumerate(plan)]
    owners = _digests(findings)
    assert sorted(m.to for m in owners.mails) == sorted({to for to, _ in plan if to})
    for mail in owners.mails:
        for n, (to, _) in enumerate(plan):
            assert (f"vol-{n:04d}" in mail.body) == (to == mail.to), (n, mail.to)
    assert owners.unmailed == ()


def test_recipients_past_the_runs_byte_budget_are_named_to_the_operators_not_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    findings = [routing.Finding(f"o{n}@x.com", "failed", Item(f"vol-{n}")) for n in range(10)]
    one = len(_digests(findings[:1]).mails[0].body)
    monkeypatch.setattr(routing, "ROUTED_BYTES", one * 3 + 200)
    owners = _digests(findings)
    assert len(owners.mails) == 3 and len(owners.unmailed) == 7
    assert set(owners.unmailed) | {m.to for m in owners.mails} == {f"o{n}@x.com" for n in range(10)}
    (note,) = owners.note()
    assert "7 recipients" in note and "o9@x.com" in note
