"""The sample events a scaffolded automation gets in events/<name>/, shaped as EventBridge
delivers them: the schedule's, or CloudTrail's "AWS API Call via CloudTrail" for EC2 calls.

Each CloudTrail sample has a realistic caller (``userIdentity``), request and response; the
instance ids sit where EC2 really logs them for that call (:data:`ID_PATHS`). Calls this module
does not know get the shape of :data:`DEFAULT_PATHS`' first match (ids in
``requestParameters.instancesSet``).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

ACCOUNT = "123456789012"
REGION = "eu-west-1"
TIME = "2026-11-23T09:15:42Z"
NAMESPACE = uuid.UUID("6f0c6c1e-2b7e-4f43-9a43-0c7a3f1d5e20")

RESPONSE_IDS = "responseElements.instancesSet.items[].instanceId"
REQUEST_IDS = "requestParameters.instancesSet.items[].instanceId"
REQUEST_ID = "requestParameters.instanceId"
# Where EC2's CloudTrail events name the instances, per call (JMESPath in the event's detail).
ID_PATHS: dict[str, str] = {
    "RunInstances": RESPONSE_IDS,
    "StartInstances": RESPONSE_IDS,
    "StopInstances": RESPONSE_IDS,
    "TerminateInstances": RESPONSE_IDS,
    "MonitorInstances": RESPONSE_IDS,
    "UnmonitorInstances": RESPONSE_IDS,
    "RebootInstances": REQUEST_IDS,
    "ModifyInstanceAttribute": REQUEST_ID,
    "ModifyInstanceMetadataOptions": REQUEST_ID,
    "ModifyInstancePlacement": REQUEST_ID,
    "ResetInstanceAttribute": REQUEST_ID,
}
# For a call not in ID_PATHS: the places EC2 usually names instances, tried in order.
DEFAULT_PATHS = (RESPONSE_IDS, REQUEST_IDS, REQUEST_ID)
# EC2 calls that name instances, for the "not handled" sample (the first one not handled).
OTHER_CALLS = ("TerminateInstances", "StopInstances", "RebootInstances", "MonitorInstances")
STATES = {  # call -> (previous state, current state) as its response reports them
    "StartInstances": ((80, "stopped"), (0, "pending")),
    "StopInstances": ((16, "running"), (64, "stopping")),
    "TerminateInstances": ((16, "running"), (32, "shutting-down")),
}


def snake(event_name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", event_name).lower()


def snake_state(state: str) -> str:
    return state.replace("-", "_")


def id_path_literal(event_name: str) -> str:
    """The value of the event's entry in the generated lookup table (Python source)."""
    path = ID_PATHS.get(event_name)
    return f'"{path}"' if path else "DEFAULT_IDS"


def not_handled_name(events: tuple[str, ...]) -> str:
    return next(e for e in (*OTHER_CALLS, "CreateVolume") if e not in events)


def _uuid(*parts: str) -> str:
    return str(uuid.uuid5(NAMESPACE, "/".join(parts)))


def _hex(*parts: str, length: int = 17) -> str:
    return uuid.uuid5(NAMESPACE, "/".join(parts)).hex[:length]


def instance_id(*parts: str) -> str:
    return "i-0" + _hex("instance", *parts, length=16)


