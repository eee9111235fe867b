"""make org-deploy (tools/org_deploy.py): the StackSet over an organisation of 3 accounts in 2
OUs, in 2 regions - moto's Organizations and CloudFormation StackSets, with the released
template (rendered without transforms) read from S3 as a TemplateURL.

moto's StackSets differ from AWS in two ways this test needs, patched below to behave as AWS
documents: a stack instance's ParameterOverrides replace the StackSet's parameters there (AWS:
they override those named, the rest come from the StackSet), and UpdateStackInstances ignores
DeploymentTargets (AWS: the OUs' accounts). moto's CloudFormation cannot create every resource
of the template (no CloudWatch alarms), so the instances' stacks are recorded, not built: the
template is deployed for real in LocalStack (docs/organizations.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from template_tools import ROOT, raw_template
from tools import org_deploy, render

REGIONS = ["eu-west-1", "us-east-1"]
PREFIX = "acme-ops"


@dataclass
class Organisation:
    workloads: str
    production: str
    accounts: dict[str, str]  # account id -> OU id
    release: dict[str, Any]
    parameters: dict[str, Any]  # the released template's


@pytest.fixture
def stacksets_as_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.cloudformation import models, responses
    from moto.organizations.models import organizations_backends

    original_create = models.StackSet.create_stack_instances

    def create_stack_instances(
        self: Any, accounts: list[str], regions: list[str], deployment_targets: Any, parameters: Any
    ) -> str:
        overrides = {p["ParameterKey"]: p["ParameterValue"] for p in parameters or []}
        merged = [
            {"ParameterKey": k, "ParameterValue": v} for k, v in {**self.parameters, **overrides}.items()
        ]
        return str(original_create(self, accounts, regions, deployment_targets, merged))

    def update_stack_instances(self: Any) -> Any:
        targets = self._get_params().get("DeploymentTargets") or {}
        ous = set(targets.get("OrganizationalUnitIds", []))
        org = organizations_backends[self.current_account]["aws"]
        accounts = [a.id for a in org.accounts if a.parent_id in ous] + self._get_param("Accounts", [])
        stack_set = self.cloudformation_backend.describe_stack_set(self._get_param("StackSetName"))
        overrides = {
            p["ParameterKey"]: p["ParameterValue"] for p in self._get_param("ParameterOverrides", [])
        }
        merged = [
            {"ParameterKey": k, "ParameterValue": v} for k, v in {**stack_set.parameters, **overrides}.items()
        ]
        operation = stack_set.update_instances(accounts, self._get_param("Regions", []), merged)
        return responses.ActionResult({"OperationId": operation["OperationId"]})

    monkeypatch.setattr(models.StackSet, "create_stack_instances", create_stack_instances)
    monkeypatch.setattr(responses.CloudFormationResponse, "update_stack_instances", update_stack_instances)
    monkeypatch.setattr(models.Stack, "create_resources", lambda self: None)


@pytest.fixture
def organisation(stacksets_as_aws: None) -> Organisation:
    org = boto3.client("organizations", region_name="us-east-1")
    org.create_organization(FeatureSet="ALL")
    root = org.list_roots()["Roots"][0]["Id"]
    workloads = org.create_organizational_unit(ParentId=root, Name="workloads")["OrganizationalUnit"]["Id"]
    production = org.create_organizational_unit(ParentId=root, Name="production")["OrganizationalUnit"]["Id"]
    accounts: dict[str, str] = {}
    for name, ou in (("shop", workloads), ("data", workloads), ("payments", production)):
        status = org.create_account(AccountName=name, Email=f"{name}@example.com")["CreateAccountStatus"]
        org.move_account(AccountId=status["AccountId"], SourceParentId=root, DestinationParentId=ou)
        accounts[status["AccountId"]] = ou
    template = raw_template()
    code = {
        n: "ops-autopilot/code/x.zip"
        for n in render.serverless_functions(render.language_extensions(template))
    }
    rendered = render.without_transforms(template, code, REGIONS[0])
    s3 = boto3.client("s3", region_name=REGIONS[0])
    bucket = f"{PREFIX}-{REGIONS[0]}"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGIONS[0]})
    s3.put_object(Bucket=bucket, Key="ops-autopilot/templates/t.json", Body=json.dumps(rendered).encode())
    release = {
        "prefix": PREFIX,
        "version": "test",
        "regions": REGIONS,
        "template_url": f"https://{bucket}.s3.{REGIONS[0]}.amazonaws.com/ops-autopilot/templates/t.json",
    }
    return Organisation(workloads, production, accounts, release, rendered["Parameters"])


def config_for(org: Organisation, tmp_path: Path) -> org_deploy.Config:
    raw = json.loads((ROOT / "org" / "stackset.json").read_text())
    raw["Targets"][0]["OrganizationalUnitIds"] = [org.workloads]
    raw["Targets"][1]["OrganizationalUnitIds"] = [org.production]
    path = tmp_path / "stackset.json"
    path.write_text(json.dumps(raw))
    return org_deploy.load_config(path, org.parameters)


@pytest.fixture
def requests() -> Iterator[tuple[Any, list[tuple[str, dict[str, Any]]]]]:
    """The administrator's CloudFormation client, and every request it made (name, params)."""
    cfn = boto3.client("cloudformation", region_name=REGIONS[0])
    made: list[tuple[str, dict[str, Any]]] = []

    def keep(params: dict[str, Any], model: Any, **_: Any) -> None:
        made.append((model.name, dict(params)))

    cfn.meta.events.register("provide-client-params.cloudformation.*", keep)
    yield cfn, made


