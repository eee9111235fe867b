"""Security scan of the deployed template: checkov on the transformed CloudFormation.

    .venv/bin/python tools/security_scan.py

1. builds .venv-scan from requirements-scan.txt if it is missing or out of date (checkov's pins
   conflict with aws-sam-cli's, so it cannot live in .venv);
2. writes the template as CloudFormation will see it (Fn::ForEach expanded, SAM transform
   applied: tests/template_tools.py) to a temporary file;
3. runs checkov on it; any finding not suppressed inline in template.yaml (``Metadata:
   checkov: skip: [{id, comment}]``, which the SAM transform copies onto the generated
   AWS::Lambda::Function) fails the scan.

cfn-lint runs in ``sam validate --lint`` (tests/template/test_sam_cli.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements-scan.txt"
SCAN_VENV = ROOT / ".venv-scan"


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


def write_template(directory: Path) -> Path:
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    sys.path[:0] = [str(ROOT / "tests")]
    from template_tools import cloudformation_template

    path = directory / "template.json"
    path.write_text(json.dumps(cloudformation_template(), indent=1, default=str))
    return path


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


def main() -> int:
    python = ensure_scan_venv()
    with tempfile.TemporaryDirectory(prefix="ops-autopilot-scan-") as tmp:
        template = write_template(Path(tmp))
        code = run_checkov(python, template)
    print("security scan: " + ("no unsuppressed findings" if code == 0 else "FAILED (findings above)"))
    return code


if __name__ == "__main__":
    sys.exit(main())
