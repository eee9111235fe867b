"""Sample CloudTrail events pointed at real (sandbox or moto) resources.

Used by the demo, the tests and the benchmarks alike, so that all three feed owner_tagger the
same shape of event that EC2 would have produced for those instances.
"""

from __future__ import annotations

import copy
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
