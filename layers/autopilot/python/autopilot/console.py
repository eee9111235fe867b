"""Links to the AWS console, for the account's own region and partition."""

from __future__ import annotations

from urllib.parse import quote

_DOMAINS = {
    "aws": "console.aws.amazon.com",
    "aws-cn": "console.amazonaws.cn",
    "aws-us-gov": "console.amazonaws-us-gov.com",
}


def partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def _base(region: str, service: str) -> str:
    domain = _DOMAINS[partition(region)]
    host = f"{region}.{domain}" if partition(region) == "aws" else domain
    return f"https://{host}/{service}/home?region={region}"


def ec2_instance(region: str, instance_id: str) -> str:
    return f"{_base(region, 'ec2')}#InstanceDetails:instanceId={instance_id}"


def ec2_volume(region: str, volume_id: str) -> str:
    return f"{_base(region, 'ec2')}#VolumeDetails:volumeId={volume_id}"


def ec2_snapshot(region: str, snapshot_id: str) -> str:
    return f"{_base(region, 'ec2')}#SnapshotDetails:snapshotId={snapshot_id}"


def ec2_resource(region: str, kind: str, resource_id: str) -> str | None:
    """The console page of an instance, volume or snapshot (``kind`` as the automations name
    them); None for a kind that has no page of its own here."""
    pages = {"instance": ec2_instance, "volume": ec2_volume, "snapshot": ec2_snapshot}
    page = pages.get(kind)
    return page(region, resource_id) if page else None


def rds_database(region: str, identifier: str, cluster: bool = False) -> str:
    return f"{_base(region, 'rds')}#database:id={identifier};is-cluster={str(cluster).lower()}"


def ssm_command(region: str, command_id: str) -> str:
    return f"{_base(region, 'systems-manager')}#/run-command/{command_id}"


def log_group(region: str, name: str) -> str:
    encoded = quote(quote(name, safe=""), safe="").replace("%", "$")
    return f"{_base(region, 'cloudwatch')}#logsV2:log-groups/log-group/{encoded}"