def instances_of(cfn: Any, name: str) -> dict[tuple[str, str], dict[str, str]]:
    """{(account, region): the instance's parameters} as the StackSet holds them."""
    found: dict[tuple[str, str], dict[str, str]] = {}
    for item in cfn.list_stack_instances(StackSetName=name)["Summaries"]:
        described = cfn.describe_stack_instance(
            StackSetName=name, StackInstanceAccount=item["Account"], StackInstanceRegion=item["Region"]
        )["StackInstance"]
        params = {p["ParameterKey"]: p["ParameterValue"] for p in described.get("ParameterOverrides", [])}
        found[(item["Account"], item["Region"])] = {**params, "Status": item["Status"]}
    return found


@pytest.mark.integration
def test_the_first_deploy_puts_an_instance_in_every_account_and_region_with_its_ous_overrides(
    organisation: Organisation, requests: tuple[Any, list[tuple[str, dict[str, Any]]]], tmp_path: Path
) -> None:
    cfn, made = requests
    config = config_for(organisation, tmp_path)
    outcome = org_deploy.deploy(cfn, config, organisation.release, sleep=lambda _: None)
    made = list(made)  # the deploy's requests, not the test's reads below
    assert outcome.created
    instances = instances_of(cfn, config.name)
    assert set(instances) == {(a, r) for a in organisation.accounts for r in REGIONS}  # 3 x 2
    for (account, _region), params in instances.items():
        assert params["Status"] == "CURRENT"
        assert params["ArtifactBucketPrefix"] == PREFIX
        production = organisation.accounts[account] == organisation.production
        assert params["DryRun"] == ("true" if production else "false")  # production stays dry
        assert params.get("IdleStopperMaxStopsPerRun") == ("0" if production else None)
    (create,) = [p for name, p in made if name == "CreateStackSet"]
    assert create["PermissionModel"] == "SERVICE_MANAGED" and create["CallAs"] == "DELEGATED_ADMIN"
    assert create["AutoDeployment"] == {"Enabled": True, "RetainStacksOnAccountRemoval": False}
    assert create["TemplateURL"] == organisation.release["template_url"] and "TemplateBody" not in create
    assert create["Capabilities"] == ["CAPABILITY_IAM"]
    assert [p["DeploymentTargets"] for n, p in made if n == "CreateStackInstances"] == [
        {"OrganizationalUnitIds": [organisation.workloads]},
        {"OrganizationalUnitIds": [organisation.production]},
    ]
    assert all(p["CallAs"] == "DELEGATED_ADMIN" for _, p in made)
    assert [o["status"] for o in outcome.operations] == ["SUCCEEDED", "SUCCEEDED"]


@pytest.mark.integration
def test_the_next_deploy_updates_the_stack_set_and_keeps_each_ous_overrides(
    organisation: Organisation, requests: tuple[Any, list[tuple[str, dict[str, Any]]]], tmp_path: Path
) -> None:
    cfn, made = requests
    config = config_for(organisation, tmp_path)
    org_deploy.deploy(cfn, config, organisation.release, sleep=lambda _: None)
    made.clear()
    again = org_deploy.deploy(cfn, config, organisation.release, sleep=lambda _: None)
    assert not again.created
    names = [n for n, _ in made if not n.startswith(("Describe", "List"))]
    assert names == [
        "UpdateStackSet",
        "CreateStackInstances",
        "UpdateStackInstances",
        "CreateStackInstances",
        "UpdateStackInstances",
    ]
    instances = instances_of(cfn, config.name)
    assert len(instances) == 6 and all(p["Status"] == "CURRENT" for p in instances.values())
    for (account, _region), params in instances.items():
        production = organisation.accounts[account] == organisation.production
        assert params["DryRun"] == ("true" if production else "false")


