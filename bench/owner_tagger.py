"""owner_tagger: one CloudTrail RunInstances event launching N instances (the real sample event
``events/owner_tagger/cloudtrail.run_instances.sso_user.json``, pointed at N moto instances).

Its calls depend on the instances in one event, not on the fleet: a month costs
(launch events) x (calls per event). Each moto instance has a root volume and one ENI, so an
event with N instances has R = 3 N resources to tag, all with the same owner.

Minimum for N instances per event:
- DescribeInstances: ceil(N / 200) (the volume ids are not in the event; 200 filter values
  per call);
- DescribeTags: 0 (the event's launch data says nothing was tagged with an owner at launch);
- CreateTags: ceil(3 N / 1000) (one tag set, up to 1,000 resource ids per call).
"""

from __future__ import annotations

import json
from typing import Any

import boto3

from autopilot.config import CommonConfig
from autopilot.runtime import Deadline
from bench.common import REGION, ROOT, STACK, Run, measured, pages, sandbox
from demo.cloudtrail import run_instances_event
from owner_tagger.config import OwnerTaggerConfig
from owner_tagger.service import execute
from owner_tagger.trail import parse_creation_event

SAMPLE = ROOT / "events" / "owner_tagger" / "cloudtrail.run_instances.sso_user.json"


def _event_for(instances: list[Any]) -> dict[str, Any]:
    """The sample event, its instancesSet replaced by the moto instances (ids and ENIs)."""
    return run_instances_event(json.loads(SAMPLE.read_text()), instances)


def minimum(instances: int) -> dict[str, int]:
    return {"ec2.DescribeInstances": pages(instances, 200), "ec2.CreateTags": pages(3 * instances, 1000)}


def run(instances: int) -> Run:
    with sandbox():
        topic = boto3.client("sns", region_name=REGION).create_topic(Name="bench")["TopicArn"]
        launched = boto3.client("ec2", region_name=REGION).run_instances(
            ImageId="ami-12c6146b", MinCount=instances, MaxCount=instances, InstanceType="t3.micro"
        )["Instances"]
        creation = parse_creation_event(_event_for(launched))
        config = OwnerTaggerConfig(
            common=CommonConfig(stack_name=STACK, region=REGION, topic_arn=topic, dry_run=False),
            owner_tag_key="Owner",
        )
        with measured() as (calls, elapsed):
            outcome = execute(config, creation, Deadline(remaining_at_start=60), sleep=lambda _s: None)
    return Run(
        automation="owner_tagger",
        size=instances,
        unit="instances in one RunInstances event",
        calls=calls.by_operation(),
        minimum=minimum(instances),
        seconds=elapsed[0],
        extra={"tagged": len(outcome.tagged)},
    )
