"""Load template.yaml as CloudFormation would see it: Fn::ForEach expanded (as the
AWS::LanguageExtensions transform does), then the SAM transform (samtranslator, the same
library CloudFormation's AWS::Serverless transform runs)."""

from __future__ import annotations

import copy
import functools
import json
import re
from pathlib import Path
from typing import Any

from samcli.yamlhelper import yaml_parse
from samtranslator.translator.transform import transform

from tools.render import expand_foreach

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"


def raw_template() -> dict[str, Any]:
    parsed: dict[str, Any] = yaml_parse(TEMPLATE.read_text())
    return parsed


@functools.cache
def _expanded() -> dict[str, Any]:
    template = raw_template()
    for section in ("Resources", "Outputs", "Conditions"):
        if section in template:
            template[section] = expand_foreach(template[section])
    return template


def expanded_template() -> dict[str, Any]:
    """The SAM template with Fn::ForEach expanded."""
    return copy.deepcopy(_expanded())


class _NoManagedPolicies:
    def load(self) -> dict[str, str]:
        return {}


@functools.cache
def _cloudformation() -> dict[str, Any]:
    template = expanded_template()
    template["Transform"] = "AWS::Serverless-2016-10-31"
    # What `sam package` does: code locations become S3 URIs.
    template["Globals"]["Function"]["CodeUri"] = "s3://bucket/functions.zip"
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::LayerVersion":
            resource["Properties"]["ContentUri"] = "s3://bucket/layer.zip"
    result: dict[str, Any] = transform(template, {}, _NoManagedPolicies())
    return result


def cloudformation_template() -> dict[str, Any]:
    """Plain CloudFormation, as deployed (needs AWS_DEFAULT_REGION set; conftest does)."""
    return copy.deepcopy(_cloudformation())


def automation_folders() -> list[str]:
    return sorted(p.parent.name for p in (ROOT / "functions").glob("*/app.py"))


def camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def sam_functions() -> dict[str, dict[str, Any]]:
    resources = expanded_template()["Resources"]
    return {k: v for k, v in resources.items() if v["Type"] == "AWS::Serverless::Function"}


def policy_statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    """Every statement of a transformed IAM role's inline policies (both branches of Fn::If)."""
    statements: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "Fn::If" in node:
                for branch in node["Fn::If"][1:]:
                    walk(branch)
            elif "Effect" in node and "Action" in node:
                statements.append(node)
            else:
                for v in node.values():
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for policy in role["Properties"].get("Policies", []):
        walk(policy)
    return statements


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# -- IAM as deployed: every policy a role gets, from wherever the template attaches it ---------

# What Lambda itself does with a function's role, not the function's code: send a failed
# asynchronous event to the on-failure destination and a run's summary to the on-success one
# (the default event bus), write the function's logs, and (the health
# check in a VPC) manage its network interfaces. The code-vs-grant comparisons leave these out;
# tests/template/test_iam_semantics.py judges where they reach.
RUNTIME_ACTIONS = frozenset(
    {
        "sqs:SendMessage",
        "events:PutEvents",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "ec2:CreateNetworkInterface",
        "ec2:DeleteNetworkInterface",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeSubnets",
        "ec2:AssignPrivateIpAddresses",
        "ec2:UnassignPrivateIpAddresses",
    }
)

ROLE_POLICY_TYPES = ("AWS::IAM::RolePolicy", "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy")


def _names_role(value: Any, role: str, resolved: str | None) -> bool:
    """Whether a RoleName/Roles value is this role (Ref, a Sub of nothing but its Ref, or - in
    a rendering - its resolved name)."""
    return value in ({"Ref": role}, {"Fn::Sub": "${" + role + "}"}) or (
        resolved is not None and value == resolved
    )


