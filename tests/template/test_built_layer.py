"""The handlers import from what `sam build` ships, not from the source tree: each one is
imported in a fresh interpreter (``-I -S``: no site-packages, no PYTHONPATH) whose path is
only what Lambda gives it - the function's build artifact (/var/task), the built layer's
python/ (/opt/python) and, last, the SDK the Lambda Python runtime bundles (boto3, botocore,
s3transfer, dateutil, six, jmespath, urllib3; a stand-in taken from this venv). Every module
must come from there: the handler from the artifact, everything else from the layer - the
layer ships the SDK at the tested version, so the runtime's (whatever version a region has
that day) is never imported and nothing of the layer runs an SDK it was not tested with.

The layer is built for arm64 / CPython 3.13 (pip --platform); pure-Python packages import on
any interpreter. A package that ships only a foreign compiled module cannot be imported on
this machine: the test would skip, naming it, rather than fail."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import boto3
import pytest

from template_tools import ROOT, automation_folders, camel, sam_functions

# One worker runs every case (xdist loadgroup), so `sam build` runs once, not once per worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("built_layer")]

SAM = Path(sys.executable).with_name("sam")
SITE_PACKAGES = Path(boto3.__file__).resolve().parent.parent
# What the Lambda Python runtime bundles (its /var/runtime), as top-level module names.
RUNTIME_SDK = ("boto3", "botocore", "s3transfer", "dateutil", "six", "jmespath", "urllib3")
# Every handler imports these; each must come from the layer, the SDK included (it shadows
# the runtime's, as on Lambda, where /opt/python comes before /var/runtime).
FROM_LAYER = ("autopilot", "aws_lambda_powertools", "urllib3", "jmespath", "boto3", "botocore", "dateutil")
# The layer's other packages, used by some handlers only (website_health_check: requests).
ALSO_LAYER = ("requests", "certifi", "idna", "charset_normalizer", "typing_extensions")

IMPORT = textwrap.dedent(
    """
    import importlib, json, sys
    task, layer, runtime, handler = sys.argv[1:5]
    sys.path[:0] = [task, layer, runtime]  # Lambda's order: the code, the layers, the runtime
    module_name, _, function = handler.rpartition(".")
    app = importlib.import_module(module_name)
    importlib.import_module("autopilot.aws").client("sts")  # botocore on the layer's urllib3, jmespath
    print(json.dumps({
        "handler": callable(getattr(app, function, None)),
        "permissions": sorted(app.PERMISSIONS),
        "files": {name: getattr(module, "__file__", None) for name, module in sorted(sys.modules.items())},
    }))
    """
)


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`sam build` of the template into a fresh directory, once for this module."""
    build_dir = tmp_path_factory.mktemp("sam") / "build"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "SAM_CLI_TELEMETRY": "0",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    result = subprocess.run(
        [str(SAM), "build", "--build-dir", str(build_dir), "--no-cached"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return build_dir


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for the runtime's bundled SDK: links to this venv's copies, nothing else."""
    folder = tmp_path_factory.mktemp("var-runtime")
    for name in RUNTIME_SDK:
        source = SITE_PACKAGES / name if (SITE_PACKAGES / name).is_dir() else SITE_PACKAGES / f"{name}.py"
        assert source.exists(), f"{name} is not in {SITE_PACKAGES}"
        (folder / source.name).symlink_to(source)
    return folder


def foreign_only(layer: Path) -> list[str]:
    """Compiled modules of the layer that have no pure-Python twin (cannot import here)."""
    return sorted(
        str(so.relative_to(layer))
        for so in layer.rglob("*.so")
        if not so.with_name(so.name.split(".")[0] + ".py").exists() and "x86_64" not in so.name
    )


@pytest.mark.parametrize("name", automation_folders())
def test_the_handler_imports_from_the_built_layer_and_artifact(name: str, build: Path, runtime: Path) -> None:
    task, layer = build / f"{camel(name)}Function", build / "SharedLayer" / "python"
    handler = sam_functions()[f"{camel(name)}Function"]["Properties"]["Handler"]
    env = {"PATH": os.environ["PATH"], "AWS_DEFAULT_REGION": "eu-west-1", "POWERTOOLS_SERVICE_NAME": name}
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", IMPORT, str(task), str(layer), str(runtime), handler],
        cwd=build,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0 and (unusable := foreign_only(layer)):
        pytest.skip(f"the layer's compiled-only modules {unusable} do not import on this CPU/Python")
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout)
    app = __import__(f"{name}.app", fromlist=["PERMISSIONS"])
    assert found["handler"] is True
    assert found["permissions"] == sorted(app.PERMISSIONS)
    files = {k: Path(v) for k, v in found["files"].items() if v}
    top = {k: v for k, v in files.items() if "." not in k}
    assert top[name].is_relative_to(task)
    for package in FROM_LAYER:
        assert top[package].is_relative_to(layer), (package, top[package])
    for package in set(ALSO_LAYER) & top.keys():
        assert top[package].is_relative_to(layer), (package, top[package])
    from_runtime = {k: str(v) for k, v in top.items() if v.is_relative_to(runtime)}
    assert not from_runtime, f"the runtime's SDK was imported, not the layer's: {from_runtime}"
    outside = {
        k: str(v)
        for k, v in files.items()
        if v.is_relative_to(ROOT) or v.is_relative_to(SITE_PACKAGES)
        if not (v.is_relative_to(build) or v.is_relative_to(runtime))
    }
    assert not outside, f"imported from the source tree or the venv, not the build: {outside}"
