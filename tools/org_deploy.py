"""make org-deploy: create or update the ops-autopilot StackSet across the organisation.

    .venv/bin/python tools/org_deploy.py [--config org/stackset.json] [--release dist/release.json]
        [--region <the administrator's region>] [--call-as DELEGATED_ADMIN|SELF] [--alarm-email x@y]

Run with the credentials of a delegated administrator for CloudFormation StackSets (or the
management account with ``--call-as SELF``), after ``make release``:

1. the StackSet (service-managed permissions, automatic deployment on, stacks removed when an
   account leaves the targeted OUs) is created from the release's template URL - or updated to
   it, with the configured parameters and ``ArtifactBucketPrefix`` from the release;
2. for every target of the config (OUs, with their parameter overrides): stack instances in
   every configured region are created (idempotent: existing ones are left), then their
   overrides applied;
3. each operation is waited for (StackSets runs one at a time); a FAILED or STOPPED one, or a
   stack instance not CURRENT at the end, makes the command fail and says which;
4. the administrator's alarm stack (org/admin.yaml: failed StackSet operations -> SNS -> mail;
   automatic deployment to a new account ignores failure tolerance, so only an alarm tells)
   is created or updated when ``--alarm-email`` is given.

The stack set's own parameters should be the safe ones (DryRun=true): an account that joins a
targeted OU is deployed automatically with them, and gets its OU's overrides at the next
``make org-deploy``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parent.parent
ADMIN_TEMPLATE: Final = ROOT / "org" / "admin.yaml"
ADMIN_STACK: Final = "ops-autopilot-org-admin"
OU_PATTERN: Final = re.compile(r"^(ou-[a-z0-9]{4,32}-[a-z0-9]{8,32}|r-[a-z0-9]{4,32})$")
REGION_PATTERN: Final = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
NAME_PATTERN: Final = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]{0,127}$")
CALL_AS: Final = ("DELEGATED_ADMIN", "SELF")
DONE: Final = ("SUCCEEDED", "FAILED", "STOPPED")
CAPABILITIES: Final = ["CAPABILITY_IAM"]
POLL_SECONDS: Final = 15.0
WAIT_SECONDS: Final = 3 * 3600.0  # one operation over a large organisation takes a while


class DeployError(RuntimeError):
    """The StackSet was not (fully) deployed, and why."""


@dataclass(frozen=True)
class Target:
    name: str
    ous: list[str]
    overrides: dict[str, str]


@dataclass(frozen=True)
class Config:
    name: str
    description: str
    regions: list[str]
    parameters: dict[str, str]
    targets: list[Target]
    preferences: dict[str, Any]


@dataclass
class Outcome:
    stack_set_id: str = ""
    created: bool = False
    operations: list[dict[str, str]] = field(default_factory=list)
    instances: list[dict[str, str]] = field(default_factory=list)


def load_config(path: Path, template_parameters: Mapping[str, Any]) -> Config:
    """The StackSet config, checked against the released template's parameters: a typo in a
    parameter name or an OU id is an error here, not a failed operation in 200 accounts."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DeployError(f"{path}: {err}") from err
    problems: list[str] = []
    name = str(raw.get("StackSetName", ""))
    if not NAME_PATTERN.fullmatch(name):
        problems.append(f"StackSetName {name!r}: a letter, then letters, digits and -")
    regions = [str(r) for r in raw.get("Regions", [])]
    if not regions or any(not REGION_PATTERN.fullmatch(r) for r in regions):
        problems.append(f"Regions {regions!r}: one or more region names")

    def strings(where: str, values: object) -> dict[str, str]:
        if not isinstance(values, Mapping):
            problems.append(f"{where}: an object of parameter names and values")
            return {}
        unknown = sorted(set(values) - set(template_parameters))
        if unknown:
            problems.append(f"{where}: not parameters of the template: {', '.join(unknown)}")
        if "ArtifactBucketPrefix" in values:
            problems.append(f"{where}: ArtifactBucketPrefix comes from the release, not the config")
        return {str(k): str(v) for k, v in values.items()}

    parameters = strings("Parameters", raw.get("Parameters", {}))
    targets: list[Target] = []
    for n, item in enumerate(raw.get("Targets", [])):
        ous = [str(o) for o in item.get("OrganizationalUnitIds", [])]
        if not ous or any(not OU_PATTERN.fullmatch(o) for o in ous):
            problems.append(f"Targets[{n}].OrganizationalUnitIds {ous!r}: ou-... or r-... ids")
        overrides = strings(f"Targets[{n}].ParameterOverrides", item.get("ParameterOverrides", {}))
        targets.append(Target(str(item.get("Name", f"target-{n}")), ous, overrides))
    if not targets:
        problems.append("Targets: at least one (OUs to deploy to)")
    seen: dict[str, str] = {}
    for target in targets:
        for ou in target.ous:
            if ou in seen:
                problems.append(
                    f"{ou} is in two targets ({seen[ou]}, {target.name}): its overrides would be ambiguous"
                )
            seen[ou] = target.name
    if problems:
        raise DeployError(f"{path}:\n  " + "\n  ".join(problems))
    preferences = dict(raw.get("OperationPreferences", {}))
    return Config(name, str(raw.get("Description", "")), regions, parameters, targets, preferences)


