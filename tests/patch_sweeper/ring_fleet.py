"""A fake Systems Manager for multi-invocation sweeps (rings): the real handler, moto's EC2,
DynamoDB and SNS, and SSM answered from this in-memory fleet (moto has no patch results).
Each command's instances succeed unless named in ``failing`` or ``silent`` (still InProgress:
their command never reports). The clock is the test's: ``fleet.at(...)`` moves it, and every
event the fleet delivers carries the clock's time (the runner refuses others)."""

from __future__ import annotations

import copy
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from autopilot import runner
from reliability.faults import FaultInjector

EVENTS = Path(__file__).resolve().parents[2] / "events" / "patch_sweeper"


def _event(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return data


@dataclass
class Fleet:
    online: list[str]
    now: datetime
    commands: dict[str, list[str]] = field(default_factory=dict)  # command id -> instance ids
    comments: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)
    silent: set[str] = field(default_factory=set)
    calendar: str = "OPEN"
    reported: set[str] = field(default_factory=set)  # commands whose final status was delivered

    # -- SSM, faked --------------------------------------------------------------------------
    def fakes(self) -> dict[tuple[str, str], Any]:
        return {
            ("ssm", "DescribeInstanceInformation"): self._information,
            ("ssm", "SendCommand"): self._send,
            ("ssm", "ListCommandInvocations"): self._invocations,
            ("ssm", "GetCommandInvocation"): lambda _: {"StandardOutputContent": "E: dpkg was interrupted"},
            ("ssm", "DescribeInstancePatchStates"): self._patch_states,
            ("ssm", "GetCalendarState"): lambda _: {"State": self.calendar, "AtTime": self.now.isoformat()},
        }

    def _information(self, _: dict[str, Any]) -> dict[str, Any]:
        nodes = [
            {
                "InstanceId": i,
                "PingStatus": "Online",
                "PlatformName": "Amazon Linux",
                "ResourceType": "EC2Instance",
            }
            for i in self.online
        ]
        return {"InstanceInformationList": nodes}

    def _send(self, params: dict[str, Any]) -> dict[str, Any]:
        command_id = str(uuid.uuid4())
        self.commands[command_id] = list(params["InstanceIds"])
        self.comments[command_id] = str(params.get("Comment", ""))
        self.parameters[command_id] = params["Parameters"]
        return {
            "Command": {"CommandId": command_id, "DocumentName": "AWS-RunPatchBaseline", "Status": "Pending"}
        }

    def _status(self, instance_id: str) -> str:
        if instance_id in self.silent:
            return "InProgress"
        return "Failed" if instance_id in self.failing else "Success"

    def _invocations(self, params: dict[str, Any]) -> dict[str, Any]:
        rows = []
        for i in self.commands.get(params["CommandId"], []):
            status = self._status(i)
            plugin = {"Name": "PatchLinux", "Status": status, "StatusDetails": status, "ResponseCode": 0}
            if status == "Failed":
                plugin["ResponseCode"] = 1
            rows.append(
                {
                    "CommandId": params["CommandId"],
                    "InstanceId": i,
                    "Status": status,
                    "StatusDetails": status,
                    "CommandPlugins": [plugin],
                }
            )
        return {"CommandInvocations": rows}

    def _patch_states(self, params: dict[str, Any]) -> dict[str, Any]:
        state = {"InstalledCount": 4, "MissingCount": 0, "FailedCount": 0, "Operation": "Install"}
        extra = {"PatchGroup": "", "BaselineId": "pb-0", "OperationStartTime": 0, "OperationEndTime": 0}
        return {"InstancePatchStates": [{"InstanceId": i, **state, **extra} for i in params["InstanceIds"]]}

    # -- time and events -------------------------------------------------------------------
    def at(self, when: datetime) -> None:
        self.now = when

    def later(self, **delta: float) -> None:
        self.now = self.now + timedelta(**delta)

    def _stamped(self, event: dict[str, Any]) -> dict[str, Any]:
        event["time"] = self.now.strftime("%Y-%m-%dT%H:%M:%SZ")
        return event

    def schedule(self) -> dict[str, Any]:
        return self._stamped(_event("eventbridge.weekly_schedule"))

    def tick(self) -> dict[str, Any]:
        event = self._stamped(_event("eventbridge.hourly_tick"))
        event["id"] = str(uuid.uuid4())  # every tick its own event
        return event

    def finals(self) -> list[dict[str, Any]]:
        """SSM's final-status event of every sent command that ended and was not reported yet."""
        template = _event("ssm.command_status.success")
        events = []
        for command_id, instances in self.commands.items():
            if command_id in self.reported or any(i in self.silent for i in instances):
                continue
            self.reported.add(command_id)
            event = self._stamped(copy.deepcopy(template))
            event["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"ssm-status/{command_id}"))
            event["detail"]["command-id"] = command_id
            event["detail"]["status"] = "Failed" if any(i in self.failing for i in instances) else "Success"
            event["detail"]["parameters"] = self.parameters[command_id]
            event["resources"] = [f"arn:aws:ec2:eu-west-1:123456789012:instance/{i}" for i in instances]
            events.append(event)
        return events

    def patched(self) -> list[str]:
        """Every instance a command was sent to, as often as it was sent."""
        return sorted(i for ids in self.commands.values() for i in ids)


def install(monkeypatch: pytest.MonkeyPatch, fleet: Fleet) -> Fleet:
    FaultInjector(fakes=fleet.fakes()).install(monkeypatch)
    monkeypatch.setattr(runner, "clock", lambda: fleet.now)
    return fleet
