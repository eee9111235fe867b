"""Each grant is scoped by resource where AWS supports it (PRODUCT.md safety rule 6), asked as IAM
decides it on the deployed template: the right resource is allowed, a neighbour is not."""

from __future__ import annotations

from typing import Any

import pytest

from template.iam_eval import ALLOW, Request, decide
from template.test_iam_semantics import INSTANCE, OTHER_ACCOUNT, RENDERINGS, ec2, rendering, role
from template_tools import ACCOUNT, REGION

pytestmark = pytest.mark.unit


@pytest.fixture(params=RENDERINGS)
def deployed(request: pytest.FixtureRequest) -> dict[str, Any]:
    return rendering(request.param)


def parameter_arn(name: str, account: str = ACCOUNT) -> str:
    return f"arn:aws:ssm:{REGION}:{account}:parameter/{name.lstrip('/')}"


def test_the_health_check_reads_its_site_list_folder_and_no_other_parameter(deployed: dict[str, Any]) -> None:
    """The folder of the parameter the function is told to read (SITES_PARAMETER), with
    GetParametersByPath (authorized against the path asked for): not a wider or another folder,
    not one parameter by name, not another account's."""
    variables = deployed["Resources"]["WebsiteHealthCheckFunction"]["Properties"]["Environment"]["Variables"]
    sites = str(variables["SITES_PARAMETER"])
    folder = sites.rsplit("/", 1)[0]
    statements = role(deployed, "website_health_check")
    by_path = "ssm:GetParametersByPath"
    assert decide(statements, Request(by_path, parameter_arn(folder))) == ALLOW
    for other in ("/", "/prod/db", folder.rsplit("/", 1)[0], folder + "-old", sites):
        assert decide(statements, Request(by_path, parameter_arn(other))) != ALLOW, other
    assert decide(statements, Request(by_path, parameter_arn(folder, OTHER_ACCOUNT))) != ALLOW
    for one in (sites, "/prod/db/password", folder + "/api-key"):
        assert decide(statements, Request("ssm:GetParameter", parameter_arn(one))) != ALLOW, one


def test_idle_stopper_reads_stop_protection_of_this_accounts_instances_only(deployed: dict[str, Any]) -> None:
    statements = role(deployed, "idle_stopper")
    read = "ec2:DescribeInstanceAttribute"
    assert decide(statements, Request(read, INSTANCE)) == ALLOW
    assert decide(statements, Request(read, ec2("instance", "i-1", OTHER_ACCOUNT))) != ALLOW
    assert decide(statements, Request(read, INSTANCE.replace(REGION, "us-east-1"))) != ALLOW


RESULTS_TABLE = "ops-autopilot-health-results"


def results_arn(region: str) -> str:
    return f"arn:aws:dynamodb:{region}:{ACCOUNT}:table/{RESULTS_TABLE}"


def keyed(action: str, region: str, *keys: str) -> Request:
    return Request(action, results_arn(region), {"dynamodb:LeadingKeys": list(keys)})


def test_the_health_checks_of_several_regions_each_write_only_their_own_part_of_the_results() -> None:
    """features-on: this region the home (it reads every region's results and publishes the
    site list, nothing else); health-member: a member whose home is us-east-1 (it reads the
    published list there and writes its own region's results - not another region's, not the
    list); defaults: one region, no results table at all."""
    home = role(rendering("features-on"), "website_health_check")
    assert decide(home, keyed("dynamodb:BatchGetItem", REGION, "#sites", "result#us-east-1")) == ALLOW
    assert decide(home, keyed("dynamodb:PutItem", REGION, "#sites")) == ALLOW
    for key in ("result#us-east-1", "result#eu-west-1"):
        assert decide(home, keyed("dynamodb:PutItem", REGION, key)) != ALLOW, key

    member = role(rendering("health-member"), "website_health_check")
    assert decide(member, keyed("dynamodb:GetItem", "us-east-1", "#sites")) == ALLOW
    assert decide(member, keyed("dynamodb:PutItem", "us-east-1", f"result#{REGION}")) == ALLOW
    refused = [
        keyed("dynamodb:PutItem", "us-east-1", "result#us-east-1"),  # speaking for another region
        keyed("dynamodb:PutItem", "us-east-1", "result#ap-southeast-2"),
        keyed("dynamodb:PutItem", "us-east-1", "#sites"),  # changing the list the others check
        keyed("dynamodb:GetItem", "us-east-1", "result#us-east-1"),
        keyed("dynamodb:BatchGetItem", "us-east-1", "#sites"),
        keyed("dynamodb:PutItem", REGION, f"result#{REGION}"),  # a table of that name elsewhere
        Request("dynamodb:PutItem", results_arn("us-east-1")),  # no key: no grant
    ]
    for request in refused:
        assert decide(member, request) != ALLOW, request

    alone = role(rendering("defaults"), "website_health_check")
    for action in ("dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:PutItem"):
        assert decide(alone, keyed(action, REGION, "#sites")) != ALLOW, action
        assert decide(alone, keyed(action, "us-east-1", "#sites")) != ALLOW, action
