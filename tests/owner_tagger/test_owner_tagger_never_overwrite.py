"""'Never overwritten' with IAM in the loop: moto does not evaluate IAM, so here every CreateTags
owner_tagger sends is judged first - as IAM would (tests/template/iam_eval.py) - against the
policies its role really gets in the deployed template (template_tools.render: the role's own
statements and the NeverOverwriteAnOwner Deny), with each resource's tags as moto holds them
at that moment. A refused call is answered as EC2 answers it (UnauthorizedOperation, the whole
call), before moto sees it.

The race these guard: the common case (2 EC2 calls) does not read the volumes' and interfaces'
tags, so a volume someone tags by hand between the launch and the function's run is only saved
by the Deny - and by the code path that reads who carries the key and writes the rest."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

import boto3
import pytest

from autopilot import aws
from autopilot.recorder import CallRecorder
from owner_tagger import app
from template.iam_eval import ALLOW, decide_all
from template_tools import ACCOUNT, cloudformation_template, render, rendered_role_statements, renderings
from tests.owner_tagger.conftest import REGION

pytestmark = pytest.mark.integration
Load = Callable[[str], dict[str, Any]]

_ARN_TYPES = {
    "i": "instance",
    "vol": "volume",
    "eni": "network-interface",
    "snap": "snapshot",
    "ami": "image",
}


@cache
def _statements(owner_key: str) -> tuple[dict[str, Any], ...]:
    template = cloudformation_template()
    values = {**renderings(template)["defaults"], "OwnerTagKey": owner_key}
    return tuple(rendered_role_statements(render(template, values), "OwnerTaggerFunctionRole"))


def _arn(resource_id: str) -> str:
    kind = _ARN_TYPES[resource_id.split("-", 1)[0]]
    account = "" if kind in ("snapshot", "image") else ACCOUNT
    return f"arn:aws:ec2:{REGION}:{account}:{kind}/{resource_id}"


class Enforcer:
    """Judges each CreateTags on the function's client; counts what it refused."""

    def __init__(self, owner_key: str, statements: tuple[dict[str, Any], ...] | None = None) -> None:
        self.statements = statements if statements is not None else _statements(owner_key)
        self.refused = 0
        self._reader = boto3.client("ec2", region_name=REGION)
        self._params: dict[str, Any] = {}

    def keep_params(self, params: dict[str, Any], **_: Any) -> None:
        self._params = dict(params)  # the call's API parameters (before-call sees the HTTP request)

    def __call__(self, **_: Any) -> tuple[Any, dict[str, Any]] | None:
        params = self._params
        resources = {}
        for resource_id in params["Resources"]:
            found = self._reader.describe_tags(Filters=[{"Name": "resource-id", "Values": [resource_id]}])
            tags = {t["Key"]: t["Value"] for t in found["Tags"]}
            context = {f"ec2:ResourceTag/{k}": v for k, v in tags.items()}
            context.update({f"aws:ResourceTag/{k}": v for k, v in tags.items()})
            resources[_arn(resource_id)] = context
        request = {"aws:TagKeys": [t["Key"] for t in params["Tags"]]}
        request.update({f"aws:RequestTag/{t['Key']}": t["Value"] for t in params["Tags"]})
        if decide_all(self.statements, "ec2:CreateTags", resources, request) == ALLOW:
            return None  # moto carries it out
        self.refused += 1
        error = {
            "Code": "UnauthorizedOperation",
            "Message": "You are not authorized to perform this operation.",
        }
        return _Http(403), {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 403}}


class _Http:
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code
        self.headers: dict[str, str] = {}


@pytest.fixture
def iam(owner_env: dict[str, str]) -> Iterator[Enforcer]:
    enforcer = Enforcer("Owner")
    events = aws.client("ec2").meta.events
    events.register("before-parameter-build.ec2.CreateTags", enforcer.keep_params, unique_id="iam-params")
    events.register("before-call.ec2.CreateTags", enforcer, unique_id="iam-enforcer")
    yield enforcer
    events.unregister("before-parameter-build.ec2.CreateTags", unique_id="iam-params")
    events.unregister("before-call.ec2.CreateTags", unique_id="iam-enforcer")


def _ec2(calls: CallRecorder) -> dict[str, int]:
    return {k: v for k, v in calls.by_operation().items() if k.startswith("ec2.")}


def test_the_common_case_is_still_two_calls_with_iam_judging(
    iam: Enforcer,
    load_event: Load,
    launch: Any,
    ec2: Any,
    helpers: Any,
    calls: CallRecorder,
    lambda_context: Any,
) -> None:
    instances = launch(2)
    app.lambda_handler(
        helpers.retarget(load_event("owner_tagger/cloudtrail.run_instances.iam_user"), instances),
        lambda_context,
    )
    for instance in instances:
        volumes, enis = helpers.attachments(ec2, instance["InstanceId"])
        assert all(
            helpers.tags_of(ec2, r)["Owner"] == "bob" for r in [instance["InstanceId"], *volumes, *enis]
        )
    assert iam.refused == 0
    assert _ec2(calls) == {"ec2.DescribeInstances": 1, "ec2.CreateTags": 1}


@pytest.mark.parametrize("hand_key", ["Owner", "owner"])
def test_a_volume_and_an_eni_tagged_by_hand_after_the_launch_keep_their_owner(
    iam: Enforcer,
    load_event: Load,
    launch: Any,
    ec2: Any,
    helpers: Any,
    calls: CallRecorder,
    lambda_context: Any,
    hand_key: str,
) -> None:
    instance = launch(1)[0]
    event = helpers.retarget(load_event("owner_tagger/cloudtrail.run_instances.iam_user"), [instance])
    volumes, enis = helpers.attachments(ec2, instance["InstanceId"])
    # After the launch, before the function runs: the launch data says nothing had an owner.
    ec2.create_tags(Resources=[volumes[0]], Tags=[{"Key": hand_key, "Value": "storage-team"}])
    ec2.create_tags(Resources=[enis[0]], Tags=[{"Key": hand_key, "Value": "network-team"}])
    result = app.lambda_handler(event, lambda_context)
    assert helpers.tags_of(ec2, volumes[0]) == {hand_key: "storage-team"}
    assert helpers.tags_of(ec2, enis[0]) == {hand_key: "network-team"}
    assert helpers.tags_of(ec2, instance["InstanceId"])["Owner"] == "bob"
    # refused once, then: which of them carry the key (1 DescribeTags), the rest written (1 CreateTags)
    assert iam.refused == 1
    assert _ec2(calls) == {"ec2.DescribeInstances": 1, "ec2.CreateTags": 2, "ec2.DescribeTags": 1}
    assert (result["Changed"], result["Skipped"], result["Failed"]) == (1, 2, 0)
