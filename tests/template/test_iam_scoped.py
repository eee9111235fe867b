"""Each grant is scoped by resource where AWS supports it (PRODUCT.md safety rule 6), asked as IAM
decides it on the deployed template: the right resource is allowed, a neighbour is not."""

from __future__ import annotations

from typing import Any

import pytest

from template.iam_eval import ALLOW, Request, decide, decide_all
from template.test_iam_semantics import INSTANCE, OTHER_ACCOUNT, RENDERINGS, ec2, rendering, role
from template_tools import ACCOUNT, REGION, cloudformation_template, renderings

pytestmark = pytest.mark.unit


@pytest.fixture(params=RENDERINGS)
def deployed(request: pytest.FixtureRequest) -> dict[str, Any]:
    return rendering(request.param)


def parameter_arn(name: str, account: str = ACCOUNT) -> str:
    return f"arn:aws:ssm:{REGION}:{account}:parameter/{name.lstrip('/')}"


def test_the_health_check_reads_its_site_list_and_no_other_parameter(deployed: dict[str, Any]) -> None:
    """The parameter the function is told to read (SITES_PARAMETER), and not a secret next to it."""
    variables = deployed["Resources"]["WebsiteHealthCheckFunction"]["Properties"]["Environment"]["Variables"]
    sites = str(variables["SITES_PARAMETER"])
    statements = role(deployed, "website_health_check")
    assert decide(statements, Request("ssm:GetParameter", parameter_arn(sites))) == ALLOW
    for other in ("/prod/db/password", sites.rsplit("/", 1)[0] + "/api-key", sites + "-old"):
        assert decide(statements, Request("ssm:GetParameter", parameter_arn(other))) != ALLOW, other
    assert decide(statements, Request("ssm:GetParameter", parameter_arn(sites, OTHER_ACCOUNT))) != ALLOW


def test_in_a_vpc_new_interfaces_use_only_this_accounts_subnets_and_groups() -> None:
    """The given subnet / group IDs, in this account and region: a subnet or group shared from
    another account (VPC sharing) or named in another region is refused even with the same ID."""
    deployed = rendering("features-on")
    values = renderings(cloudformation_template())["features-on"]
    subnet, group = values["WebsiteHealthCheckSubnetIds"][0], values["WebsiteHealthCheckSecurityGroupIds"][0]
    statements = role(deployed, "website_health_check")

    def create(subnet_arn: str, group_arn: str) -> str:
        resources = {
            ec2("network-interface", "*"): {},
            subnet_arn: {"ec2:SubnetID": subnet},
            group_arn: {"ec2:SecurityGroupID": group},
        }
        return decide_all(statements, "ec2:CreateNetworkInterface", resources)

    ours_subnet, ours_group = ec2("subnet", subnet), ec2("security-group", group)
    assert create(ours_subnet, ours_group) == ALLOW
    shared_subnet = ec2("subnet", subnet, OTHER_ACCOUNT)
    shared_group = ec2("security-group", group, OTHER_ACCOUNT)
    assert create(shared_subnet, ours_group) != ALLOW
    assert create(ours_subnet, shared_group) != ALLOW
    assert create(ours_subnet.replace(REGION, "us-east-1"), ours_group) != ALLOW
    assert create(ours_subnet, ours_group.replace(REGION, "us-east-1")) != ALLOW


def test_idle_stopper_reads_stop_protection_of_this_accounts_instances_only(deployed: dict[str, Any]) -> None:
    statements = role(deployed, "idle_stopper")
    read = "ec2:DescribeInstanceAttribute"
    assert decide(statements, Request(read, INSTANCE)) == ALLOW
    assert decide(statements, Request(read, ec2("instance", "i-1", OTHER_ACCOUNT))) != ALLOW
    assert decide(statements, Request(read, INSTANCE.replace(REGION, "us-east-1"))) != ALLOW