IDENTITIES: list[dict[str, Any]] = [
    {  # an IAM user with an access key (the CLI)
        "type": "IAMUser",
        "principalId": "AIDA3EXAMPLEEXAMPLEQJ",
        "arn": f"arn:aws:iam::{ACCOUNT}:user/bob",
        "accountId": ACCOUNT,
        "accessKeyId": "AKIA3EXAMPLEEXAMPLE4B",
        "userName": "bob",
    },
    {  # an IAM Identity Center (SSO) user at the console or CLI
        "type": "AssumedRole",
        "principalId": "AROA3EXAMPLEEXAMPLEA7:alice@example.com",
        "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/"
        "AWSReservedSSO_PowerUserAccess_0a1b2c3d4e5f6a7b/alice@example.com",
        "accountId": ACCOUNT,
        "accessKeyId": "ASIA3EXAMPLEEXAMPLE7Q",
        "sessionContext": {
            "sessionIssuer": {
                "type": "Role",
                "principalId": "AROA3EXAMPLEEXAMPLEA7",
                "arn": f"arn:aws:iam::{ACCOUNT}:role/aws-reserved/sso.amazonaws.com/eu-west-1/"
                "AWSReservedSSO_PowerUserAccess_0a1b2c3d4e5f6a7b",
                "accountId": ACCOUNT,
                "userName": "AWSReservedSSO_PowerUserAccess_0a1b2c3d4e5f6a7b",
            },
            "attributes": {"creationDate": "2026-11-23T08:02:11Z", "mfaAuthenticated": "false"},
        },
    },
    {  # a CI pipeline's role (web identity / assumed role)
        "type": "AssumedRole",
        "principalId": "AROA3EXAMPLEEXAMPLEC1:GitHubActions",
        "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/deploy-pipeline/GitHubActions",
        "accountId": ACCOUNT,
        "accessKeyId": "ASIA3EXAMPLEEXAMPLE2C",
        "sessionContext": {
            "sessionIssuer": {
                "type": "Role",
                "principalId": "AROA3EXAMPLEEXAMPLEC1",
                "arn": f"arn:aws:iam::{ACCOUNT}:role/deploy-pipeline",
                "accountId": ACCOUNT,
                "userName": "deploy-pipeline",
            },
            "webIdFederationData": {},
            "attributes": {"creationDate": "2026-11-23T09:14:58Z", "mfaAuthenticated": "false"},
        },
    },
]
USER_AGENTS = [
    "aws-cli/2.17.21 md/awscrt#0.20.11 ua/2.0 os/linux#6.5.0 md/arch#x86_64 lang/python#3.11.9 "
    "cfg/retry-mode#standard md/command#ec2.run-instances",
    "AWS Internal",
    "Boto3/1.35.10 md/Botocore#1.35.10 ua/2.0 os/linux#6.8.0 md/arch#x86_64 lang/python#3.12.5 "
    "cfg/retry-mode#legacy",
]


def _envelope(name: str, key: str, detail: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": "0",
        "id": _uuid(name, key, "event"),
        "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.ec2",
        "account": ACCOUNT,
        "time": TIME,
        "region": REGION,
        "resources": [],
        "detail": detail,
    }


def _detail(name: str, key: str, event_name: str, index: int) -> dict[str, Any]:
    request = _hex(name, key, "request", length=32)
    request_id = f"{request[:8]}-{request[8:12]}-{request[12:16]}-{request[16:20]}-{request[20:]}"
    return {
        "eventVersion": "1.09",
        "userIdentity": IDENTITIES[index % len(IDENTITIES)],
        "eventTime": TIME,
        "eventSource": "ec2.amazonaws.com",
        "eventName": event_name,
        "awsRegion": REGION,
        "sourceIPAddress": "203.0.113.24",
        "userAgent": USER_AGENTS[index % len(USER_AGENTS)],
        "requestParameters": {},
        "responseElements": {"requestId": request_id},
        "requestID": request_id,
        "eventID": _uuid(name, key, "cloudtrail"),
        "readOnly": False,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": ACCOUNT,
        "eventCategory": "Management",
        "tlsDetails": {
            "tlsVersion": "TLSv1.3",
            "cipherSuite": "TLS_AES_128_GCM_SHA256",
            "clientProvidedHostHeader": f"ec2.{REGION}.amazonaws.com",
        },
    }


