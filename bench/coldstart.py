"""Cold start: import of a handler module plus creation of the clients it uses, in a fresh
process, as a ratio to a bare `import boto3` plus the same clients. Median of several runs."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBE = """
import time
t0 = time.perf_counter()
{imports}
import boto3
clients = [boto3.client(s, region_name="eu-west-1") for s in {services!r}]
print(time.perf_counter() - t0)
"""


def _run(code: str) -> float:
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'layers/autopilot/python'}:{ROOT / 'functions'}",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "POWERTOOLS_METRICS_NAMESPACE": "OpsAutopilot",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def measure(module: str, services: list[str], runs: int = 7) -> dict[str, float]:
    handler, bare = [], []
    for _ in range(runs):  # interleaved, so both see the same disk cache and machine load
        handler.append(_run(PROBE.format(imports=f"import {module}", services=services)))
        bare.append(_run(PROBE.format(imports="", services=services)))
    h, b = statistics.median(handler), statistics.median(bare)
    return {"handler_s": round(h, 3), "boto3_s": round(b, 3), "ratio": round(h / b, 2)}


# Each handler and the clients it creates (its PERMISSIONS' services; every one has the
# runner's dynamodb client for its claim and outbox).
HANDLERS: dict[str, list[str]] = {
    "website_health_check.app": ["ssm", "dynamodb", "sns"],
    "owner_tagger.app": ["ec2", "dynamodb", "sns"],
    "patch_sweeper.app": ["ec2", "ssm", "dynamodb", "sns"],
    "snapshot_rotator.app": ["ec2", "dynamodb", "sns"],
    "idle_stopper.app": ["ec2", "cloudwatch", "dynamodb", "sns"],
}


def _zipped_size(folder: Path) -> int:
    """Bytes of ``folder`` as a deflated zip (what Lambda stores), without __pycache__."""
    with tempfile.TemporaryFile() as raw:
        with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(folder.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    archive.write(path, path.relative_to(folder))
        return raw.tell()


def package_sizes() -> dict[str, int] | str:
    """``sam build`` into a temporary folder; the zipped size of each built artifact (the
    functions and the layer), or the reason it could not be built."""
    sam = Path(sys.executable).parent / "sam"
    build = Path(tempfile.mkdtemp(prefix="ops-autopilot-bench-build-"))
    try:
        done = subprocess.run(
            [str(sam), "build", "--build-dir", str(build), "--cached", "--cache-dir", str(build / ".cache")],
            cwd=ROOT,
            check=False,
            env={**os.environ, "SAM_CLI_TELEMETRY": "0"},
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            return f"sam build failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}"
        return {
            artifact.name: _zipped_size(artifact)
            for artifact in sorted(build.iterdir())
            if artifact.is_dir() and not artifact.name.startswith(".")
        }
    finally:
        shutil.rmtree(build, ignore_errors=True)


if __name__ == "__main__":
    print(measure(sys.argv[1], sys.argv[2:]))