def _parameters(values: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"ParameterKey": k, "ParameterValue": v} for k, v in sorted(values.items())]


def _error_code(err: Exception) -> str:
    response = getattr(err, "response", {}) or {}
    return str(response.get("Error", {}).get("Code", ""))


def wait(
    cfn: Any,
    name: str,
    operation_id: str,
    call_as: str,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, str]:
    """Wait for a StackSet operation to end; its id, action and status."""
    until = clock() + WAIT_SECONDS
    while True:
        operation = cfn.describe_stack_set_operation(
            StackSetName=name, OperationId=operation_id, CallAs=call_as
        )
        status = operation["StackSetOperation"]["Status"]
        if status in DONE:
            action = str(operation["StackSetOperation"].get("Action", ""))
            return {"id": operation_id, "action": action, "status": status}
        if clock() > until:
            raise DeployError(f"operation {operation_id} still {status} after {WAIT_SECONDS / 3600:.0f} h")
        sleep(POLL_SECONDS)


def deploy(
    cfn: Any,
    config: Config,
    release: Mapping[str, Any],
    call_as: str = "DELEGATED_ADMIN",
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    """Create or update the StackSet and its stack instances (see the module doc)."""
    if call_as not in CALL_AS:
        raise DeployError(f"--call-as {call_as!r}: one of {', '.join(CALL_AS)}")
    outcome = Outcome()
    name = config.name
    parameters = _parameters({**config.parameters, "ArtifactBucketPrefix": str(release["prefix"])})
    common: dict[str, Any] = {
        "StackSetName": name,
        "TemplateURL": str(release["template_url"]),
        "Parameters": parameters,
        "Capabilities": CAPABILITIES,
        "PermissionModel": "SERVICE_MANAGED",
        "AutoDeployment": {"Enabled": True, "RetainStacksOnAccountRemoval": False},
        "CallAs": call_as,
    }
    try:
        found = cfn.describe_stack_set(StackSetName=name, CallAs=call_as)["StackSet"]
        exists = found.get("Status") != "DELETED"
    except Exception as err:
        if _error_code(err) != "StackSetNotFoundException":
            raise
        exists = False
    preferences = config.preferences

    def done(operation_id: str) -> None:
        result = wait(cfn, name, operation_id, call_as, sleep)
        outcome.operations.append(result)
        if result["status"] != "SUCCEEDED":
            raise DeployError(
                f"StackSet operation {operation_id} ({result['action']}) ended {result['status']}: "
                f"aws cloudformation list-stack-set-operation-results --stack-set-name {name} "
                f"--operation-id {operation_id} --call-as {call_as}"
            )

    if exists:
        answer = cfn.update_stack_set(
            **common, Description=config.description, OperationPreferences=preferences
        )
        done(answer["OperationId"])
    else:
        outcome.stack_set_id = cfn.create_stack_set(**common, Description=config.description)["StackSetId"]
        outcome.created = True
    for target in config.targets:
        targets = {"OrganizationalUnitIds": target.ous}
        answer = cfn.create_stack_instances(
            StackSetName=name,
            DeploymentTargets=targets,
            Regions=config.regions,
            ParameterOverrides=_parameters(target.overrides),
            OperationPreferences=preferences,
            CallAs=call_as,
        )
        done(answer["OperationId"])
        if target.overrides and exists:
            answer = cfn.update_stack_instances(
                StackSetName=name,
                DeploymentTargets=targets,
                Regions=config.regions,
                ParameterOverrides=_parameters(target.overrides),
                OperationPreferences=preferences,
                CallAs=call_as,
            )
            done(answer["OperationId"])
    if not outcome.stack_set_id:
        outcome.stack_set_id = str(
            cfn.describe_stack_set(StackSetName=name, CallAs=call_as)["StackSet"]["StackSetId"]
        )
    pages = cfn.get_paginator("list_stack_instances").paginate(StackSetName=name, CallAs=call_as)
    for page in pages:
        for item in page["Summaries"]:
            outcome.instances.append(
                {
                    "account": str(item["Account"]),
                    "region": str(item["Region"]),
                    "status": str(item.get("Status", "")),
                    "detailed": str((item.get("StackInstanceStatus") or {}).get("DetailedStatus", "")),
                    "reason": str(item.get("StatusReason", "")),
                }
            )
    behind = [i for i in outcome.instances if i["status"] != "CURRENT"]
    if behind:
        lines = [f"{i['account']} {i['region']}: {i['status']} {i['reason']}".rstrip() for i in behind]
        raise DeployError("stack instances not current:\n  " + "\n  ".join(lines))
    return outcome


def deploy_admin_stack(cfn: Any, alarm_email: str, stack_set_name: str) -> str:
    """Create or update the administrator's alarm stack (org/admin.yaml); its status."""
    body = ADMIN_TEMPLATE.read_text()
    parameters = _parameters({"AlarmEmail": alarm_email, "StackSetName": stack_set_name})
    try:
        cfn.describe_stacks(StackName=ADMIN_STACK)
        try:
            cfn.update_stack(StackName=ADMIN_STACK, TemplateBody=body, Parameters=parameters)
        except Exception as err:
            if "No updates are to be performed" not in str(err):
                raise
            return "UPDATE_COMPLETE (no change)"
        waiter = "stack_update_complete"
    except Exception as err:
        if "does not exist" not in str(err):
            raise
        cfn.create_stack(StackName=ADMIN_STACK, TemplateBody=body, Parameters=parameters)
        waiter = "stack_create_complete"
    cfn.get_waiter(waiter).wait(StackName=ADMIN_STACK)
    return str(cfn.describe_stacks(StackName=ADMIN_STACK)["Stacks"][0]["StackStatus"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "org" / "stackset.json"))
    parser.add_argument("--release", default=str(ROOT / "dist" / "release.json"))
    parser.add_argument("--region", help="the administrator's region (default: the release's first)")
    parser.add_argument("--call-as", default="DELEGATED_ADMIN", choices=CALL_AS)
    parser.add_argument(
        "--alarm-email", help="also deploy the failed-operation alarm stack, mailing this address"
    )
    args = parser.parse_args(argv)
    import boto3

    try:
        release = json.loads(Path(args.release).read_text())
        template = json.loads((Path(args.release).parent / "template.json").read_text())
    except (OSError, ValueError) as err:
        print(f"org-deploy failed: no release ({err}); run make release first", file=sys.stderr)
        return 1
    try:
        config = load_config(Path(args.config), template.get("Parameters", {}))
        cfn = boto3.client("cloudformation", region_name=args.region or release["regions"][0])
        outcome = deploy(cfn, config, release, args.call_as)
        admin = deploy_admin_stack(cfn, args.alarm_email, config.name) if args.alarm_email else None
    except DeployError as err:
        print(f"org-deploy failed: {err}", file=sys.stderr)
        return 1
    verb = "created" if outcome.created else "updated"
    print(f"StackSet {config.name} {verb} ({outcome.stack_set_id}), release {release.get('version')}")
    for operation in outcome.operations:
        print(f"  operation {operation['id']} {operation['action']}: {operation['status']}")
    for item in sorted(outcome.instances, key=lambda i: (i["account"], i["region"])):
        print(f"  {item['account']} {item['region']}: {item['status']} {item['detailed']}".rstrip())
    if admin:
        print(f"  alarm stack {ADMIN_STACK}: {admin}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
