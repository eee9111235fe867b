"""One realistic moto scenario per automation: set up a small fleet, run the real handler on
its real sample event, and check that all of the work got done.

    scenario = build("idle_stopper", ctx)
    scenario.invoke()        # one complete run (patch_sweeper: the sweep and its command events)
    scenario.verify()        # every resource ended up as it should

Used by the fault-injection and idempotency tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends

from conftest import EVENTS, REGION, at_clock

AMI = "ami-12c6146b"
ROOT = Path(__file__).resolve().parent.parent.parent
# Every automation under functions/: a new one is covered by every reliability suite, no edit.
NAMES = tuple(sorted(p.parent.name for p in (ROOT / "functions").glob("*/app.py")))


def event(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return at_clock(data)


def ec2() -> Any:
    return boto3.client("ec2", region_name=REGION)


def backend() -> Any:
    return ec2_backends[DEFAULT_ACCOUNT_ID][REGION]


def tags_of(resource_id: str) -> dict[str, str]:
    found = ec2().describe_tags(Filters=[{"Name": "resource-id", "Values": [resource_id]}])["Tags"]
    return {t["Key"]: t["Value"] for t in found}


def launch(count: int, tags: dict[str, str] | None = None, age: timedelta | None = None) -> list[str]:
    kwargs: dict[str, Any] = {
        "ImageId": AMI,
        "MinCount": count,
        "MaxCount": count,
        "InstanceType": "t3.micro",
    }
    kwargs["Placement"] = {"AvailabilityZone": f"{REGION}a"}
    if tags:
        kwargs["TagSpecifications"] = [
            {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
        ]
    ids = [str(i["InstanceId"]) for i in ec2().run_instances(**kwargs)["Instances"]]
    if age is not None:
        for instance_id in ids:
            backend().get_instance(instance_id).launch_time = (datetime.now(UTC) - age).replace(tzinfo=None)
    return ids


@dataclass
class Scenario:
    name: str
    invoke: Callable[[], dict[str, Any]]
    verify: Callable[[], None]
    resources: list[str] = field(default_factory=list)  # the ids the work is about
    fakes: dict[tuple[str, str], Callable[[dict[str, Any]], dict[str, Any]]] = field(default_factory=dict)
    mails: Callable[[], list[dict[str, Any]]] = lambda: []
    expected_mails: int = 0  # mails of one complete run (a second run adds none)
    extra: dict[str, Any] = field(default_factory=dict)
    # Checks after two concurrent deliveries of the same event, beyond "the work was done once
    # and mailed once": e.g. "one SendCommand". Gets the recorded calls and the mails.
    check_concurrent: Callable[[Any, list[dict[str, Any]]], None] = lambda calls, mails: None


@dataclass
class Ctx:
    monkeypatch: pytest.MonkeyPatch
    mailbox: Callable[[], list[dict[str, Any]]]
    tmp_path: Path
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def env(self, **values: str) -> None:
        for key, value in values.items():
            self.monkeypatch.setenv(key, value)


def module(name: str) -> Any:
    """tests/<name>/scenario.py, loaded by path (``<name>`` itself is the function package)."""
    import importlib.util
    import sys

    key = f"scenario_{name}"
    if key not in sys.modules:
        path = ROOT / "tests" / name / "scenario.py"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: every automation needs a reliability scenario")
        spec = importlib.util.spec_from_file_location(key, path)
        assert spec and spec.loader
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[key] = loaded
        spec.loader.exec_module(loaded)
    return sys.modules[key]


class _Builders(dict[str, Callable[[Ctx], Scenario]]):
    def __missing__(self, name: str) -> Callable[[Ctx], Scenario]:
        builder: Callable[[Ctx], Scenario] = module(name).scenario
        self[name] = builder
        return builder


BUILDERS: dict[str, Callable[[Ctx], Scenario]] = _Builders()


@pytest.fixture
def ctx(
    stack_env: dict[str, str],
    mailbox: Callable[[], list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Any:
    context = Ctx(monkeypatch, mailbox, tmp_path)
    yield context
    for cleanup in context.cleanups:
        cleanup()
