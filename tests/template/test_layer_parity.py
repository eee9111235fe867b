"""The layer's packages, installed as the layer's Makefile installs them, satisfy each other's
requirements (its pins are the tested ones: test_layer_pins.py), so no library of the layer
runs next to a version of another that it does not accept (the issue: the layer's urllib3
and jmespath shadowed the ones the runtime's botocore was built for)."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import PathDistribution
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from template_tools import LAYER_REQUIREMENTS
from template_tools import LAYER_SDK as SDK


@pytest.fixture(scope="module")
def layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The layer's packages as the Makefile installs them for Lambda (arm64, CPython 3.13)."""
    target = tmp_path_factory.mktemp("layer") / "python"
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
        "--requirement", str(LAYER_REQUIREMENTS), "--target", str(target),
        "--platform", "manylinux2014_aarch64", "--implementation", "cp", "--python-version", "3.13",
        "--only-binary=:all:",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return target


@pytest.mark.slow
def test_every_library_of_the_layer_accepts_the_versions_of_the_others(layer: Path) -> None:
    dists = [PathDistribution(p) for p in layer.glob("*.dist-info")]
    versions = {canonicalize_name(d.metadata["Name"]): d.version for d in dists}
    assert set(SDK) <= versions.keys(), sorted(set(SDK) - versions.keys())
    environment = {
        "python_version": "3.13",
        "python_full_version": "3.13.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "aarch64",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "os_name": "posix",
        "extra": "",
    }
    unmet: list[str] = []
    for dist in dists:
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate(environment):
                continue  # an extra, or another platform's
            name = canonicalize_name(requirement.name)
            have = versions.get(name)
            if have is None or not requirement.specifier.contains(have, prereleases=True):
                unmet.append(f"{dist.metadata['Name']} needs {requirement}, the layer has {have}")
    assert unmet == []
