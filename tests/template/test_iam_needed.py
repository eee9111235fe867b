"""What the code needs is allowed: snapshot_rotator's calls, recorded from its own service code
(snapshot_rotator.service.create / delete, fed jobs its own planner made), each asked of the
deployed role as IAM authorises it - CreateSnapshot on the volume and the new snapshot,
CreateSnapshots on the instance, every volume it snapshots and the new snapshots, the
TagSpecifications as CreateTags with ec2:CreateAction (the ManagedBy tag among them). moto does
not enforce IAM, so only this tells a grant the code needs from one it does not."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from snapshot_rotator import service
from snapshot_rotator.app import PERMISSIONS
from snapshot_rotator.decide.retention import MANAGED_BY
from snapshot_rotator.decide.selection import OPT_IN_TAG, CreateJob, Instance, Volume, plan_creation
from template.iam_eval import ALLOW, Request, decide, decide_all
from template.test_iam_semantics import OTHER_ACCOUNT, RENDERINGS, ec2, rendering, role
from template_tools import ACCOUNT, REGION, STACK_NAME

# A function's service code runs (against a recording stand-in, no AWS): integration by the
# markers' rule (tests/shared/test_markers.py).
pytestmark = pytest.mark.integration

NOW = datetime(2026, 1, 1, 3, 0, tzinfo=UTC)
NEW_SNAPSHOTS = f"arn:aws:ec2:{REGION}::snapshot/*"  # a new snapshot's ARN (no account)


@pytest.fixture(params=RENDERINGS)
def statements(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return role(rendering(request.param), "snapshot_rotator")


class Recorder:
    """Stands in for the EC2 client: records each call the service code makes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, method: str) -> Any:
        def call(**kwargs: Any) -> dict[str, Any]:
            self.calls.append((method, kwargs))
            snap = {"SnapshotId": "snap-0new", "StartTime": NOW, "State": "pending"}
            return {**snap, "Snapshots": [snap]} if method == "create_snapshots" else snap

        return call


def _tag_facts(prefix: str, tags: dict[str, str]) -> dict[str, Any]:
    return {f"{prefix}/{k}": v for k, v in tags.items()}


def _requested_tags(kwargs: dict[str, Any]) -> dict[str, str]:
    specs = [s for s in kwargs.get("TagSpecifications", []) if s["ResourceType"] == "snapshot"]
    return {t["Key"]: t["Value"] for s in specs for t in s["Tags"]}


def authorisations(
    calls: list[tuple[str, dict[str, Any]]], tags_of: dict[str, dict[str, str]], jobs: dict[str, CreateJob]
) -> list[tuple[str, dict[str, dict[str, Any]], dict[str, Any]]]:
    """(action, {resource ARN: its context}, the request's own keys) for each call, as EC2
    authorises it; ``tags_of``: each volume's and instance's tags."""
    out: list[tuple[str, dict[str, dict[str, Any]], dict[str, Any]]] = []
    for method, kwargs in calls:
        action = "ec2:" + "".join(part.title() for part in method.split("_"))
        requested = _requested_tags(kwargs)
        request_keys: dict[str, Any] = {**_tag_facts("aws:RequestTag", requested)}
        if requested:
            request_keys["aws:TagKeys"] = list(requested)
        if method == "create_snapshot":
            sources = [ec2("volume", kwargs["VolumeId"])]
        elif method == "create_snapshots":
            instance = kwargs["InstanceSpecification"]["InstanceId"]
            sources = [ec2("instance", instance)] + [ec2("volume", v) for v in jobs[instance].volume_ids]
        elif method == "delete_snapshot":
            arn = f"arn:aws:ec2:{REGION}::snapshot/{kwargs['SnapshotId']}"
            out.append((action, {arn: {f"ec2:ResourceTag/{MANAGED_BY}": STACK_NAME}}, {}))
            continue
        else:
            raise AssertionError(f"a call this test does not know how EC2 authorises: {method}")
        resources = {arn: _tag_facts("ec2:ResourceTag", tags_of[arn.rsplit("/", 1)[1]]) for arn in sources}
        out.append((action, {**resources, NEW_SNAPSHOTS: {}}, request_keys))
        if requested:  # TagSpecifications: CreateTags on the new snapshots, as part of the call
            create_action = {"ec2:CreateAction": action.removeprefix("ec2:")}
            out.append(("ec2:CreateTags", {NEW_SNAPSHOTS: create_action}, request_keys))
    return out