def attached_policies(
    resources: dict[str, Any], role: str, resolved: str | None = None
) -> list[tuple[str, Any]]:
    """(where, policy document) of every policy the role gets: its inline Policies, and every
    AWS::IAM::RolePolicy / Policy / ManagedPolicy of the template that names it. Raises on a
    ManagedPolicyArns entry that is not one of those (its content could not be judged)."""
    properties = resources[role]["Properties"]
    found: list[tuple[str, Any]] = []
    for policy in properties.get("Policies", []):
        found.append((f"{role}.Policies", policy))
    for name, resource in resources.items():
        if resource.get("Type") not in ROLE_POLICY_TYPES:
            continue
        props = resource["Properties"]
        roles = [props["RoleName"]] if "RoleName" in props else as_list(props.get("Roles", []))
        if any(_names_role(r, role, resolved) for r in roles):
            document = props["PolicyDocument"]
            # A document given as a string (its condition keys hold a parameter): as IAM reads it,
            # once resolved; unresolved it is a Fn::Sub, whose statements only a rendering shows.
            found.append((name, json.loads(document) if isinstance(document, str) else document))
    for arn in as_list(properties.get("ManagedPolicyArns", [])):
        target = arn.get("Ref") if isinstance(arn, dict) else None
        if resources.get(target or "", {}).get("Type") != "AWS::IAM::ManagedPolicy":
            raise ValueError(f"{role} has a managed policy whose content the tests cannot judge: {arn}")
    return found


