"""Which IAM actions each automation really uses, observed across the whole test session.

Every AWS call made through ``autopilot.aws.client`` passes ``autopilot.aws.call_hooks``; the
session hook (tests/conftest.py) attributes it to the automation **whose code is on the call
stack** (the outermost frame whose module is ``<automation>`` or ``<automation>.*``), so shared
layer code (``autopilot.notify``, ``autopilot.aws.running_instances``) counts for the automation
that called it, and set-up calls made by tests or the demo count for nobody. The environment
(POWERTOOLS_SERVICE_NAME) is not used: tests set it for whole modules, including their set-up.

Boto operation names map to IAM actions as ``<service>:<Operation>``, plus the actions AWS
authorizes implicitly: tag-on-create (``TagSpecifications``) also needs ``ec2:CreateTags``; an
alarm with an EC2 action, ``iam:CreateServiceLinkedRole``; an encrypted copy, KMS.

The judgement (granted == observed, per automation) runs once at the end of the session, on the
calls of every worker (tests/reliability/figures.py, tests/conftest.py).
"""

from __future__ import annotations

import sys
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

# What CloudWatch does with the caller's rights on an alarm with an EC2 action (its
# service-linked role), and EBS on an encrypted copy: no botocore call names them.
from instance_recovery.service import IAM_FOR_EC2_ALARM_ACTIONS
from snapshot_rotator.service import KMS_FOR_ENCRYPTED_COPY

ROOT = Path(__file__).resolve().parent.parent.parent
AUTOMATIONS = frozenset(p.parent.name for p in (ROOT / "functions").glob("*/app.py"))

# botocore service name -> IAM service prefix, where they differ.
IAM_PREFIX: dict[str, str] = {"monitoring": "cloudwatch", "stepfunctions": "states", "sesv2": "ses"}
# (service, operation) that also need another action when the request carries tags.
TAG_ON_CREATE = {
    ("ec2", "CreateSnapshot"),
    ("ec2", "CreateSnapshots"),
    ("ec2", "CopySnapshot"),
    ("ec2", "RunInstances"),
}

_lock = threading.Lock()
observed: dict[str, set[str]] = defaultdict(set)
unattributed: set[str] = set()
calls_seen: dict[str, int] = defaultdict(int)


def automation_on_stack() -> str | None:
    """The outermost automation on the stack: the one running, also when its code calls
    another's (owner_backfill writes through owner_tagger.service: its role makes the call)."""
    frame = sys._getframe(2)
    found = None
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        top = module.split(".", 1)[0]
        if top in AUTOMATIONS:
            found = top
        frame = frame.f_back  # type: ignore[assignment]
    return found


# A DynamoDB transaction has no IAM action of its own: each of its items is authorized as the
# underlying item operation (DynamoDB developer guide, "Using IAM with DynamoDB transactions").
TRANSACTION_ITEM = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}


def iam_actions(service: str, operation: str, params: dict[str, Any]) -> set[str]:
    prefix = IAM_PREFIX.get(service, service)
    if (service, operation) == ("dynamodb", "TransactWriteItems"):
        return {f"dynamodb:{TRANSACTION_ITEM[kind]}" for item in params["TransactItems"] for kind in item}
    actions = {f"{prefix}:{operation}"}
    if (service, operation) in TAG_ON_CREATE and params.get("TagSpecifications"):
        actions.add(f"{prefix}:CreateTags")
    if (service, operation) == ("ec2", "CopySnapshot") and params.get("KmsKeyId"):
        actions |= KMS_FOR_ENCRYPTED_COPY
    if (prefix, operation) == ("cloudwatch", "PutMetricAlarm") and any(
        ":automate:" in str(a) for a in params.get("AlarmActions", [])
    ):
        actions |= IAM_FOR_EC2_ALARM_ACTIONS
    return actions


def hook(service: str, operation: str, params: dict[str, Any]) -> None:
    owner = automation_on_stack()
    actions = iam_actions(service, operation, params)
    with _lock:
        if owner is None:
            unattributed.update(actions)
            return
        observed[owner].update(actions)
        calls_seen[owner] += 1


def granted(name: str) -> set[str]:
    """The actions the automation's function role allows (template.yaml, as deployed): every
    policy attached to it, inline or its own resource (template_tools.role_statements), but
    those granted for Lambda itself, which the code never calls (the on-failure destination,
    the function's logs, the health check's network interfaces: template_tools.RUNTIME_ACTIONS)."""
    from template_tools import RUNTIME_ACTIONS, as_list, camel, role_statements

    return {
        a
        for s in role_statements(f"{camel(name)}FunctionRole")
        if s["Effect"] == "Allow"
        for a in as_list(s["Action"])
        if a not in RUNTIME_ACTIONS
    }
