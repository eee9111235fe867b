"""Sample CloudTrail events pointed at real (sandbox or moto) resources.

Used by the demo, the tests and the benchmarks alike, so that all three feed owner_tagger the
same shape of event that EC2 would have produced for those instances.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


def run_instances_event(sample: dict[str, Any], instances: list[dict[str, Any]]) -> dict[str, Any]:
    """A copy of a RunInstances sample event whose instancesSet names ``instances`` as
    DescribeInstances/RunInstances returned them: their ids, their network interfaces and
    their launch tags (the sample's tagSet is dropped for an instance launched without tags),
    each item built from the sample's first one."""
    event = copy.deepcopy(sample)
    response = event["detail"]["responseElements"]
    template = response["instancesSet"]["items"][0]
    items = []
    for instance in instances:
        item = copy.deepcopy(template)
        item["instanceId"] = instance["InstanceId"]
        eni = item["networkInterfaceSet"]["items"][0]
        item["networkInterfaceSet"]["items"] = [
            {**eni, "networkInterfaceId": n["NetworkInterfaceId"]} for n in instance["NetworkInterfaces"]
        ]
        tags = instance.get("Tags", [])
        if tags:
            item["tagSet"] = {"items": [{"key": t["Key"], "value": t["Value"]} for t in tags]}
        else:
            item.pop("tagSet", None)
        items.append(item)
    response["instancesSet"]["items"] = items
    return event


# -- CloudTrail's event history (LookupEvents), which moto does not have ------------------------

ACCOUNT = "123456789012"


def iam_user(name: str, account: str = ACCOUNT) -> dict[str, Any]:
    """A CloudTrail userIdentity of an IAM user."""
    return {
        "type": "IAMUser",
        "principalId": "AIDAEXAMPLE" + name.upper()[:8],
        "arn": f"arn:aws:iam::{account}:user/{name}",
        "accountId": account,
        "userName": name,
    }


_RESPONSES = {
    "RunInstances": lambda ids: {"instancesSet": {"items": [{"instanceId": i} for i in ids]}},
    "CreateVolume": lambda ids: {"volumeId": ids[0]},
    "CreateSnapshot": lambda ids: {"snapshotId": ids[0]},
    "CopySnapshot": lambda ids: {"snapshotId": ids[0]},
    "CreateImage": lambda ids: {"imageId": ids[0]},
    "CopyImage": lambda ids: {"imageId": ids[0]},
    "RegisterImage": lambda ids: {"imageId": ids[0]},
    "CreateTags": lambda ids: {"_return": True},
    "StopInstances": lambda ids: {"instancesSet": {"items": [{"instanceId": i} for i in ids]}},
}
_RESOURCE_TYPES = {
    "i": "AWS::EC2::Instance",
    "vol": "AWS::EC2::Volume",
    "snap": "AWS::EC2::Snapshot",
    "ami": "AWS::EC2::Ami",
}


def record(
    name: str,
    ids: list[str],
    identity: dict[str, Any],
    when: datetime,
    region: str = "eu-west-1",
    account: str = ACCOUNT,
) -> dict[str, Any]:
    """A CloudTrail record of an EC2 call that made (or touched) ``ids``, as CloudTrail keeps it."""
    return {
        "eventVersion": "1.09",
        "userIdentity": identity,
        "eventTime": when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": "ec2.amazonaws.com",
        "eventName": name,
        "awsRegion": region,
        "sourceIPAddress": "203.0.113.10",
        "userAgent": "aws-cli/2.15.0",
        "requestParameters": {},
        "responseElements": _RESPONSES[name](ids),
        "requestID": str(uuid.uuid4()),
        "eventID": str(uuid.uuid4()),
        "readOnly": False,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": account,
        "eventCategory": "Management",
    }


@dataclass
class History:
    """CloudTrail's event history of one account and region, answering LookupEvents as CloudTrail
    does: one lookup attribute (EventName or ResourceName), StartTime and EndTime inclusive,
    newest first, at most MaxResults (50) a page, a NextToken valid only with the same
    parameters. ``install`` answers the calls of a botocore client from it (its before-call
    event, so the call still passes every hook that counts calls); ``calls`` counts them."""

    records: list[dict[str, Any]] = field(default_factory=list)
    calls: int = 0

    def add(self, *records: dict[str, Any]) -> None:
        self.records.extend(records)

    def install(self, client: Any) -> None:
        client.meta.events.register("before-parameter-build.cloudtrail.LookupEvents", self._keep)
        client.meta.events.register("before-call.cloudtrail.LookupEvents", self._answer)

    def uninstall(self, client: Any) -> None:
        client.meta.events.unregister("before-parameter-build.cloudtrail.LookupEvents", self._keep)
        client.meta.events.unregister("before-call.cloudtrail.LookupEvents", self._answer)

    def _keep(self, params: dict[str, Any], **_: Any) -> None:
        self._params = dict(params)

    def _answer(self, **_: Any) -> tuple[Any, dict[str, Any]]:
        self.calls += 1
        try:
            return _Http(200), self.lookup(self._params)
        except ValueError as err:
            error = {"Code": str(err), "Message": str(err)}
            return _Http(400), {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 400}}

    def lookup(self, params: dict[str, Any]) -> dict[str, Any]:
        (attribute,) = params.get("LookupAttributes") or [{"AttributeKey": "", "AttributeValue": ""}]
        key, value = attribute["AttributeKey"], attribute["AttributeValue"]
        start, end = params.get("StartTime"), params.get("EndTime")
        size = int(params.get("MaxResults", 50))
        if not 1 <= size <= 50:
            raise ValueError("InvalidMaxResultsException")
        query = json.dumps([key, value, str(start), str(end), size])
        offset = 0
        if params.get("NextToken"):
            token = json.loads(params["NextToken"])
            if token.get("query") != query:
                raise ValueError("InvalidNextTokenException")
            offset = int(token["offset"])
        matches = []
        for rec in self.records:
            when = datetime.fromisoformat(rec["eventTime"].replace("Z", "+00:00"))
            if (start and when < _utc(start)) or (end and when > _utc(end)):
                continue
            names = _resource_names(rec)
            if (key == "EventName" and rec["eventName"] != value) or (
                key == "ResourceName" and value not in names
            ):
                continue
            matches.append((when, rec, names))
        matches.sort(key=lambda m: (m[0], m[1]["eventID"]), reverse=True)
        page = matches[offset : offset + size]
        answer: dict[str, Any] = {
            "Events": [
                {
                    "EventId": rec["eventID"],
                    "EventName": rec["eventName"],
                    "ReadOnly": "false",
                    "EventTime": when,
                    "EventSource": rec["eventSource"],
                    "Username": rec["userIdentity"].get("userName", ""),
                    "Resources": [
                        {"ResourceType": _RESOURCE_TYPES.get(n.split("-")[0], ""), "ResourceName": n}
                        for n in names
                    ],
                    "CloudTrailEvent": json.dumps(rec),
                }
                for when, rec, names in page
            ],
            "ResponseMetadata": {"HTTPStatusCode": 200},
        }
        if offset + size < len(matches):
            answer["NextToken"] = json.dumps({"query": query, "offset": offset + size})
        return answer


def _utc(value: Any) -> datetime:
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)


def _resource_names(rec: dict[str, Any]) -> list[str]:
    text = json.dumps(rec.get("responseElements") or {})
    return sorted(set(re.findall(r"\b(?:i|vol|snap|ami)-[0-9a-f]{8,17}\b", text)))


class _Http:
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code
        self.headers: dict[str, str] = {}


@contextmanager
def answering(history: History) -> Iterator[None]:
    """Every CloudTrail client made through ``autopilot.aws.client`` meanwhile answers
    LookupEvents from ``history`` (for the demo, whose handlers make their clients anew)."""
    from autopilot import aws

    original = aws.client
    installed: set[int] = set()

    def client(service: str, region: str | None = None) -> Any:
        made = original(service, region)
        if service == "cloudtrail" and id(made) not in installed:
            history.install(made)
            installed.add(id(made))
        return made

    aws.client = client  # type: ignore[assignment]
    try:
        yield
    finally:
        aws.client = original  # type: ignore[assignment]