def role_statements(role: str, template: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every statement the role gets, from every attached policy (both branches of Fn::If)."""
    resources = (template or _cloudformation())["Resources"]
    return [s for _, policy in attached_policies(resources, role) for s in policy_statements_of(policy)]


def rendered_ref(rendered: dict[str, Any], logical: str) -> Any:
    """What Ref gives for a resource of a rendering (its made-up physical name or ARN)."""
    return _Resolver(rendered, {}, resolve=True).ref(logical)


def rendered_role_statements(rendered: dict[str, Any], role: str) -> list[dict[str, Any]]:
    """Every statement the role gets in a rendering (``render`` with resolve=True)."""
    name = rendered_ref(rendered, role)
    policies = attached_policies(rendered["Resources"], role, resolved=name)
    return [s for _, policy in policies for s in policy_statements_of(policy)]


def policy_statements_of(node: Any) -> list[dict[str, Any]]:
    return policy_statements({"Properties": {"Policies": [node]}})


# -- Renderings: the template as CloudFormation deploys it for one set of parameter values ------
#
# CloudFormation evaluates the Conditions, drops the resources whose condition is false, picks
# one branch of every Fn::If and removes AWS::NoValue; ``render`` does the same. With
# ``resolve=True`` it also resolves every other intrinsic function for a fixed account, region,
# partition and stack (physical names and ARNs made up the way CloudFormation makes them), so
# that policies can be read as IAM reads them (tests/template/iam_eval.py, parliament).

ACCOUNT = "123456789012"
REGION = "eu-west-1"
PARTITION = "aws"
STACK_NAME = "ops-autopilot-test"
STACK_UUID = "1c2fa620-982a-11e3-aff7-50e2416294e0"
STACK_ID = f"arn:{PARTITION}:cloudformation:{REGION}:{ACCOUNT}:stack/{STACK_NAME}/{STACK_UUID}"
PSEUDO = {
    "AWS::AccountId": ACCOUNT,
    "AWS::Region": REGION,
    "AWS::Partition": PARTITION,
    "AWS::StackName": STACK_NAME,
    "AWS::StackId": STACK_ID,
    "AWS::URLSuffix": "amazonaws.com",
}
NO_VALUE = object()
# Values that turn an optional feature on, for parameters whose default leaves it off, by the
# end of the parameter's name; any other string parameter gets "example".
FEATURE_SAMPLES: dict[str, Any] = {
    "SubnetIds": ["subnet-0123456789abcdef0", "subnet-0fedcba9876543210"],
    "SecurityGroupIds": ["sg-0123456789abcdef0"],
    "Email": "ops@example.com",
    "SenderAddress": "ops-autopilot@example.com",
    "Sites": "https://example.com",
    "CopyRegions": ["eu-central-1"],
    "HealthCheckRegions": f"{REGION},us-east-1,ap-southeast-2",  # this region the home
    "CopyKmsKeys": ["arn:aws:kms:eu-central-1:123456789012:key/0f5bbd7e-6b1f-4c4e-9c9d-2f1a3b4c5d6e"],
    "RollupBusArn": "arn:aws:events:eu-west-1:210987654321:event-bus/ops-autopilot-rollup",
}


def parameter_defaults(template: dict[str, Any]) -> dict[str, Any]:
    """Each parameter's default as CloudFormation passes it (CommaDelimitedList: a list)."""
    values = {}
    for name, spec in template.get("Parameters", {}).items():
        default = str(spec.get("Default", ""))
        values[name] = _typed(spec, default)
    return values


def _typed(spec: dict[str, Any], value: Any) -> Any:
    if spec.get("Type") == "CommaDelimitedList" and isinstance(value, str):
        return [v.strip() for v in value.split(",")] if value else []
    return value


def _referenced_parameters(node: Any, template: dict[str, Any], seen: set[str] | None = None) -> set[str]:
    seen = set() if seen is None else seen
    found: set[str] = set()
    if isinstance(node, dict):
        if set(node) == {"Ref"} and node["Ref"] in template.get("Parameters", {}):
            found.add(node["Ref"])
        if set(node) == {"Condition"} and node["Condition"] not in seen:
            seen.add(node["Condition"])
            found |= _referenced_parameters(template["Conditions"][node["Condition"]], template, seen)
        for value in node.values():
            found |= _referenced_parameters(value, template, seen)
    elif isinstance(node, list):
        for value in node:
            found |= _referenced_parameters(value, template, seen)
    return found


def _candidates(name: str, spec: dict[str, Any]) -> list[Any]:
    values: list[Any] = [str(v) for v in spec.get("AllowedValues", [])]
    sample = next((v for end, v in FEATURE_SAMPLES.items() if name.endswith(end)), "example")
    values.append(sample)
    for bound in ("MinValue", "MaxValue"):
        if bound in spec:
            values.append(str(spec[bound]))
    pattern = spec.get("AllowedPattern")
    if pattern:
        values = [v for v in values if isinstance(v, list) or re.fullmatch(pattern, v)]
    return [_typed(spec, v) for v in values]


def features_on(template: dict[str, Any]) -> dict[str, Any]:
    """Parameter values under which every Condition of the template is true (every optional
    feature on), found from the Conditions themselves: a new optional feature is covered
    without a change here. Parameters left empty by default that no condition reads (the
    health check's security groups) get a sample too. Raises if no values make them all true."""
    import itertools

    values = parameter_defaults(template)
    specs = template.get("Parameters", {})
    conditions = template.get("Conditions", {})
    exclusive = {condition for condition, _ in EXCLUSIVE_RENDERINGS.values()}
    conditions = {name: c for name, c in conditions.items() if name not in exclusive}
    for name in conditions:
        already = [c for c in conditions if condition_holds(template, c, values)]
        if name in already:
            continue
        params = sorted(_referenced_parameters(conditions[name], template))
        for combination in itertools.product(*(_candidates(p, specs[p]) for p in params)):
            trial = {**values, **dict(zip(params, combination, strict=True))}
            if all(condition_holds(template, c, trial) for c in [name, *already]):
                values = trial
                break
        else:
            raise ValueError(f"no parameter values make the condition {name} true with the others")
    read_by_conditions = _referenced_parameters(conditions, template)
    for name in specs:
        sample = next((v for end, v in FEATURE_SAMPLES.items() if name.endswith(end)), None)
        if name not in read_by_conditions and values[name] in ("", []) and sample is not None:
            values[name] = _typed(specs[name], sample)
    false = [c for c in conditions if not condition_holds(template, c, values)]
    if false:
        raise ValueError(f"conditions still false with every feature on: {false}")
    return values


# Conditions that cannot hold with the others (a region is the health check's home or one of
# its members): features-on leaves each false, and its own rendering turns it on.
EXCLUSIVE_RENDERINGS: dict[str, tuple[str, dict[str, Any]]] = {
    "health-member": ("WebsiteHealthCheckMemberRegion", {"WebsiteHealthCheckRegions": f"us-east-1,{REGION}"}),
}


def renderings(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The parameter sets every gate judges: the defaults, every optional feature on, and each
    exclusive feature (EXCLUSIVE_RENDERINGS) on with the others."""
    on = features_on(template)
    found = {"defaults": parameter_defaults(template), "features-on": on}
    for name, (condition, values) in EXCLUSIVE_RENDERINGS.items():
        trial = {**on, **values}
        if not condition_holds(template, condition, trial):
            raise ValueError(f"rendering {name}: {values} does not make {condition} true")
        found[name] = trial
    return found


def condition_holds(template: dict[str, Any], name: str, values: dict[str, Any]) -> bool:
    return bool(_Resolver(template, values, resolve=True).condition(name))


def render(template: dict[str, Any], values: dict[str, Any], resolve: bool = True) -> dict[str, Any]:
    """The template as deployed with these parameter values (see above). With resolve=False,
    only the conditions are applied (resources dropped, Fn::If branches chosen) and the
    parameters' defaults set to the values: what checkov needs to scan one rendering."""
    resolver = _Resolver(template, values, resolve)
    out = copy.deepcopy(template)
    out["Resources"] = {
        name: resource
        for name, resource in template["Resources"].items()
        if "Condition" not in resource or resolver.condition(resource["Condition"])
    }
    resolver.resources = out["Resources"]
    out["Resources"] = {name: resolver.value(resource) for name, resource in out["Resources"].items()}
    if "Outputs" in out:
        out["Outputs"] = {
            name: resolver.value(output)
            for name, output in template["Outputs"].items()
            if "Condition" not in output or resolver.condition(output["Condition"])
        }
    for name, spec in out.get("Parameters", {}).items():
        value = values[name]
        spec["Default"] = ",".join(value) if isinstance(value, list) else value
    return out


def _physical_name(logical: str, resource: dict[str, Any]) -> str:
    """A made-up name as CloudFormation generates one: <stack>-<logical id>-<suffix>."""
    name = f"{STACK_NAME}-{logical}-ABCDEF012345"
    return name.lower() if resource.get("Type") == "AWS::S3::Bucket" else name


# type -> (the property that names it, what Ref gives, {attribute: ARN or value format})
_ARN = f"arn:{PARTITION}"
_RESOURCE_TYPES: dict[str, tuple[str | None, str, dict[str, str]]] = {
    "AWS::SNS::Topic": (
        "TopicName",
        f"{_ARN}:sns:{REGION}:{ACCOUNT}:{{name}}",
        {"TopicName": "{name}", "TopicArn": f"{_ARN}:sns:{REGION}:{ACCOUNT}:{{name}}"},
    ),
    "AWS::SQS::Queue": (
        "QueueName",
        f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{{name}}",
        {"Arn": f"{_ARN}:sqs:{REGION}:{ACCOUNT}:{{name}}", "QueueName": "{name}"},
    ),
    "AWS::DynamoDB::Table": (
        "TableName",
        "{name}",
        {"Arn": f"{_ARN}:dynamodb:{REGION}:{ACCOUNT}:table/{{name}}"},
    ),
    "AWS::Lambda::Function": (
        "FunctionName",
        "{name}",
        {"Arn": f"{_ARN}:lambda:{REGION}:{ACCOUNT}:function:{{name}}"},
    ),
    "AWS::IAM::Role": ("RoleName", "{name}", {"Arn": f"{_ARN}:iam::{ACCOUNT}:role/{{name}}"}),
    "AWS::Logs::LogGroup": (
        "LogGroupName",
        "{name}",
        {"Arn": f"{_ARN}:logs:{REGION}:{ACCOUNT}:log-group:{{name}}:*"},
    ),
    "AWS::KMS::Key": (None, "{name}", {"Arn": f"{_ARN}:kms:{REGION}:{ACCOUNT}:key/{{name}}"}),
    "AWS::Events::Rule": ("Name", "{name}", {"Arn": f"{_ARN}:events:{REGION}:{ACCOUNT}:rule/{{name}}"}),
    "AWS::CloudWatch::Alarm": (
        "AlarmName",
        "{name}",
        {"Arn": f"{_ARN}:cloudwatch:{REGION}:{ACCOUNT}:alarm:{{name}}"},
    ),
    "AWS::S3::Bucket": ("BucketName", "{name}", {"Arn": f"{_ARN}:s3:::{{name}}"}),
    "AWS::SSM::Parameter": ("Name", "{name}", {}),
    "AWS::CloudTrail::Trail": (
        "TrailName",
        "{name}",
        {"Arn": f"{_ARN}:cloudtrail:{REGION}:{ACCOUNT}:trail/{{name}}"},
    ),
    "AWS::Lambda::LayerVersion": (None, f"{_ARN}:lambda:{REGION}:{ACCOUNT}:layer:{{name}}:1", {}),
}


class _Resolver:
    def __init__(self, template: dict[str, Any], values: dict[str, Any], resolve: bool) -> None:
        self.template = template
        self.values = values
        self.resolve = resolve
        self.resources: dict[str, Any] = template["Resources"]
        self._conditions: dict[str, bool] = {}
        self._names: dict[str, str] = {}

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            self._conditions[name] = bool(self._full(self.template["Conditions"][name]))
        return self._conditions[name]

    def _full(self, node: Any) -> Any:
        """Any node fully resolved (conditions, parameters, mappings), whatever self.resolve."""
        keep, self.resolve = self.resolve, True
        try:
            return self.value(node)
        finally:
            self.resolve = keep

    def value(self, node: Any) -> Any:
        if isinstance(node, list):
            items = [self.value(v) for v in node]
            return [v for v in items if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, arg),) = node.items()
            if key == "Fn::If":
                name, yes, no = arg
                return self.value(yes if self.condition(name) else no)
            if key == "Ref" and arg == "AWS::NoValue":
                return NO_VALUE
            if key == "Condition" and isinstance(arg, str) and arg in self.template.get("Conditions", {}):
                return self.condition(arg)
            if key in ("Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or"):
                return self._logic(key, arg)
            if self.resolve and (key == "Ref" or key.startswith("Fn::")):
                return self._intrinsic(key, arg)
        out = {}
        for key, value in node.items():
            resolved = self.value(value)
            if resolved is not NO_VALUE:
                out[key] = resolved
        return out

    def _logic(self, key: str, arg: Any) -> bool:
        values = [self._full(a) for a in arg]
        if key == "Fn::Equals":
            return bool(values[0] == values[1])
        if key == "Fn::Not":
            return not values[0]
        return all(values) if key == "Fn::And" else any(values)

    def _intrinsic(self, key: str, arg: Any) -> Any:
        if key == "Ref":
            return self.ref(arg)
        if key == "Fn::GetAtt":
            logical, attribute = arg.split(".", 1) if isinstance(arg, str) else arg
            return self.get_att(logical, attribute)
        if key == "Fn::Sub":
            text, variables = (arg, {}) if isinstance(arg, str) else arg
            return self._sub(text, {k: self.value(v) for k, v in variables.items()})
        if key == "Fn::Join":
            delimiter, items = arg
            items = self.value(items)
            return delimiter.join(str(i) for i in items)
        if key == "Fn::Split":
            delimiter, text = arg
            return str(self.value(text)).split(delimiter)
        if key == "Fn::Select":
            index, items = arg
            return self.value(items)[int(self.value(index))]
        if key == "Fn::FindInMap":
            mapping, first, second = (self.value(a) for a in arg)
            return self.template["Mappings"][mapping][str(first)][second]
        if key == "Fn::Base64":
            return self.value(arg)
        raise ValueError(f"cannot resolve {key}")

    def _sub(self, text: str, variables: dict[str, Any]) -> str:
        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name and not name.startswith("AWS::"):
                logical, attribute = name.split(".", 1)
                return str(self.get_att(logical, attribute))
            return str(self.ref(name))

        return re.sub(r"\$\{([^}]+)\}", one, text)

    def ref(self, name: str) -> Any:
        if name in PSEUDO:
            return PSEUDO[name]
        if name in self.values:
            return self.values[name]
        resource = self.resources.get(name) or self.template["Resources"].get(name)
        if resource is None:
            raise ValueError(f"Ref to unknown {name}")
        return self._format(name, resource, None)

    def get_att(self, logical: str, attribute: str) -> Any:
        resource = self.resources.get(logical) or self.template["Resources"].get(logical)
        if resource is None:
            raise ValueError(f"GetAtt of unknown {logical}")
        return self._format(logical, resource, attribute)

    def _format(self, logical: str, resource: dict[str, Any], attribute: str | None) -> str:
        kind = resource.get("Type", "")
        name_property, ref_format, attributes = _RESOURCE_TYPES.get(kind, (None, "{name}", {}))
        if logical not in self._names:
            given = resource.get("Properties", {}).get(name_property) if name_property else None
            if kind == "AWS::KMS::Key":
                self._names[logical] = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
            else:
                self._names[logical] = str(self._full(given)) if given else _physical_name(logical, resource)
        name = self._names[logical]
        if attribute is None:
            return ref_format.format(name=name)
        if attribute in attributes:
            return attributes[attribute].format(name=name)
        return f"{_ARN}:fake:{REGION}:{ACCOUNT}:{logical}/{attribute}"


# The layer's pinned requirements, and the AWS SDK's distributions the layer must ship
# (tests/template/test_layer_pins.py, test_layer_parity.py).
LAYER_REQUIREMENTS = ROOT / "layers" / "autopilot" / "requirements.txt"
LAYER_SDK = ("boto3", "botocore", "s3transfer", "jmespath", "urllib3", "python-dateutil", "six")
