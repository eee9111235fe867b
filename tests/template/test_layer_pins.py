"""The layer ships exactly the libraries the tests run with: every pin of
layers/autopilot/requirements.txt equals requirements-dev.txt's, the AWS SDK included (the
runtime's own SDK version varies by region and over time and is never tested)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from template_tools import LAYER_REQUIREMENTS, ROOT
from template_tools import LAYER_SDK as SDK

pytestmark = pytest.mark.unit


def pins(path: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if match := re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;#]+)", line.strip()):
            found[canonicalize_name(match.group(1))] = match.group(2)
    return found


def test_the_layer_pins_the_tested_versions_the_sdk_included() -> None:
    layer, dev = pins(LAYER_REQUIREMENTS), pins(ROOT / "requirements-dev.txt")
    assert set(SDK) <= layer.keys(), sorted(set(SDK) - layer.keys())
    assert {name: layer[name] for name in layer} == {name: dev.get(name) for name in layer}
