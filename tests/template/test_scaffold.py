"""`make new-automation NAME=example_probe` on a copy of the repo, then its tests and the
template checks pass there, and sam validate --lint still accepts the template."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from template_tools import ROOT

pytestmark = pytest.mark.slow
IGNORE = shutil.ignore_patterns(
    ".venv", ".aws-sam", ".git", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis"
)


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(ROOT, copy, ignore=IGNORE)
    return copy


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)


def test_new_automation_is_complete_and_passes_the_checks(repo_copy: Path) -> None:
    made = run([sys.executable, "tools/new_automation.py", "example_probe"], repo_copy)
    assert made.returncode == 0, made.stderr
    for path in (
        "functions/example_probe/app.py",
        "events/example_probe/eventbridge.scheduled.json",
        "tests/example_probe/test_example_probe.py",
        "demo/scenarios/example_probe.py",
        "docs/example_probe.md",
    ):
        assert (repo_copy / path).is_file(), path
    template = (repo_copy / "template.yaml").read_text()
    assert "ExampleProbeFunction:" in template and "ExampleProbeSchedule:" in template
    tests = run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            "not slow",
            "tests/example_probe",
            "tests/template",
        ],
        repo_copy,
    )
    assert tests.returncode == 0, tests.stdout[-4000:]
    assert (
        "example_probe"
        in run([sys.executable, "-m", "pytest", "--collect-only", "-q", "tests/template"], repo_copy).stdout
    )
    lint = run([str(Path(sys.executable).with_name("sam")), "validate", "--lint"], repo_copy)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    ruff = run(
        [
            str(Path(sys.executable).with_name("ruff")),
            "check",
            "functions/example_probe",
            "tests/example_probe",
            "demo/scenarios/example_probe.py",
        ],
        repo_copy,
    )
    assert ruff.returncode == 0, ruff.stdout


def test_bad_or_taken_names_are_refused(repo_copy: Path) -> None:
    for name, reason in (
        ("Probe", "snake_case"),
        ("website_health_check", "already exists"),
        ("json", "snake_case"),
    ):
        result = run([sys.executable, "tools/new_automation.py", name], repo_copy)
        assert result.returncode == 2 and reason in result.stderr, (name, result.stderr)