def _launched(ids: list[str], name: str) -> dict[str, Any]:
    """RunInstances' responseElements for ``ids``."""
    items = []
    for n, i in enumerate(ids):
        eni = "eni-0" + _hex(name, i, "eni", length=16)
        ip = f"172.31.26.{20 + n}"
        items.append(
            {
                "instanceId": i,
                "imageId": "ami-0b9fd8b55a6e3c9d5",
                "instanceState": {"code": 0, "name": "pending"},
                "privateDnsName": f"ip-172-31-26-{20 + n}.{REGION}.compute.internal",
                "amiLaunchIndex": n,
                "instanceType": "t3.micro",
                "launchTime": 1795425342000,
                "placement": {"availabilityZone": f"{REGION}a", "tenancy": "default"},
                "monitoring": {"state": "disabled"},
                "subnetId": "subnet-0e1f2a3b4c5d6e7f8",
                "vpcId": "vpc-0a1b2c3d4e5f60718",
                "privateIpAddress": ip,
                "stateReason": {"code": "pending", "message": "pending"},
                "architecture": "x86_64",
                "rootDeviceType": "ebs",
                "rootDeviceName": "/dev/xvda",
                "blockDeviceMapping": {},
                "virtualizationType": "hvm",
                "hypervisor": "xen",
                "groupSet": {"items": [{"groupId": "sg-0f1e2d3c4b5a69788", "groupName": "default"}]},
                "networkInterfaceSet": {
                    "items": [
                        {
                            "networkInterfaceId": eni,
                            "subnetId": "subnet-0e1f2a3b4c5d6e7f8",
                            "vpcId": "vpc-0a1b2c3d4e5f60718",
                            "ownerId": ACCOUNT,
                            "status": "in-use",
                            "privateIpAddress": ip,
                            "interfaceType": "interface",
                            "attachment": {
                                "deviceIndex": 0,
                                "status": "attaching",
                                "deleteOnTermination": True,
                            },
                        }
                    ]
                },
                "ebsOptimized": False,
                "enaSupport": True,
                "metadataOptions": {"state": "pending", "httpTokens": "required", "httpEndpoint": "enabled"},
            }
        )
    return {
        "reservationId": "r-0" + _hex(name, "reservation", length=16),
        "ownerId": ACCOUNT,
        "groupSet": {},
        "instancesSet": {"items": items},
    }


def _fill(detail: dict[str, Any], event_name: str, ids: list[str], name: str) -> None:
    """Put the call's request and response, naming ``ids``, where EC2 logs them."""
    request, response = detail["requestParameters"], detail["responseElements"]
    path = ID_PATHS.get(event_name, DEFAULT_PATHS[1])
    if event_name == "RunInstances":
        request.update(
            {
                "instancesSet": {
                    "items": [{"imageId": "ami-0b9fd8b55a6e3c9d5", "minCount": 1, "maxCount": len(ids)}]
                },
                "instanceType": "t3.micro",
                "blockDeviceMapping": {},
                "monitoring": {"enabled": False},
                "disableApiTermination": False,
                "clientToken": _uuid(name, "client-token"),
                "metadataOptions": {"httpTokens": "required"},
            }
        )
        response.update(_launched(ids, name))
    elif path == RESPONSE_IDS:
        request["instancesSet"] = {"items": [{"instanceId": i} for i in ids]}
        before, after = STATES.get(event_name, ((16, "running"), (16, "running")))
        items: list[dict[str, Any]] = []
        for i in ids:
            item: dict[str, Any] = {"instanceId": i}
            if event_name.endswith("MonitorInstances"):
                item["monitoring"] = {"state": "pending" if event_name == "MonitorInstances" else "disabling"}
            else:
                item["currentState"] = {"code": after[0], "name": after[1]}
                item["previousState"] = {"code": before[0], "name": before[1]}
            items.append(item)
        response["instancesSet"] = {"items": items}
    elif path == REQUEST_ID:
        request.update({"instanceId": ids[0], "attribute": "instanceType"})
        response["_return"] = True
    else:  # ids in the request's instancesSet (RebootInstances, and calls this module does not know)
        request["instancesSet"] = {"items": [{"instanceId": i} for i in ids]}
        response["_return"] = True


def cloudtrail_event(name: str, event_name: str, index: int) -> dict[str, Any]:
    key = snake(event_name)
    path = ID_PATHS.get(event_name, DEFAULT_PATHS[1])
    count = 1 if path == REQUEST_ID else 2
    ids = [instance_id(name, key, str(n)) for n in range(count)]
    detail = _detail(name, key, event_name, index)
    _fill(detail, event_name, ids, name)
    return _envelope(name, key, detail)


