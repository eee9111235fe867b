"""template.yaml as plain CloudFormation: what the AWS::LanguageExtensions and SAM transforms make
of it, rendered here instead of by CloudFormation - for service-managed StackSets, which refuse
templates with transforms (tools/release.py), and for the tests (tests/template_tools.py).

- :func:`expand_foreach`: ``Fn::ForEach`` loops expanded, as AWS::LanguageExtensions does (the
  only language extension template.yaml uses; :func:`without_transforms` refuses others).
- :func:`without_transforms`: then the SAM transform (samtranslator, the library CloudFormation's
  AWS::Serverless transform runs), with each function's and layer's code at an S3 key and the
  bucket taken from the region at deploy time: ``${ArtifactBucketPrefix}-${AWS::Region}``
  (Lambda reads code only from a bucket in the function's own region).
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Mapping
from typing import Any, Final

from samtranslator.translator.transform import transform

LANGUAGE_EXTENSIONS: Final = "AWS::LanguageExtensions"
SERVERLESS: Final = "AWS::Serverless-2016-10-31"
BUCKET_PARAMETER: Final = "ArtifactBucketPrefix"
_PLACEHOLDER: Final = "ops-autopilot-artifact-bucket-placeholder"
# Language extensions besides Fn::ForEach: not rendered here, so refused (a release would ship
# them unexpanded, and a StackSet would refuse the template).
_UNSUPPORTED: Final = ("Fn::Length", "Fn::ToJsonString")


class RenderError(ValueError):
    """The template cannot be rendered without transforms (and why)."""


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


def expand_foreach(section: Mapping[str, Any]) -> dict[str, Any]:
    """A template section with its ``Fn::ForEach::<name>: [identifier, collection, fragment]``
    loops expanded (nested loops included)."""
    out: dict[str, Any] = {}
    for key, value in section.items():
        if key.startswith("Fn::ForEach::"):
            identifier, collection, fragment = value
            for item in collection:
                out.update(expand_foreach(_substitute(copy.deepcopy(fragment), identifier, item)))
        else:
            out[key] = value
    return out


def language_extensions(template: Mapping[str, Any]) -> dict[str, Any]:
    """``template`` with Fn::ForEach expanded and AWS::LanguageExtensions taken off its
    Transform (the SAM transform stays)."""
    out = copy.deepcopy(dict(template))
    for section in ("Resources", "Outputs", "Conditions"):
        if section in out:
            out[section] = expand_foreach(out[section])
    transforms = out.get("Transform", [])
    transforms = [transforms] if isinstance(transforms, str) else list(transforms)
    kept = [t for t in transforms if t != LANGUAGE_EXTENSIONS]
    if kept:
        out["Transform"] = kept[0] if len(kept) == 1 else kept
    else:
        out.pop("Transform", None)
    text = json.dumps(out)
    for name in ("Fn::ForEach", *_UNSUPPORTED):
        if f'"{name}' in text:
            raise RenderError(f"{name} is left in the template: only Fn::ForEach is rendered here")
    return out


def _literal_subs(node: Any) -> Any:
    """``{"Fn::Sub": "text"}`` with no variable left in the text (Fn::ForEach put its value in)
    is the text itself - and in an Output's Description only a literal is allowed."""
    if isinstance(node, dict):
        sub = node.get("Fn::Sub") if len(node) == 1 else None
        if isinstance(sub, str) and "${" not in sub:
            return sub
        return {k: _literal_subs(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_literal_subs(v) for v in node]
    return node


class _NoManagedPolicies:
    """samtranslator's managed-policy loader: none. Every role of template.yaml is its own
    (AWS::IAM::Role with inline policies); a policy named by its short name would need IAM to
    resolve and is refused below instead of shipped unresolved."""

    def load(self) -> dict[str, str]:
        return {}


def serverless_functions(template: Mapping[str, Any]) -> list[str]:
    """The logical ids of the template's functions and layers (after Fn::ForEach)."""
    kinds = ("AWS::Serverless::Function", "AWS::Serverless::LayerVersion")
    return sorted(k for k, v in template.get("Resources", {}).items() if v.get("Type") in kinds)


def without_transforms(template: Mapping[str, Any], code: Mapping[str, str], region: str) -> dict[str, Any]:
    """Plain CloudFormation: no Transform, no Fn::ForEach, every function's and layer's code at
    ``code[logical id]`` (an S3 key) in the bucket ``${ArtifactBucketPrefix}-${AWS::Region}``.
    ``region`` is only what samtranslator needs to run; the result names no region."""
    sam = _literal_subs(language_extensions(template))
    missing = [name for name in serverless_functions(sam) if name not in code]
    if missing:
        raise RenderError(f"no code for {', '.join(missing)}")
    sam.setdefault("Globals", {}).setdefault("Function", {}).pop("CodeUri", None)
    for name, resource in sam["Resources"].items():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = f"s3://{_PLACEHOLDER}/{code[name]}"
        elif resource["Type"] == "AWS::Serverless::LayerVersion":
            resource["Properties"]["ContentUri"] = f"s3://{_PLACEHOLDER}/{code[name]}"
    sam["Transform"] = SERVERLESS
    saved = os.environ.get("AWS_DEFAULT_REGION")
    os.environ["AWS_DEFAULT_REGION"] = region
    try:
        rendered: dict[str, Any] = transform(sam, {}, _NoManagedPolicies())
    finally:
        if saved is None:
            os.environ.pop("AWS_DEFAULT_REGION", None)
        else:
            os.environ["AWS_DEFAULT_REGION"] = saved
    bucket = {"Fn::Sub": "${" + BUCKET_PARAMETER + "}-${AWS::Region}"}
    for resource in rendered["Resources"].values():
        properties = resource.get("Properties", {})
        for field in ("Code", "Content"):
            location = properties.get(field)
            if isinstance(location, dict) and location.get("S3Bucket") == _PLACEHOLDER:
                location["S3Bucket"] = bucket
        for arn in properties.get("ManagedPolicyArns", []) if resource["Type"] == "AWS::IAM::Role" else []:
            if isinstance(arn, str) and not arn.startswith("arn:"):
                raise RenderError(f"managed policy {arn!r} is named, not an ARN: resolve it in template.yaml")
    rendered["Parameters"][BUCKET_PARAMETER] = {
        "Type": "String",
        "AllowedPattern": r"^[a-z0-9][a-z0-9.-]{1,40}[a-z0-9]$",
        "Description": (
            "The prefix of the artifact buckets: the code is read from <prefix>-<region> in the "
            "region the stack is deployed in (make release uploads it there)."
        ),
    }
    text = json.dumps(rendered)
    for left in ("Fn::ForEach", _PLACEHOLDER, "AWS::Serverless::"):
        if left in text:
            raise RenderError(f"{left} is left in the rendered template")
    if "Transform" in rendered:
        raise RenderError("a Transform is left in the rendered template")
    return rendered