@pytest.mark.unit
@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"Parameters": {"DryRunn": "true"}}, "not parameters of the template: DryRunn"),
        ({"Parameters": {"ArtifactBucketPrefix": "x"}}, "comes from the release"),
        ({"Regions": ["Europe"]}, "Regions"),
        ({"Targets": []}, "at least one"),
        ({"Targets": [{"OrganizationalUnitIds": ["production"]}]}, "ou-"),
        (
            {
                "Targets": [
                    {"Name": "a", "OrganizationalUnitIds": ["ou-abcd-11111111"]},
                    {"Name": "b", "OrganizationalUnitIds": ["ou-abcd-11111111"]},
                ]
            },
            "in two targets",
        ),
    ],
)
def test_a_config_mistake_is_refused_before_any_call(
    tmp_path: Path, change: dict[str, Any], why: str
) -> None:
    raw = {**json.loads((ROOT / "org" / "stackset.json").read_text()), **change}
    path = tmp_path / "stackset.json"
    path.write_text(json.dumps(raw))
    parameters = {"AlarmEmail": {}, "DryRun": {}, "IdleStopperMaxStopsPerRun": {}, "ArtifactBucketPrefix": {}}
    with pytest.raises(org_deploy.DeployError, match=why):
        org_deploy.load_config(path, parameters)


class _FailingStackSets:
    """A StackSet whose first instance operation fails (as when one account's stack rolls back)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def describe_stack_set(self, **_: Any) -> dict[str, Any]:
        self.calls.append("DescribeStackSet")
        return {"StackSet": {"Status": "ACTIVE", "StackSetId": "ops-autopilot:1"}}

    def update_stack_set(self, **_: Any) -> dict[str, str]:
        self.calls.append("UpdateStackSet")
        return {"OperationId": "op-update"}

    def create_stack_instances(self, **_: Any) -> dict[str, str]:
        self.calls.append("CreateStackInstances")
        return {"OperationId": "op-instances"}

    def describe_stack_set_operation(self, OperationId: str, **_: Any) -> dict[str, Any]:
        status = "FAILED" if OperationId == "op-instances" else "SUCCEEDED"
        return {"StackSetOperation": {"Status": status, "Action": "CREATE"}}


@pytest.mark.unit
def test_a_failed_operation_fails_the_deploy_and_says_where_to_look(tmp_path: Path) -> None:
    raw = json.loads((ROOT / "org" / "stackset.json").read_text())
    path = tmp_path / "stackset.json"
    path.write_text(json.dumps(raw))
    parameters = {"AlarmEmail": {}, "DryRun": {}, "IdleStopperMaxStopsPerRun": {}}
    config = org_deploy.load_config(path, parameters)
    fake = _FailingStackSets()
    release = {"prefix": PREFIX, "template_url": "https://x/t.json"}
    with pytest.raises(
        org_deploy.DeployError, match=r"op-instances .*FAILED.*list-stack-set-operation-results"
    ):
        org_deploy.deploy(fake, config, release, sleep=lambda _: None)
    assert fake.calls == ["DescribeStackSet", "UpdateStackSet", "CreateStackInstances"]  # stopped there


@pytest.mark.integration
def test_the_admin_stack_lints_clean_and_mails_only_failed_or_stopped_operations() -> None:
    import subprocess
    import sys

    from samcli.yamlhelper import yaml_parse

    path = ROOT / "org" / "admin.yaml"
    lint = subprocess.run(
        [str(Path(sys.executable).with_name("cfn-lint")), str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    resources = yaml_parse(path.read_text())["Resources"]
    pattern = resources["FailedOperationRule"]["Properties"]["EventPattern"]
    assert pattern["detail-type"] == ["CloudFormation StackSet Operation Status Change"]
    assert pattern["detail"]["status-details"]["status"] == ["FAILED", "STOPPED"]
    (statement,) = resources["OperationsTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Condition"] == {
        "ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["FailedOperationRule", "Arn"]}}
    }
    assert resources["OperationsTopic"]["Properties"]["KmsMasterKeyId"] == "alias/aws/sns"
