"""Who is the owner? A pure function of a CloudTrail ``userIdentity`` object.

Every outcome is a :class:`Resolution`: either a value that is a valid EC2 tag value as it was
given (:func:`owner_value`: EC2 takes any character; one line, at most 256 characters, naming
something - a letter or a digit) or ``value=None`` with one of the documented
:data:`UNRESOLVED_REASONS`. No input, however malformed, raises. The table in
docs/owner_tagger.md is the user-facing version of this module.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from autopilot.tags import MAX_TAG_VALUE

Kind = Literal["person", "role", "service", "instance-role", "root", "account", "unresolved"]

NO_IDENTITY: Final = "no-identity"
UNKNOWN_TYPE: Final = "unknown-type"
NO_NAME: Final = "no-name"
# The only reasons an owner can be unresolved; each is explained in docs/owner_tagger.md.
UNRESOLVED_REASONS: Final = frozenset({NO_IDENTITY, UNKNOWN_TYPE, NO_NAME})

SSO_ROLE_PREFIX: Final = "AWSReservedSSO_"
SERVICE_ROLE_PREFIX: Final = "AWSServiceRoleFor"
INSTANCE_ID: Final = re.compile(r"i-[0-9a-f]{8}(?:[0-9a-f]{9})?")
# Session names that name a tool, not a person: the SDKs' and the CLI's when the caller gave
# none, and the defaults of common CI and deploy tools - GitHub's configure-aws-credentials
# action ("GitHubActions", the same for every repository), CodeBuild ("AWSCodeBuild-<build id>")
# and CloudFormation with a service role ("AWSCloudFormation"). The role name is the better clue.
GENERIC_SESSION: Final = re.compile(
    r"(?:botocore-session|aws-go-sdk|aws-sdk-[a-z]+|aws-cli|awscli)[-_]?\d*|\d+"
    r"|GitHubActions|AWSCodeBuild-[0-9a-f-]+|AWSCloudFormation",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Resolution:
    """The owner chosen for one identity: ``value`` (a clean tag value) or None, and why."""

    value: str | None
    kind: Kind
    reason: str

    @property
    def resolved(self) -> bool:
        return self.value is not None

    def as_dict(self) -> dict[str, Any]:
        return {"value": self.value, "kind": self.kind, "reason": self.reason}


def _unresolved(reason: str) -> Resolution:
    return Resolution(None, "unresolved", reason)


def _text(mapping: Mapping[object, object], key: str) -> str:
    value = mapping.get(key)
    return value.strip() if isinstance(value, str) else ""


def _arn_resource(arn: str) -> list[str]:
    """``arn:aws:sts::1:assumed-role/Role/session`` -> ``["assumed-role", "Role", "session"]``."""
    parts = arn.split(":", 5)
    return parts[5].split("/") if len(parts) == 6 and parts[0] == "arn" else []


def _source_identity(identity: Mapping[object, object]) -> str:
    """``sessionContext.sourceIdentity``: set by the identity provider or the principal that
    assumed the role, and unchangeable for the session (and the roles it chains into) - unlike
    the session name, which the caller picks."""
    context = identity.get("sessionContext")
    return _text(context, "sourceIdentity") if isinstance(context, Mapping) else ""


def _issuer(identity: Mapping[object, object]) -> Mapping[object, object]:
    context = identity.get("sessionContext")
    issuer = context.get("sessionIssuer") if isinstance(context, Mapping) else None
    return issuer if isinstance(issuer, Mapping) else {}


def owner_value(value: str | None) -> str | None:
    """``value`` as an owner tag value, or None when it names nothing.

    EC2 accepts any character in a tag value, so nothing is replaced (an invented character
    would make a name nobody has): whitespace and control characters become single spaces (a
    tag is one line), it is cut to EC2's 256 characters, and a value without a single letter or
    digit (``!!!``, ``---``) is no owner at all - no tag is better than a guess."""
    if value is None:
        return None
    line = " ".join("".join(c if c.isprintable() else " " for c in value).split())[:MAX_TAG_VALUE].strip()
    return line if any(c.isalnum() for c in line) else None


def _done(value: str, kind: Kind, reason: str) -> Resolution:
    cleaned = owner_value(value)
    return Resolution(cleaned, kind, reason) if cleaned else _unresolved(NO_NAME)


def resolve_owner(identity: object) -> Resolution:
    """The owner of whatever this CloudTrail ``userIdentity`` created (see the module doc)."""
    if not isinstance(identity, Mapping):
        return _unresolved(NO_IDENTITY)
    kind = _text(identity, "type")
    handler = _BY_TYPE.get(kind)
    return handler(identity) if handler else _unresolved(UNKNOWN_TYPE)


def _iam_user(identity: Mapping[object, object]) -> Resolution:
    resource = _arn_resource(_text(identity, "arn"))
    name = _text(identity, "userName") or (resource[-1] if len(resource) >= 2 else "")
    return _done(name, "person", "IAM user name") if name else _unresolved(NO_NAME)


def _root(identity: Mapping[object, object]) -> Resolution:
    return Resolution("root", "root", "the account's root user")


def _assumed_role(identity: Mapping[object, object]) -> Resolution:
    resource = _arn_resource(_text(identity, "arn"))
    issuer = _issuer(identity)
    role = resource[1] if len(resource) == 3 else _text(issuer, "userName")
    session = resource[2] if len(resource) == 3 else ""
    if not session:
        principal = _text(identity, "principalId")
        session = principal.partition(":")[2]
    invoked_by = _text(identity, "invokedBy")
    if role.startswith(SERVICE_ROLE_PREFIX) or "/aws-service-role/" in _text(issuer, "arn"):
        # A service-linked role: AWS launched it for a service (Auto Scaling, EC2 Fleet, ...).
        name = invoked_by or role
        return _done(name, "service", "service-linked role") if name else _unresolved(NO_NAME)
    if source := _source_identity(identity):
        return _done(source, "person", "source identity")
    if not session:
        return _done(role, "role", "role without session name") if role else _unresolved(NO_NAME)
    if INSTANCE_ID.fullmatch(session):
        # An instance profile: software on that instance made the call with the role.
        return _done(f"{role}/{session}" if role else session, "instance-role", "instance profile")
    if role.startswith(SSO_ROLE_PREFIX):
        return _done(session, "person", "IAM Identity Center user")
    if GENERIC_SESSION.fullmatch(session):
        return _done(role, "role", "SDK default session name") if role else _unresolved(NO_NAME)
    return _done(session, "person", "role session name")


def _federated_user(identity: Mapping[object, object]) -> Resolution:
    resource = _arn_resource(_text(identity, "arn"))
    name = resource[-1] if len(resource) >= 2 else _text(identity, "principalId").partition(":")[2]
    return _done(name, "person", "federated user name") if name else _unresolved(NO_NAME)


def _saml_user(identity: Mapping[object, object]) -> Resolution:
    name = _text(identity, "userName")
    return _done(name, "person", "SAML user name") if name else _unresolved(NO_NAME)


def _web_identity_user(identity: Mapping[object, object]) -> Resolution:
    # The subject is an opaque id at its provider: keep the provider so it can be looked up.
    name = _text(identity, "userName")
    provider = _text(identity, "identityProvider")
    if not name:
        return _unresolved(NO_NAME)
    return _done(f"{provider}/{name}" if provider else name, "person", "web identity subject")


def _aws_service(identity: Mapping[object, object]) -> Resolution:
    name = _text(identity, "invokedBy")
    return _done(name, "service", "AWS service") if name else _unresolved(NO_NAME)


def _aws_account(identity: Mapping[object, object]) -> Resolution:
    account = _text(identity, "accountId")
    return _done(f"account:{account}", "account", "another AWS account") if account else _unresolved(NO_NAME)


_BY_TYPE = {
    "IAMUser": _iam_user,
    "Root": _root,
    "AssumedRole": _assumed_role,
    "FederatedUser": _federated_user,
    "SAMLUser": _saml_user,
    "WebIdentityUser": _web_identity_user,
    "AWSService": _aws_service,
    "AWSAccount": _aws_account,
}


CALLER_TEXT_MAX: Final = 200


def caller(identity: object) -> dict[str, str] | None:
    """Who made the call, as the mail names them: the identity's ``type`` and its ARN (or
    principal id), as short strings; None when the event has no identity object."""
    if not isinstance(identity, Mapping):
        return None
    found: dict[str, str] = {}
    kind = identity.get("type")
    if kind:
        found["type"] = str(kind)[:CALLER_TEXT_MAX]
    name = identity.get("arn") or identity.get("principalId")
    if isinstance(name, str):
        found["name"] = name[:CALLER_TEXT_MAX]
    return found