def failed_event(name: str, event_name: str) -> dict[str, Any]:
    """The call refused (CloudTrail logs it with errorCode and no response)."""
    key = snake(event_name) + ".failed"
    detail = _detail(name, key, event_name, 1)
    _fill(detail, event_name, [instance_id(name, key)], name)
    detail["responseElements"] = None
    detail["errorCode"] = "Client.UnauthorizedOperation"
    detail["errorMessage"] = (
        "You are not authorized to perform this operation. User: "
        f"{detail['userIdentity']['arn']} is not authorized to perform: ec2:{event_name}. "
        "Encoded authorization failure message: kQ3x0ExampleEncodedMessage"
    )
    if event_name == "RunInstances":
        detail["requestParameters"].pop("clientToken", None)
    return _envelope(name, key, detail)


def scheduled_event(name: str, camel: str) -> dict[str, Any]:
    return {
        "version": "0",
        "id": _uuid(name, "scheduled"),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": "2026-11-23T06:00:00Z",
        "region": REGION,
        "resources": [
            f"arn:aws:events:{REGION}:{ACCOUNT}:rule/ops-autopilot-{camel}FunctionSchedule-0A1B2C3D4E5F"
        ],
        "detail": {},
    }


def state_change_event(name: str, state: str, index: int) -> dict[str, Any]:
    """EC2's "EC2 Instance State-change Notification" (EC2 sends it itself, for every state
    change of every instance of the account and region)."""
    instance = instance_id(name, "state", state)
    return {
        "version": "0",
        "id": _uuid(name, "state", state),
        "detail-type": "EC2 Instance State-change Notification",
        "source": "aws.ec2",
        "account": ACCOUNT,
        "time": f"2026-11-23T09:{15 + index:02d}:42Z",
        "region": REGION,
        "resources": [f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{instance}"],
        "detail": {"instance-id": instance, "state": state},
    }


def spot_warning_event(name: str) -> dict[str, Any]:
    """Another EC2 event about one instance ("EC2 Spot Instance Interruption Warning")."""
    instance = instance_id(name, "spot")
    return {
        "version": "0",
        "id": _uuid(name, "spot-warning"),
        "detail-type": "EC2 Spot Instance Interruption Warning",
        "source": "aws.ec2",
        "account": ACCOUNT,
        "time": "2026-11-23T09:20:42Z",
        "region": REGION,
        "resources": [f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{instance}"],
        "detail": {"instance-id": instance, "instance-action": "terminate"},
    }


def events(
    name: str, camel: str, event_names: tuple[str, ...], states: tuple[str, ...] = ()
) -> dict[str, dict[str, Any]]:
    """File name -> sample event, for events/<name>/."""
    if states:
        found = {
            f"ec2.state_change.{snake_state(s)}.json": state_change_event(name, s, n)
            for n, s in enumerate(states)
        }
        others = [
            s
            for s in ("stopped", "pending", "stopping", "running", "shutting-down", "terminated")
            if s not in states
        ]
        if others:
            found["ec2.state_change.not_handled.json"] = state_change_event(name, others[0], len(states))
        return {
            "eventbridge.scheduled.json": scheduled_event(name, camel),
            "eventbridge.not_scheduled.json": spot_warning_event(name),
            **found,
        }
    if not event_names:
        other = scheduled_event(name, camel)
        other.update(
            {
                "id": _uuid(name, "not-scheduled"),
                "source": "aws.ec2",
                "detail-type": "EC2 Instance State-change Notification",
            }
        )
        other["detail"] = {"instance-id": instance_id(name, "state-change"), "state": "running"}
        other["resources"] = [f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{other['detail']['instance-id']}"]
        return {
            "eventbridge.scheduled.json": scheduled_event(name, camel),
            "eventbridge.not_scheduled.json": other,
        }
    found = {f"cloudtrail.{snake(e)}.json": cloudtrail_event(name, e, n) for n, e in enumerate(event_names)}
    found[f"cloudtrail.{snake(event_names[0])}.failed.json"] = failed_event(name, event_names[0])
    found["cloudtrail.not_handled.json"] = cloudtrail_event(name, not_handled_name(event_names), 2)
    return found
