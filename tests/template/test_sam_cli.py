"""`sam validate --lint` and `sam build`, exactly as a user runs them (no Docker, no AWS)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from template_tools import ROOT, automation_folders, camel

pytestmark = pytest.mark.slow
SAM = Path(sys.executable).with_name("sam")


def sam_env(path: str) -> dict[str, str]:
    return {
        "PATH": path,
        "HOME": os.environ.get("HOME", "/tmp"),
        "SAM_CLI_TELEMETRY": "0",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }


def test_sam_validate_lint_is_clean() -> None:
    result = subprocess.run(
        [str(SAM), "validate", "--lint"],
        cwd=ROOT,
        env=sam_env(os.environ["PATH"]),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is a valid SAM Template" in result.stdout + result.stderr


def test_sam_build_needs_no_docker_and_no_lambda_python(tmp_path: Path) -> None:
    """PATH holds only this venv (Python 3.11+ of any minor) and the system basics: no
    python3.13 interpreter, no Docker. The layer must still come out arm64 / CPython 3.13."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("make", "cp", "find", "rm", "sh", "bash", "mkdir", "env", "uname"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    path = f"{SAM.parent}:{bin_dir}"
    build_dir = tmp_path / "build"
    result = subprocess.run(
        [str(SAM), "build", "--build-dir", str(build_dir), "--no-cached"],
        cwd=ROOT,
        env=sam_env(path),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    layer = build_dir / "SharedLayer" / "python"
    assert (layer / "autopilot" / "notify.py").is_file()
    assert (layer / "aws_lambda_powertools").is_dir() and (layer / "aiohttp").is_dir()
    native = list(layer.rglob("*.so"))
    assert native and all("aarch64" in so.name or "abi3" in so.name for so in native), native
    assert not any("x86_64" in so.name for so in native)
    assert not list(layer.rglob("__pycache__"))
    for name in automation_folders():
        code = build_dir / f"{camel(name)}Function"
        assert (code / name / "app.py").is_file(), f"{name} missing from its build artifact"
