"""owner_tagger test helpers: launch instances in moto, point sample events at them, build the
runner's Run and Context for calling ``run.plan`` / ``run.act`` directly."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from autopilot.config import CommonConfig
from autopilot.runner import Context, Run
from autopilot.runtime import Deadline
from demo.cloudtrail import run_instances_event
from owner_tagger.config import Config
from owner_tagger.event import CreationEvent, parse

REGION = "eu-west-1"
NOW = datetime(2026, 11, 23, 12, 5, tzinfo=UTC)
# One of moto's bundled images (moto/ec2/resources/amis.json), by id: listing them
# (describe_images(Owners=["amazon"])) serialises ~1,300 images, about 5 s per test.
AMI_ID = "ami-12c6146b"


@pytest.fixture
def ec2() -> Any:
    """A plain boto3 client for arranging and checking state (not seen by the call recorder)."""
    return boto3.client("ec2", region_name=REGION)


@pytest.fixture
def owner_env(stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The stack's environment (OWNER_TAG_KEY=Owner, the outbox table ...) and the service name."""
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "owner_tagger")
    return stack_env


@pytest.fixture
def launch(ec2: Any) -> Callable[..., list[dict[str, Any]]]:
    """launch(count, **run_instances kwargs) -> the Instances moto returned."""

    def run(count: int = 1, **kwargs: Any) -> list[dict[str, Any]]:
        response = ec2.run_instances(
            ImageId=AMI_ID, MinCount=count, MaxCount=count, InstanceType="t3.micro", **kwargs
        )
        return list(response["Instances"])

    return run


def fresh(event: dict[str, Any]) -> dict[str, Any]:
    """The event with an id of its own: the runner claims by event id, so every *different* run
    in a test needs one (the same id twice is one delivery)."""
    event = copy.deepcopy(event)
    event["id"] = str(uuid.uuid4())
    return event


def retarget(event: dict[str, Any], instances: list[dict[str, Any]]) -> dict[str, Any]:
    """The RunInstances sample pointed at moto's instances (ids, ENIs, launch tags), own id."""
    return fresh(run_instances_event(event, instances))


def set_resource_id(event: dict[str, Any], field: str, value: str) -> dict[str, Any]:
    """A copy of a single-resource sample event (CreateVolume, ...) naming ``value``, own id."""
    event = fresh(event)
    event["detail"]["responseElements"][field] = value
    return event


def tags_of(ec2: Any, resource_id: str) -> dict[str, str]:
    found = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [resource_id]}])["Tags"]
    return {t["Key"]: t["Value"] for t in found}


def attachments(ec2: Any, instance_id: str) -> tuple[list[str], list[str]]:
    """(volume ids, ENI ids) of an instance."""
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    volumes = [m["Ebs"]["VolumeId"] for m in instance["BlockDeviceMappings"]]
    enis = [n["NetworkInterfaceId"] for n in instance["NetworkInterfaces"]]
    return volumes, enis


def create_tags_resources(params: dict[str, Any]) -> list[str]:
    """The resource ids of one recorded CreateTags call."""
    return list(params["Resources"])


def make_run(event: dict[str, Any], remaining: float = 60.0) -> Run[Config, CreationEvent]:
    """What the runner hands ``run.plan`` for ``event`` (the environment must be set)."""
    return Run(
        "owner_tagger",
        Config.from_env(),
        CommonConfig.from_env(),
        NOW,
        Deadline(remaining_at_start=remaining),
        trigger=parse(event),
        run_id="test",
    )


def make_context(resumed: bool = False) -> Context[Config]:
    """What the runner hands ``run.act`` and ``report.mail``."""
    return Context(
        "owner_tagger", Config.from_env(), CommonConfig.from_env(), NOW, Deadline(60.0), resumed=resumed
    )


class Helpers:
    """The helpers above, as one fixture (test modules cannot import a conftest by name)."""

    fresh = staticmethod(fresh)
    retarget = staticmethod(retarget)
    set_resource_id = staticmethod(set_resource_id)
    tags_of = staticmethod(tags_of)
    attachments = staticmethod(attachments)
    create_tags_resources = staticmethod(create_tags_resources)
    make_run = staticmethod(make_run)
    make_context = staticmethod(make_context)


@pytest.fixture
def helpers() -> type[Helpers]:
    return Helpers
