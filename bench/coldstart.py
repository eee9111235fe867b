"""Cold start: import of a handler module plus creation of the clients it uses, in a fresh
process, as a ratio to a bare `import boto3` plus the same clients. Median of several runs."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
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


if __name__ == "__main__":
    print(measure(sys.argv[1], sys.argv[2:]))
