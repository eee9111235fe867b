"""decide/identity.py: owner resolution - the documented table, every sample event, and "never
raises" properties; the caller as the mail names it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autopilot.tags import MAX_TAG_VALUE
from owner_tagger.decide.identity import UNRESOLVED_REASONS, Resolution, caller, owner_value, resolve_owner

pytestmark = pytest.mark.unit

ACCOUNT = "123456789012"


def assumed(role: str, session: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "AssumedRole",
        "principalId": f"AROAEXAMPLE:{session}",
        "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{session}",
        "accountId": ACCOUNT,
        "sessionContext": {
            "sessionIssuer": {"type": "Role", "userName": role, "arn": f"arn:aws:iam::{ACCOUNT}:role/{role}"}
        },
        **extra,
    }


# (identity, expected value, expected kind) — the table in docs/owner_tagger.md.
TABLE: list[tuple[str, Any, str | None, str]] = [
    (
        "iam user",
        {"type": "IAMUser", "userName": "bob", "arn": f"arn:aws:iam::{ACCOUNT}:user/bob"},
        "bob",
        "person",
    ),
    (
        "iam user, arn only",
        {"type": "IAMUser", "arn": f"arn:aws:iam::{ACCOUNT}:user/dev/alice"},
        "alice",
        "person",
    ),
    (
        "sso user",
        assumed("AWSReservedSSO_Admin_0123abcd", "jane.doe@example.com"),
        "jane.doe@example.com",
        "person",
    ),
    ("role session", assumed("Developer", "maria.garcia"), "maria.garcia", "person"),
    ("sdk default session", assumed("Deployer", "botocore-session-1700000000"), "Deployer", "role"),
    ("github actions default session", assumed("deploy-prod", "GitHubActions"), "deploy-prod", "role"),
    (
        "codebuild session",
        assumed("codebuild-app", "AWSCodeBuild-5f2ac0e4-7d21-4c3e-9e0a-1b2c3d4e5f60"),
        "codebuild-app",
        "role",
    ),
    ("cloudformation service role", assumed("cfn-deployer", "AWSCloudFormation"), "cfn-deployer", "role"),
    (
        "source identity wins over the session name",
        {
            **assumed("Developer", "whatever-i-like"),
            "sessionContext": {
                "sourceIdentity": "maria.garcia@example.com",
                "sessionIssuer": {"type": "Role", "userName": "Developer"},
            },
        },
        "maria.garcia@example.com",
        "person",
    ),
    (
        "source identity wins over a CI default session",
        {
            **assumed("deploy-prod", "GitHubActions"),
            "sessionContext": {"sourceIdentity": "octocat", "sessionIssuer": {"type": "Role"}},
        },
        "octocat",
        "person",
    ),
    (
        "instance profile",
        assumed("ci-runner", "i-0fedcba9876543210"),
        "ci-runner/i-0fedcba9876543210",
        "instance-role",
    ),
    (
        "auto scaling",
        assumed("AWSServiceRoleForAutoScaling", "AutoScaling", invokedBy="autoscaling.amazonaws.com"),
        "autoscaling.amazonaws.com",
        "service",
    ),
    (
        "service role without invokedBy",
        assumed("AWSServiceRoleForEC2Fleet", "EC2Fleet"),
        "AWSServiceRoleForEC2Fleet",
        "service",
    ),
    (
        "cloudformation on behalf of a person",
        assumed("Developer", "maria.garcia", invokedBy="cloudformation.amazonaws.com"),
        "maria.garcia",
        "person",
    ),
    ("root", {"type": "Root", "arn": f"arn:aws:iam::{ACCOUNT}:root", "accountId": ACCOUNT}, "root", "root"),
    (
        "federated user",
        {"type": "FederatedUser", "arn": f"arn:aws:sts::{ACCOUNT}:federated-user/carol"},
        "carol",
        "person",
    ),
    (
        "federated, principal only",
        {"type": "FederatedUser", "principalId": f"{ACCOUNT}:carol"},
        "carol",
        "person",
    ),
    (
        "saml user",
        {"type": "SAMLUser", "userName": "dave@example.com", "identityProvider": "Q3tN="},
        "dave@example.com",
        "person",
    ),
    (
        "web identity",
        {"type": "WebIdentityUser", "userName": "1102345", "identityProvider": "accounts.google.com"},
        "accounts.google.com/1102345",
        "person",
    ),
    ("aws service", {"type": "AWSService", "invokedBy": "dlm.amazonaws.com"}, "dlm.amazonaws.com", "service"),
    ("other account", {"type": "AWSAccount", "accountId": "210987654321"}, "account:210987654321", "account"),
    # EC2 takes any character in a value: the name as given, on one line (nothing invented)
    ("name with other characters", {"type": "IAMUser", "userName": "bob (ops)\n"}, "bob (ops)", "person"),
    ("a name that names nothing", {"type": "IAMUser", "userName": "!!!"}, None, "unresolved"),
    ("unknown type", {"type": "Unknown", "principalId": "x"}, None, "unresolved"),
    ("no type", {"userName": "bob"}, None, "unresolved"),
    ("not an object", "IAMUser", None, "unresolved"),
    ("missing", None, None, "unresolved"),
    ("service without name", {"type": "AWSService"}, None, "unresolved"),
    ("iam user without name", {"type": "IAMUser"}, None, "unresolved"),
    ("name of only bad characters", {"type": "SAMLUser", "userName": "   "}, None, "unresolved"),
]


@pytest.mark.parametrize(("identity", "value", "kind"), [t[1:] for t in TABLE], ids=[t[0] for t in TABLE])
def test_resolution_table(identity: Any, value: str | None, kind: str) -> None:
    result = resolve_owner(identity)
    assert (result.value, result.kind) == (value, kind)
    if value is None:
        assert result.reason in UNRESOLVED_REASONS


SAMPLES = {
    "cloudtrail.run_instances.sso_user": "jane.doe@example.com",
    "cloudtrail.run_instances.iam_user": "bob",
    "cloudtrail.run_instances.autoscaling": "autoscaling.amazonaws.com",
    "cloudtrail.run_instances.multi_instance": "maria.garcia",
    "cloudtrail.run_instances.root": "root",
    "cloudtrail.run_instances.instance_profile": "ci-runner/i-0fedcba9876543210",
    "cloudtrail.run_instances.federated_user": "carol",
    "cloudtrail.create_volume.web_identity_user": "accounts.google.com/110234567890123456789",
    "cloudtrail.create_snapshot.saml_user": "dave@example.com",
    "cloudtrail.create_snapshots.aws_service": "dlm.amazonaws.com",
    "cloudtrail.copy_image.federated_user": "carol",
}


@pytest.mark.parametrize(("name", "owner"), SAMPLES.items())
def test_sample_events_resolve(load_event: Callable[[str], dict[str, Any]], name: str, owner: str) -> None:
    assert resolve_owner(load_event(f"owner_tagger/{name}")["detail"]["userIdentity"]).value == owner


@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        (
            {"type": "IAMUser", "arn": "arn:aws:iam::1:user/bob"},
            {"type": "IAMUser", "name": "arn:aws:iam::1:user/bob"},
        ),
        ({"type": "Unknown", "principalId": "AIDAX"}, {"type": "Unknown", "name": "AIDAX"}),
        ({"type": 42, "arn": ["not", "text"]}, {"type": "42"}),
        ({}, {}),
        ("IAMUser", None),
        (None, None),
    ],
)
def test_caller_is_short_plain_text(identity: Any, expected: dict[str, str] | None) -> None:
    assert caller(identity) == expected


identity_like = st.recursive(
    st.none() | st.integers() | st.text(max_size=500),
    lambda inner: st.dictionaries(st.sampled_from(["type", "arn", "principalId"]), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=200)
@given(identity_like)
def test_caller_never_raises_and_stays_small(identity: Any) -> None:
    found = caller(identity)
    assert found is None or all(isinstance(v, str) and len(v) <= 200 for v in found.values())


def assert_valid(result: Resolution) -> None:
    assert isinstance(result, Resolution)
    if result.value is None:
        assert result.kind == "unresolved"
        assert result.reason in UNRESOLVED_REASONS
    else:
        assert result.value.strip() == result.value != ""
        assert len(result.value) <= MAX_TAG_VALUE
        # a valid EC2 tag value as given: one printable line, naming something
        assert owner_value(result.value) == result.value and any(c.isalnum() for c in result.value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=300),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
KNOWN_TYPES = [
    "IAMUser",
    "AssumedRole",
    "Root",
    "FederatedUser",
    "SAMLUser",
    "WebIdentityUser",
    "AWSService",
    "AWSAccount",
]
FIELDS = [
    "type",
    "userName",
    "arn",
    "principalId",
    "invokedBy",
    "accountId",
    "identityProvider",
    "sessionContext",
]


@settings(max_examples=400)
@given(json_values)
def test_any_json_value_resolves_or_is_unresolved(identity: Any) -> None:
    assert_valid(resolve_owner(identity))


@settings(max_examples=600)
@given(
    st.sampled_from(KNOWN_TYPES),
    st.dictionaries(st.sampled_from(FIELDS), json_values | st.text(min_size=1, max_size=400), max_size=6),
    st.text(max_size=300),
    st.text(max_size=300),
)
def test_identities_of_known_types_never_raise(
    kind: str, fields: dict[str, Any], role: str, session: str
) -> None:
    identity = {**fields, "type": kind}
    assert_valid(resolve_owner(identity))
    with_arn = {**identity, "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{session}"}
    assert_valid(resolve_owner(with_arn))


@pytest.mark.parametrize(
    ("given_value", "written"),
    [
        ("maria.garcia", "maria.garcia"),
        ("maria!garcia", "maria!garcia"),  # EC2 takes any character: nothing is replaced
        ("José Núñez", "José Núñez"),
        ("  two\nlines\t ", "two lines"),
        ("x" * 300, "x" * 256),
        ("!!!", None),  # names nothing: no tag rather than a guess
        ("- _ -", None),
        ("", None),
    ],
)
def test_an_owner_value_is_written_as_given_or_not_at_all(given_value: str, written: str | None) -> None:
    assert owner_value(given_value) == written
    result = resolve_owner(assumed("Developer", given_value)) if given_value.strip() else None
    if result is not None and written is None:
        assert result.value != given_value  # never a session name that names nothing
