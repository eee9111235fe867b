"""A small IAM policy evaluator for the tests: given the statements a principal gets (resolved:
no CloudFormation functions left, tests/template_tools.py ``render``) and one request, the
decision IAM would make - judged by what a policy does, so no rewrite of its structure can
fool a test that asks it a question.

    decide(statements, Request("ec2:StopInstances", arn, {"ec2:ResourceTag/AutoStop": "no"}))

The rules (IAM User Guide, "Policy evaluation logic" and "Condition operators"):

- an explicit Deny that matches wins; else an Allow that matches allows; else implicit deny;
- a statement matches when its Action (or NotAction), Resource (or NotResource), Principal
  (resource policies only) and every condition match; ``*`` and ``?`` are wildcards; actions
  compare case-insensitively, resources case-sensitively;
- conditions: operators AND, keys within an operator AND, the values of a key OR (a negated
  operator: none of them); condition key names are case-insensitive; ``...IfExists`` holds when
  the key is absent; a negated operator holds when the key is absent; ``Null`` tests presence;
  ``ForAllValues:`` holds when every request value matches (also when there is none: the hole
  a Null check closes), ``ForAnyValue:`` when at least one does; an empty list is no value;
- ``ArnEquals`` and ``ArnLike`` are the same test (IAM allows wildcards in both), per ARN
  segment.

An action authorised on several resources at once (ssm:SendCommand: the document and every
instance; ec2:CreateNetworkInterface: the interface, the subnet, each security group) is allowed
only if every one is: ``decide_all``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ALLOW, DENY, IMPLICIT_DENY = "allow", "deny", "implicit-deny"


@dataclass(frozen=True)
class Request:
    action: str
    resource: str
    context: Mapping[str, Any] = field(default_factory=dict)
    # For resource policies only: {"AWS": "<principal ARN>"} or {"Service": "<service>.amazonaws.com"}.
    principal: Mapping[str, str] | None = None


def _glob(pattern: str, value: str, case: bool = True) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, 0 if case else re.IGNORECASE) is not None


def _arn_like(pattern: str, value: str) -> bool:
    pattern_parts, value_parts = pattern.split(":", 5), value.split(":", 5)
    if len(pattern_parts) != 6 or len(value_parts) != 6:
        return False
    return all(_glob(p, v) for p, v in zip(pattern_parts, value_parts, strict=True))


STRING_OPERATORS = {
    "StringEquals": (lambda policy, value: policy == value, False),
    "StringNotEquals": (lambda policy, value: policy == value, True),
    "StringEqualsIgnoreCase": (lambda policy, value: policy.lower() == value.lower(), False),
    "StringNotEqualsIgnoreCase": (lambda policy, value: policy.lower() == value.lower(), True),
    "StringLike": (_glob, False),
    "StringNotLike": (_glob, True),
    "ArnEquals": (_arn_like, False),
    "ArnLike": (_arn_like, False),
    "ArnNotEquals": (_arn_like, True),
    "ArnNotLike": (_arn_like, True),
    "Bool": (lambda policy, value: policy.lower() == value.lower(), False),
    "NumericEquals": (lambda policy, value: float(value) == float(policy), False),
    "NumericNotEquals": (lambda policy, value: float(value) == float(policy), True),
    "NumericLessThan": (lambda policy, value: float(value) < float(policy), False),
    "NumericLessThanEquals": (lambda policy, value: float(value) <= float(policy), False),
    "NumericGreaterThan": (lambda policy, value: float(value) > float(policy), False),
    "NumericGreaterThanEquals": (lambda policy, value: float(value) >= float(policy), False),
}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _context_value(context: Mapping[str, Any], key: str) -> list[str] | None:
    """The request's values of a key (key names are case-insensitive); None when absent."""
    for name, value in context.items():
        if name.lower() == key.lower():
            values = [str(v).lower() if isinstance(v, bool) else str(v) for v in _as_list(value)]
            return values or None
    return None


def _condition_holds(operator: str, key: str, policy_values: list[Any], context: Mapping[str, Any]) -> bool:
    qualifier, _, name = operator.rpartition(":")
    if_exists = name.endswith("IfExists")
    name = name.removesuffix("IfExists")
    values = _context_value(context, key)
    policy = [str(v).lower() if isinstance(v, bool) else str(v) for v in policy_values]
    if name == "Null":
        wanted_absent = {"true": True, "false": False}[policy[0].lower()]
        return (values is None) == wanted_absent
    if name not in STRING_OPERATORS:
        raise ValueError(f"operator not known to this evaluator: {operator}")
    test, negated = STRING_OPERATORS[name]

    def matches(value: str) -> bool:
        hit = any(test(p, value) for p in policy)
        return not hit if negated else hit

    if values is None:
        if qualifier == "ForAllValues":
            return True
        return if_exists or (negated and qualifier != "ForAnyValue")
    if qualifier == "ForAllValues":
        return all(matches(v) for v in values)
    return any(matches(v) for v in values)


