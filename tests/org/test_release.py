"""make release (tools/release.py): the artifact a service-managed StackSet deploys - sam build,
reproducible zips named by their hash, the template without transforms, the code read from
``<prefix>-<region>`` in each target region (moto's S3 here)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import boto3
import pytest

from template.iam_eval import ALLOW, DENY, IMPLICIT_DENY, Request, decide
from template_tools import ROOT, raw_template
from tools import release, render

ORG = "o-abcdefghij"
REGIONS = ["eu-west-1", "us-east-1"]


def _walk(node: Any) -> Any:
    yield node
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


@pytest.fixture
def bucket_policies_judged(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto judges a bucket policy without its conditions (so the TLS-only Deny refuses every
    request): judge it as IAM does, for this account's requests over TLS."""
    from moto.iam.access_control import PermissionResult
    from moto.s3.models import FakeBucket

    def get_permission(self: FakeBucket, action: str, resource: str) -> Any:
        if self.policy is None:
            return PermissionResult.NEUTRAL
        statements = json.loads(self.policy.decode())["Statement"]
        caller = {"AWS": "arn:aws:iam::123456789012:root"}
        decision = decide(statements, Request(action, resource, {"aws:SecureTransport": "true"}, caller))
        return {ALLOW: PermissionResult.PERMITTED, DENY: PermissionResult.DENIED}.get(
            decision, PermissionResult.NEUTRAL
        )

    monkeypatch.setattr(FakeBucket, "get_permission", get_permission)


@pytest.mark.integration
@pytest.mark.slow
def test_a_release_is_plain_cloudformation_with_the_code_in_every_regions_bucket(
    tmp_path: Path, bucket_policies_judged: None
) -> None:
    out = tmp_path / "dist"
    made = release.make_release("acme-ops", REGIONS, out, org_id=ORG, create_buckets=True)
    template = json.loads((out / "template.json").read_text())
    keys = {k for k in _walk(template) if isinstance(k, str)}
    assert "Transform" not in template
    assert not [k for k in keys if isinstance(k, str) and k.startswith("Fn::ForEach")]
    types = {r["Type"] for r in template["Resources"].values()}
    assert not [t for t in types if t.startswith("AWS::Serverless::")]
    functions = [r for r in template["Resources"].values() if r["Type"] == "AWS::Lambda::Function"]
    # every function of template.yaml: one per automation, and the heartbeat function
    resources = raw_template()["Resources"].values()
    declared = [r for r in resources if isinstance(r, dict) and r.get("Type") == "AWS::Serverless::Function"]
    assert len(functions) == len(declared) == len(list((ROOT / "functions").glob("*/app.py"))) + 1
    bucket = {"Fn::Sub": "${ArtifactBucketPrefix}-${AWS::Region}"}
    for function in functions:
        assert function["Properties"]["Code"]["S3Bucket"] == bucket
        assert function["Properties"]["Code"]["S3Key"] in made.code.values()
    (layer,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::Lambda::LayerVersion"]
    assert layer["Properties"]["Content"]["S3Bucket"] == bucket
    for region in REGIONS:
        s3 = boto3.client("s3", region_name=region)
        name = f"acme-ops-{region}"
        held = {o["Key"] for o in s3.list_objects_v2(Bucket=name)["Contents"]}
        assert set(made.code.values()) <= held
        policy = json.loads(s3.get_bucket_policy(Bucket=name)["Policy"])
        code = f"arn:aws:s3:::{name}/{made.code['SharedLayer']}"
        member = {"AWS": "arn:aws:iam::210987654321:role/stackset-execution"}
        tls = {"aws:SecureTransport": "true"}
        as_member = Request("s3:GetObject", code, {**tls, "aws:PrincipalOrgID": ORG}, member)
        assert decide(policy["Statement"], as_member) == ALLOW
        stranger = Request("s3:GetObject", code, {**tls, "aws:PrincipalOrgID": "o-zzzzzzzzzz"}, member)
        assert decide(policy["Statement"], stranger) == IMPLICIT_DENY
        writer = Request("s3:PutObject", code, {**tls, "aws:PrincipalOrgID": ORG}, member)
        assert decide(policy["Statement"], writer) == IMPLICIT_DENY
        plain = Request(
            "s3:GetObject", code, {"aws:SecureTransport": "false", "aws:PrincipalOrgID": ORG}, member
        )
        assert decide(policy["Statement"], plain) == DENY
        assert s3.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"
    first = boto3.client("s3", region_name=REGIONS[0])
    body = first.get_object(Bucket=f"acme-ops-{REGIONS[0]}", Key=made.template_key)["Body"].read()
    assert json.loads(body) == template
    assert made.template_url.endswith(made.template_key)
    # cfn-lint, as on template.yaml: clean
    lint = subprocess.run(
        [str(Path(sys.executable).with_name("cfn-lint")), str(out / "template.json")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    # the same code again: the same keys, nothing put twice
    again = release.make_release("acme-ops", REGIONS, out, org_id=ORG, build_dir=out / "build")
    assert again.code == made.code
    assert again.uploaded == {REGIONS[0]: [again.template_key], REGIONS[1]: []}
    assert json.loads((out / "release.json").read_text())["template_url"] == again.template_url


@pytest.mark.unit
def test_a_zip_depends_only_on_the_files(tmp_path: Path) -> None:
    folder = tmp_path / "code"
    (folder / "pkg").mkdir(parents=True)
    (folder / "pkg" / "a.py").write_text("A = 1\n")
    (folder / "b.txt").write_text("b\n")
    first = release.zip_folder(folder)
    (folder / "b.txt").touch()  # a new time, the same bytes
    assert release.zip_folder(folder) == first
    assert zipfile.ZipFile(__import__("io").BytesIO(first)).namelist() == ["b.txt", "pkg/a.py"]
    (folder / "pkg" / "a.py").write_text("A = 2\n")
    assert release.zip_folder(folder) != first


@pytest.mark.unit
def test_rendering_refuses_what_it_cannot_render() -> None:
    template = raw_template()
    code = {
        name: "ops-autopilot/code/x.zip"
        for name in render.serverless_functions(render.language_extensions(template))
    }
    rendered = render.without_transforms(template, code, "eu-west-1")
    assert "ArtifactBucketPrefix" in rendered["Parameters"]
    assert all(isinstance(o.get("Description", ""), str) for o in rendered.get("Outputs", {}).values())
    with pytest.raises(render.RenderError, match="no code for"):
        render.without_transforms(template, {k: v for k, v in list(code.items())[1:]}, "eu-west-1")
    with pytest.raises(render.RenderError, match="Fn::Length"):
        render.language_extensions({**template, "Outputs": {"N": {"Value": {"Fn::Length": [1, 2]}}}})


@pytest.mark.unit
@pytest.mark.parametrize(
    ("prefix", "regions", "org_id", "why"),
    [
        ("Acme_Ops", REGIONS, None, "bucket prefix"),
        ("acme-ops", [], None, "regions"),
        ("acme-ops", ["eu-west-1", "Europe"], None, "regions"),
        ("acme-ops", REGIONS, "org-1", "organisation id"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_built(
    tmp_path: Path, prefix: str, regions: list[str], org_id: str | None, why: str
) -> None:
    with pytest.raises(release.ReleaseError, match=why):
        release.make_release(prefix, regions, tmp_path / "dist", org_id=org_id)
    assert not (tmp_path / "dist").exists()
