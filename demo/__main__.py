"""Run every demo scenario (demo/scenarios/<automation>.py) against one local sandbox.

python -m demo                    # all automations
python -m demo owner_tagger       # just one
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import sys

from moto.server import ThreadedMotoServer

from demo import scenarios
from demo.sandbox import REGION, Sandbox, heading


def main(argv: list[str]) -> int:
    # Fake credentials and a local endpoint: nothing here can reach or sign for real AWS.
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "demo",
            "AWS_SECRET_ACCESS_KEY": "demo",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "POWERTOOLS_METRICS_NAMESPACE": "OpsAutopilot",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
            "POWERTOOLS_METRICS_DISABLED": "true",
        }
    )
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    wanted = set(argv)
    names = [m.name for m in pkgutil.iter_modules(scenarios.__path__)]
    unknown = wanted - set(names)
    if unknown:
        print(f"unknown automation(s): {', '.join(sorted(unknown))}; known: {', '.join(names)}")
        return 2
    try:
        print(f"ops-autopilot demo: local sandbox account at {endpoint} (moto), region {REGION}.")
        print("Real handlers, real sample events from events/, fake credentials; no AWS account is touched.")
        for name in names:
            if wanted and name not in wanted:
                continue
            module = importlib.import_module(f"demo.scenarios.{name}")
            heading(f"{name}: {module.TITLE}")
            module.run(Sandbox(endpoint))
        print("\nDemo finished.")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
