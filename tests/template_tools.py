"""Load template.yaml as CloudFormation would see it: Fn::ForEach expanded (as the
AWS::LanguageExtensions transform does), then the SAM transform (samtranslator, the same
library CloudFormation's AWS::Serverless transform runs)."""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

from samcli.yamlhelper import yaml_parse
from samtranslator.translator.transform import transform

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"


def raw_template() -> dict[str, Any]:
    parsed: dict[str, Any] = yaml_parse(TEMPLATE.read_text())
    return parsed


def _substitute(node: Any, name: str, value: str) -> Any:
    if isinstance(node, dict):
        if node == {"Ref": name}:
            return value
        return {_substitute(k, name, value): _substitute(v, name, value) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, name, value) for v in node]
    if isinstance(node, str):
        return node.replace("${" + name + "}", value).replace("&{" + name + "}", re.sub(r"\W", "", value))
    return node


def expand_foreach(section: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in section.items():
        if key.startswith("Fn::ForEach::"):
            identifier, collection, fragment = value
            for item in collection:
                out.update(expand_foreach(_substitute(copy.deepcopy(fragment), identifier, item)))
        else:
            out[key] = value
    return out


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
