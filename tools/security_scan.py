"""Security scan of the deployed template: checkov and parliament on every rendering.

    .venv/bin/python tools/security_scan.py

1. builds .venv-scan from requirements-scan.txt if it is missing or out of date (checkov's pins
   conflict with aws-sam-cli's, so it cannot live in .venv);
2. renders the template as CloudFormation deploys it (Fn::ForEach expanded, SAM transform
   applied, conditions evaluated: tests/template_tools.py) twice - with the default parameters,
   and with every optional feature on (every Condition of the template true: the values are
   found from the Conditions themselves, so a new optional feature is scanned too);
3. runs checkov on each rendering, on the template ``make release`` ships (no transforms)
   and on the organisation's stacks (org/admin.yaml, org/hub.yaml); any finding not
   suppressed inline in template.yaml
   (``Metadata: checkov: skip: [{id, comment}]``, which the SAM transform copies onto the
   generated AWS::Lambda::Function) fails the scan;
4. runs parliament (an IAM linter) on every policy of each rendering - every role's own and
   attached policies, its trust policy, and every resource policy (key, topic, queue, bucket):
   any finding not explained in PARLIAMENT_EXPLAINED below fails the scan, and so does an
   explanation that no longer matches a finding (it would hide the next one).

cfn-lint runs in ``sam validate --lint`` (tests/template/test_sam_cli.py).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import venv
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements-scan.txt"
SCAN_VENV = ROOT / ".venv-scan"

# Why a parliament finding is not a problem: (issue, where, Sid) patterns (fnmatch: where is
# "<resource>" or "<role>/<policy name>", Sid is "#<n>" for a statement without one) -> reason.
# Every entry must match a finding of some rendering: a stale one fails the scan.
SPLIT = (
    "authorised on several resource types at once, granted in one statement per type so that each "
    "type gets its own scope and condition; IAM allows the call only if every type is allowed "
    "(tests/template/test_iam_semantics.py asks the whole call)"
)
PARLIAMENT_EXPLAINED: dict[tuple[str, str, str], str] = {
    ("RESOURCE_STAR", "NotificationKey", "*"): (
        'in a key policy Resource "*" means this key (a key policy cannot name another); the '
        "principals and the encryption-context conditions bound who may use it for what"
    ),
    ("MALFORMED", "*Role/trust", "*"): (
        "a role's trust policy has no Resource (IAM refuses one that has); parliament reads every "
        "document as an identity policy"
    ),
    ("RESOURCE_MISMATCH", "PatchSweeperFunctionRole/*", "ReadPatchStatesOfInstances"): (
        "EC2 instances only: the sweep's targets come from DescribeInstances, so the hybrid "
        "managed-instance/* resource type is left out on purpose"
    ),
    ("RESOURCE_MISMATCH", "PatchSweeperFunctionRole/*", "RunPatchBaselineOnly"): (
        "AWS-owned documents' ARNs have no account (arn:<partition>:ssm:<region>::document/"
        "AWS-RunPatchBaseline); parliament's pattern wants one"
    ),
    ("RESOURCE_MISMATCH", "SnapshotRotatorFunctionRole/*", "*"): "CreateSnapshot(s) is " + SPLIT,
    ("RESOURCE_MISMATCH", "WebsiteHealthCheckFunctionRole/*-vpc", "*"): "CreateNetworkInterface is " + SPLIT,
}


def _python() -> Path:
    return SCAN_VENV / "bin" / "python"


def ensure_scan_venv() -> Path:
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:16]
    stamp = SCAN_VENV / f".installed-{digest}"
    if not stamp.exists():
        print(f"Setting up {SCAN_VENV.name} from {REQUIREMENTS.name} ...", flush=True)
        venv.EnvBuilder(clear=True, with_pip=True).create(SCAN_VENV)
        pip = [str(_python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, "--no-deps", "-r", str(REQUIREMENTS)], check=True)
        stamp.touch()
    return _python()


def _template_tools() -> Any:
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    for path in (str(ROOT), str(ROOT / "tests")):
        if path not in sys.path:
            sys.path.insert(0, path)
    import template_tools

    return template_tools


def renderings() -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """name -> (the rendering checkov scans: conditions applied, references kept; the same fully
    resolved, for reading its policies as IAM does)."""
    tools = _template_tools()
    template = tools.cloudformation_template()
    return {
        name: (tools.render(template, values, resolve=False), tools.render(template, values))
        for name, values in tools.renderings(template).items()
    }


def release_rendering() -> dict[str, Any]:
    """The template as ``make release`` ships it (tools/render.py: no transforms, the code in
    ``<prefix>-<region>``), conditions left to CloudFormation."""
    tools = _template_tools()
    from tools import render

    template = tools.raw_template()
    functions = render.serverless_functions(render.language_extensions(template))
    return render.without_transforms(
        template, {name: "ops-autopilot/code/x.zip" for name in functions}, "us-east-1"
    )


def org_renderings() -> dict[str, dict[str, Any]]:
    """The organisation's own stacks (docs/organizations.md): the StackSet administrator's alarm
    stack, and the roll-up hub as CloudFormation deploys it (its SAM transform applied)."""
    _template_tools()
    from samcli.yamlhelper import yaml_parse

    from tools import render

    hub = yaml_parse((ROOT / "org" / "hub.yaml").read_text())
    code = {name: "ops-autopilot/code/x.zip" for name in render.serverless_functions(hub)}
    return {
        "org-admin": yaml_parse((ROOT / "org" / "admin.yaml").read_text()),
        "org-hub": render.without_transforms(hub, code, "us-east-1"),
    }


def policies(resolved: dict[str, Any]) -> dict[str, Any]:
    """where -> policy document, for every policy of a resolved rendering."""
    found: dict[str, Any] = {}
    resources = resolved["Resources"]
    for name, resource in resources.items():
        props = resource.get("Properties", {})
        kind = resource["Type"]
        if kind == "AWS::IAM::Role":
            found[f"{name}/trust"] = props["AssumeRolePolicyDocument"]
            for policy in props.get("Policies", []):
                found[f"{name}/{policy['PolicyName']}"] = policy["PolicyDocument"]
        elif kind in ("AWS::IAM::RolePolicy", "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            document = props["PolicyDocument"]  # a string where its condition keys hold a parameter
            found[name] = json.loads(document) if isinstance(document, str) else document
        elif kind == "AWS::KMS::Key":
            found[name] = props["KeyPolicy"]
        elif "PolicyDocument" in props:  # topic, queue and bucket policies
            found[name] = props["PolicyDocument"]
    return found


URL_CHECKS = frozenset({"CKV_AWS_258"})  # a function URL's own checks


def with_url_skips(template: dict[str, Any]) -> dict[str, Any]:
    """The function URLs SAM generates from ``FunctionUrlConfig`` (AWS::Lambda::Url) carry the
    skips of their function's Metadata for the URL's own checks (the transform copies Metadata
    onto the function only), so that the reason stays next to the function in template.yaml."""
    resources = template["Resources"]
    for resource in resources.values():
        if resource["Type"] != "AWS::Lambda::Url":
            continue
        target = resource["Properties"].get("TargetFunctionArn")
        name = target.get("Ref") if isinstance(target, dict) else None
        skips = resources.get(name, {}).get("Metadata", {}).get("checkov", {}).get("skip", []) if name else []
        moved = [s for s in skips if s.get("id") in URL_CHECKS]
        if moved:
            resource.setdefault("Metadata", {}).setdefault("checkov", {}).setdefault("skip", []).extend(moved)
    return template


def run_checkov(python: Path, template: Path) -> int:
    command = [
        str(python),
        "-m",
        "checkov.main",
        "--file",
        str(template),
        "--framework",
        "cloudformation",
        "--compact",
        "--quiet",
        "--skip-download",
    ]
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    result = subprocess.run(command, env=env, check=False)
    return result.returncode


def run_parliament(python: Path, documents: Path) -> list[dict[str, str]]:
    """parliament's findings on every document of the file, run in .venv-scan (this file again,
    with --parliament: the part below that imports nothing of the repository)."""
    result = subprocess.run(
        [str(python), "-W", "ignore::UserWarning", __file__, "--parliament", str(documents)],
        check=True,
        capture_output=True,
        text=True,
    )
    findings: list[dict[str, str]] = json.loads(result.stdout)
    return findings


def _parliament_main(documents: Path) -> int:
    """In .venv-scan: print parliament's findings as JSON, one statement at a time (so that each
    finding names the statement it is about: its Sid, or its position)."""
    import parliament  # type: ignore[import-not-found]

    findings = []
    for where, document in json.loads(documents.read_text()).items():
        statements = document["Statement"]
        for index, statement in enumerate(statements if isinstance(statements, list) else [statements]):
            single = {"Version": document.get("Version", "2012-10-17"), "Statement": [statement]}
            for finding in parliament.analyze_policy_string(json.dumps(single)).findings:
                sid = str(statement.get("Sid") or f"#{index}")
                findings.append(
                    {"issue": finding.issue, "where": where, "sid": sid, "detail": str(finding.detail)}
                )
    print(json.dumps(findings))
    return 0


def _explains(key: tuple[str, str, str], finding: dict[str, str]) -> bool:
    issue, where, sid = key
    return (
        finding["issue"] == issue
        and fnmatch.fnmatchcase(finding["where"], where)
        and fnmatch.fnmatchcase(finding["sid"], sid)
    )


def main() -> int:
    python = ensure_scan_venv()
    failed = False
    explained_seen: set[tuple[str, str, str]] = set()
    print(f"parliament: {len(PARLIAMENT_EXPLAINED)} explained finding patterns (tools/security_scan.py)")
    with tempfile.TemporaryDirectory(prefix="ops-autopilot-scan-") as tmp:
        for name, (scanned, resolved) in renderings().items():
            print(f"== rendering: {name}", flush=True)
            template = Path(tmp) / f"template-{name}.json"
            template.write_text(json.dumps(with_url_skips(scanned), indent=1, default=str))
            if run_checkov(python, template) != 0:
                failed = True
                print(f"checkov ({name}): FAILED (findings above)")
            documents = Path(tmp) / f"policies-{name}.json"
            documents.write_text(json.dumps(policies(resolved), default=str))
            found = run_parliament(python, documents)
            unexplained = []
            for finding in found:
                keys = [key for key in PARLIAMENT_EXPLAINED if _explains(key, finding)]
                explained_seen.update(keys)
                if not keys:
                    unexplained.append(finding)
            print(
                f"parliament ({name}): {len(policies(resolved))} policies, {len(found)} findings, "
                f"{len(found) - len(unexplained)} explained"
            )
            for finding in unexplained:
                failed = True
                where = f"{finding['where']} {finding['sid']}"
                print(f"  UNEXPLAINED {finding['issue']} in {where}: {finding['detail']}")
        print("== the release template (make release: plain CloudFormation)", flush=True)
        released = Path(tmp) / "template-release.json"
        released.write_text(json.dumps(with_url_skips(release_rendering()), indent=1, default=str))
        if run_checkov(python, released) != 0:
            failed = True
            print("checkov (release): FAILED (findings above)")
        for name, template in org_renderings().items():
            print(f"== {name} (org/)", flush=True)
            path = Path(tmp) / f"template-{name}.json"
            path.write_text(json.dumps(template, indent=1, default=str))
            if run_checkov(python, path) != 0:
                failed = True
                print(f"checkov ({name}): FAILED (findings above)")
    for key in sorted(set(PARLIAMENT_EXPLAINED) - explained_seen):
        failed = True
        print(f"parliament: stale explanation (no such finding any more): {key}")
    print("security scan: " + ("FAILED (findings above)" if failed else "no unsuppressed findings"))
    return 1 if failed else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--parliament"]:
        sys.exit(_parliament_main(Path(sys.argv[2])))
    sys.exit(main())