def _conditions_hold(conditions: Mapping[str, Any], context: Mapping[str, Any]) -> bool:
    return all(
        _condition_holds(operator, key, _as_list(values), context)
        for operator, keys in conditions.items()
        for key, values in keys.items()
    )


def _action_matches(patterns: Iterable[str], action: str) -> bool:
    return any(_glob(p, action, case=False) for p in patterns)


def _resource_matches(patterns: Iterable[str], resource: str) -> bool:
    return any(p == "*" or _glob(p, resource) for p in patterns)


DIRECT, THROUGH_ACCOUNT = "direct", "through the account"


def _principal_match(principal: Any, request: Request) -> str | None:
    """How a statement's Principal covers the request's: DIRECT (named, or a wildcard), or
    THROUGH_ACCOUNT (it names the principal's account: the account's own IAM policies decide)."""
    if principal is None:
        return DIRECT if request.principal is None else None  # an identity policy: its owner
    if request.principal is None:
        return None
    if principal == "*":
        return DIRECT
    for kind, values in principal.items():
        wanted = request.principal.get(kind)
        if wanted is not None and any(v in ("*", wanted) for v in _as_list(values)):
            return DIRECT
    caller = request.principal.get("AWS", "")
    if caller.count(":") >= 5:
        account = caller.split(":")[4]
        named = _as_list(principal.get("AWS", []))
        if any(v == account or (v.startswith("arn:") and v.endswith(f":iam::{account}:root")) for v in named):
            return THROUGH_ACCOUNT
    return None


def statement_matches(statement: Mapping[str, Any], request: Request) -> str | None:
    """None if the statement does not apply to the request, else how its Principal covers it."""
    if "Action" in statement:
        if not _action_matches(_as_list(statement["Action"]), request.action):
            return None
    elif _action_matches(_as_list(statement["NotAction"]), request.action):
        return None
    if "Resource" in statement:
        if not _resource_matches(_as_list(statement["Resource"]), request.resource):
            return None
    elif _resource_matches(_as_list(statement["NotResource"]), request.resource):
        return None
    how = _principal_match(statement.get("Principal"), request)
    if how is None or not _conditions_hold(statement.get("Condition", {}), request.context):
        return None
    return how


def decide(statements: Iterable[Mapping[str, Any]], request: Request) -> str:
    """One policy set of one kind: an identity's statements (request without principal), or a
    resource policy (request with one; a statement naming the principal's account counts here
    as if it named the principal: use ``decide_with_resource_policy`` to be exact)."""
    matching = [s for s in statements if statement_matches(s, request)]
    if any(s["Effect"] == "Deny" for s in matching):
        return DENY
    if any(s["Effect"] == "Allow" for s in matching):
        return ALLOW
    return IMPLICIT_DENY


def decide_with_resource_policy(
    resource_policy: Iterable[Mapping[str, Any]],
    identity_policy: Iterable[Mapping[str, Any]],
    request: Request,
    kms: bool = False,
) -> str:
    """A principal of the resource's own account: allowed by the resource policy naming it, or
    by its own identity policy - which for a KMS key counts only if the key policy lets the
    account decide (a statement naming the account), and for other resources always."""
    resource_policy, identity_policy = list(resource_policy), list(identity_policy)
    as_identity = Request(request.action, request.resource, request.context)
    hits = [(s, statement_matches(s, request)) for s in resource_policy]
    hits = [(s, how) for s, how in hits if how]
    if any(s["Effect"] == "Deny" for s, _ in hits) or decide(identity_policy, as_identity) == DENY:
        return DENY
    if any(s["Effect"] == "Allow" and how == DIRECT for s, how in hits):
        return ALLOW
    delegated = not kms or any(s["Effect"] == "Allow" and how == THROUGH_ACCOUNT for s, how in hits)
    if delegated and decide(identity_policy, as_identity) == ALLOW:
        return ALLOW
    return IMPLICIT_DENY


def decide_all(
    statements: Iterable[Mapping[str, Any]],
    action: str,
    resources: Mapping[str, Mapping[str, Any]],
    common: Mapping[str, Any] | None = None,
) -> str:
    """One call authorised on several resources ({ARN: that resource's context}; ``common``:
    the request's own keys, e.g. aws:TagKeys): allowed only if every resource is."""
    statements = list(statements)
    decisions = [
        decide(statements, Request(action, arn, {**(common or {}), **context}))
        for arn, context in resources.items()
    ]
    if DENY in decisions:
        return DENY
    return ALLOW if decisions and all(d == ALLOW for d in decisions) else IMPLICIT_DENY