def _world(backup: str = "true") -> tuple[list[Instance], list[Volume], dict[str, dict[str, str]]]:
    instances = [
        Instance(
            "i-0opted",
            {OPT_IN_TAG: backup, "Name": "web", "Owner": "ana"},
            "vol-0root",
            ("vol-0root", "vol-0data"),
        ),
        Instance("i-0plain", {"Name": "db"}, "vol-0dbroot", ("vol-0dbroot", "vol-0loose")),
    ]
    volumes = [Volume("vol-0loose", {OPT_IN_TAG: backup, "Name": "logs"}, "i-0plain")]
    tags_of = {i.id: dict(i.tags) for i in instances} | {v.id: dict(v.tags) for v in volumes}
    for untagged in ("vol-0root", "vol-0data", "vol-0dbroot"):  # the instance's tag opts them in
        tags_of[untagged] = {}
    return instances, volumes, tags_of


def _recorded(backup: str, monkeypatch: pytest.MonkeyPatch) -> tuple[list[Any], dict[str, CreateJob]]:
    instances, volumes, tags_of = _world(backup)
    plan = plan_creation(instances, volumes, recent={}, stack_name=STACK_NAME, now=NOW)
    assert {j.kind for j in plan.jobs} == {"instance", "volume"}, plan.jobs
    recorder = Recorder()
    monkeypatch.setattr(service, "ec2", lambda region="": recorder)
    for job in plan.jobs:
        service.create(job)
    service.delete("snap-0expired")
    jobs = {j.resource_id: j for j in plan.jobs}
    return authorisations(recorder.calls, tags_of, jobs), jobs


@pytest.mark.parametrize("backup", ["true", "True", "TRUE"])
def test_every_call_snapshot_rotator_makes_is_allowed_as_it_makes_it(
    statements: list[dict[str, Any]], backup: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked, _ = _recorded(backup, monkeypatch)
    actions = {action for action, _, _ in asked}
    assert actions == {"ec2:CreateSnapshot", "ec2:CreateSnapshots", "ec2:CreateTags", "ec2:DeleteSnapshot"}
    assert actions <= PERMISSIONS
    for action, resources, common in asked:
        assert decide_all(statements, action, resources, common) == ALLOW, (action, resources, common)
        if action != "ec2:DeleteSnapshot":  # every new snapshot is tagged ManagedBy=<stack>
            assert common[f"aws:RequestTag/{MANAGED_BY}"] == STACK_NAME, (action, common)


def test_the_same_calls_are_refused_without_the_opt_in_or_the_managed_by_tag(
    statements: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    asked, _ = _recorded("true", monkeypatch)
    for action, resources, common in asked:
        if action not in ("ec2:CreateSnapshot", "ec2:CreateSnapshots"):
            continue
        opt_in = f"ec2:ResourceTag/{OPT_IN_TAG}"
        unopted = {arn: {k: v for k, v in ctx.items() if k != opt_in} for arn, ctx in resources.items()}
        assert unopted != resources
        assert decide_all(statements, action, unopted, common) != ALLOW, action
        other_stack = {**common, f"aws:RequestTag/{MANAGED_BY}": "someone-else"}
        assert decide_all(statements, action, resources, other_stack) != ALLOW, action
        untagged = {k: v for k, v in common.items() if k != f"aws:RequestTag/{MANAGED_BY}"}
        untagged["aws:TagKeys"] = [k for k in common["aws:TagKeys"] if k != MANAGED_BY]
        assert decide_all(statements, action, resources, untagged) != ALLOW, action
        elsewhere = {arn.replace(f":{ACCOUNT}:", f":{OTHER_ACCOUNT}:"): ctx for arn, ctx in resources.items()}
        assert decide_all(statements, action, elsewhere, common) != ALLOW, action
    later = Request("ec2:CreateTags", f"arn:aws:ec2:{REGION}::snapshot/snap-1", {"aws:TagKeys": ["Backup"]})
    assert decide(statements, later) != ALLOW  # tags only while creating
