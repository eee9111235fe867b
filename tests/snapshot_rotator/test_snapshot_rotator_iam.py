"""The function's IAM role enforces the safety rules on its own: it can delete only snapshots
tagged ManagedBy=<stack>, create only tagged snapshots of opted-in resources, and tag only
while creating."""

from __future__ import annotations

from typing import Any

import pytest

from snapshot_rotator.app import PERMISSIONS
from template_tools import RUNTIME_ACTIONS, as_list, role_statements

pytestmark = pytest.mark.unit  # the template alone: no AWS

STACK_REF = {"Ref": "AWS::StackName"}


def _statements() -> list[dict[str, Any]]:
    """Every statement the role gets: its own policies and the shared OwnerMailPolicy."""
    return role_statements("SnapshotRotatorFunctionRole")


def _with(action: str) -> list[dict[str, Any]]:
    """This region's statements of ``action`` (the copy regions' ones: _copies)."""
    return [
        s for s in _statements() if action in as_list(s["Action"]) and "ec2:*::" not in str(s["Resource"])
    ]


def _copies() -> list[dict[str, Any]]:
    return [s for s in _statements() if "ec2:*::" in str(s["Resource"])]


def _resources(statement: dict[str, Any]) -> str:
    return str(statement["Resource"])


def test_delete_only_with_this_stacks_managed_by_tag() -> None:
    (statement,) = _with("ec2:DeleteSnapshot")
    assert statement["Condition"] == {"StringEquals": {"ec2:ResourceTag/ManagedBy": STACK_REF}}
    assert ":snapshot/*" in _resources(statement)


def test_new_snapshots_must_carry_managed_by_and_tags_only_at_creation() -> None:
    for action in ("ec2:CreateSnapshot", "ec2:CreateSnapshots"):
        on_snapshots = [s for s in _with(action) if ":snapshot/*" in _resources(s)]
        assert [s["Condition"] for s in on_snapshots] == [
            {"StringEquals": {"aws:RequestTag/ManagedBy": STACK_REF}}
        ]
    (tagging,) = _with("ec2:CreateTags")
    assert tagging["Condition"] == {
        "StringEquals": {"ec2:CreateAction": ["CreateSnapshot", "CreateSnapshots"]}
    }


def test_only_opted_in_volumes_and_instances_are_snapshotted() -> None:
    (volume,) = [s for s in _with("ec2:CreateSnapshot") if ":volume/*" in _resources(s)]
    (instance,) = [s for s in _with("ec2:CreateSnapshots") if ":instance/*" in _resources(s)]
    for statement in (volume, instance):
        assert statement["Condition"] == {"StringEqualsIgnoreCase": {"ec2:ResourceTag/Backup": "true"}}


def test_in_other_regions_only_copies_to_the_copy_regions_tagged_as_made_and_deleted_by_tag() -> None:
    """Resources in every region (the destination is a parameter): each statement is bound to the
    listed copy regions by aws:RequestedRegion, and to the stack's tag."""
    by_action = {a: s for s in _copies() for a in as_list(s["Action"])}
    assert set(by_action) == {"ec2:CopySnapshot", "ec2:CreateTags", "ec2:DeleteSnapshot"}
    for statement in by_action.values():
        assert statement["Condition"]["StringEquals"]["aws:RequestedRegion"] == {
            "Ref": "SnapshotRotatorCopyRegions"
        }
    assert by_action["ec2:CopySnapshot"]["Condition"]["StringEquals"]["aws:RequestTag/ManagedBy"] == STACK_REF
    assert by_action["ec2:CreateTags"]["Condition"]["StringEquals"]["ec2:CreateAction"] == "CopySnapshot"
    assert (
        by_action["ec2:DeleteSnapshot"]["Condition"]["StringEquals"]["ec2:ResourceTag/ManagedBy"] == STACK_REF
    )
    (keys,) = [s for s in _statements() if "kms:CreateGrant" in as_list(s["Action"])]
    assert keys["Resource"] == {"Ref": "SnapshotRotatorCopyKmsKeys"}
    assert keys["Condition"] == {"StringLike": {"kms:ViaService": "ec2.*.amazonaws.com"}}


def test_star_resources_are_read_only_and_actions_match_the_code() -> None:
    for statement in _statements():
        if statement["Resource"] == "*":
            assert all(a.split(":")[1].startswith("Describe") for a in as_list(statement["Action"]))
    granted = {a for s in _statements() for a in as_list(s["Action"])}
    # sqs:SendMessage comes from the Globals on-failure destination, not from the code
    assert granted - RUNTIME_ACTIONS == PERMISSIONS
