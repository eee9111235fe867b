"""patch_sweeper in the sandbox: a small fleet, a dry run, a real sweep, SSM's status events, one digest.

moto (the sandbox) runs EC2, DynamoDB, SNS, CloudWatch Logs and SSM SendCommand for real, but
it does not implement DescribeInstanceInformation, ListCommandInvocations or
DescribeInstancePatchStates, and it has no SSM Agent that would run AWS-RunPatchBaseline. Those
parts are SIMULATED below by answering exactly those calls on the function's SSM client (the
way botocore's Stubber does), and every simulated answer is labelled as such in the output.
"""

from __future__ import annotations

import copy
import importlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.awsrequest import AWSResponse

from autopilot import aws
from autopilot.recorder import CallRecorder
from demo.sandbox import LambdaContext, Sandbox, sample_event, step

TITLE = "weekly SSM patch sweep: who can be patched, the commands sent, one digest per sweep"
TABLE = "ops-autopilot-demo-patch-sweeper-state"
OUTBOX = "ops-autopilot-demo-outbox"  # the stack's OutboxTable (the runner's claims and mails)
LOG_GROUP = "/ops-autopilot-demo/patch-sweeper/commands"
SIMULATED = (
    "DescribeInstanceInformation",
    "ListCommandInvocations",
    "GetCommandInvocation",
    "DescribeInstancePatchStates",
)

# name -> (managed by SSM?, ping status, tags, simulated patch result)
FLEET: dict[str, tuple[bool, str, dict[str, str], str]] = {
    "web-1": (True, "Online", {"Owner": "web-team@example.com"}, "ok"),
    "web-2": (True, "Online", {"Owner": "web-team@example.com"}, "pending-reboot"),
    "db-1": (True, "Online", {"Owner": "dba@example.com"}, "fail"),
    "cache-1": (True, "Online", {"Owner": "web-team@example.com"}, "ok"),
    "payments-legacy": (True, "Online", {"Owner": "pay@example.com", "AutoPatch": "false"}, "ok"),
    "ftp-old": (False, "", {"Owner": "it@example.com"}, ""),
    "batch-worker": (True, "ConnectionLost", {}, ""),
}

FAILED_OUTPUT = (
    "Loaded plugins: extras_suggestions, langpacks, priorities, update-motd\n"
    "Resolving dependencies for 7 security updates\n"
    "Installing: openssl-libs-3.0.8-1.amzn2023.0.18.x86_64\n"
)
FAILED_ERROR = (
    "error: rpmdb: BDB0113 Thread/process 2731/139853 failed: BDB1507 Thread died in Berkeley DB library\n"
    "error: cannot open Packages index using db5 - (-30973)\n"
    "Error: rpmdb open failed\n"
)


class SimulatedSSM:
    """Answers the SSM calls moto lacks, from the seeded fleet and its simulated patch results."""

    def __init__(self, sb: Sandbox, ids: dict[str, str]) -> None:
        self.sb = sb
        self.names = {v: k for k, v in ids.items()}
        self.served: list[str] = []
        self.sent: dict[str, list[str]] = {}  # command id -> the instance ids the function sent
        self._sends: list[dict[str, Any]] = []
        self.overrides: dict[str, str] = {}  # name -> simulated result, for a later week
        self._reported = 0  # sends already returned by commands()

    def attach(self, ssm_client: Any) -> None:
        handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "DescribeInstanceInformation": self.describe_instance_information,
            "ListCommandInvocations": self.list_command_invocations,
            "GetCommandInvocation": self.get_command_invocation,
            "DescribeInstancePatchStates": self.describe_instance_patch_states,
        }
        for operation, answer in handlers.items():
            ssm_client.meta.events.register(f"before-call.ssm.{operation}", self._handler(operation, answer))
        ssm_client.meta.events.register_first("provide-client-params.ssm.*", self._remember)

    def _remember(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self._params = copy.deepcopy(params)
        if model.name == "SendCommand":
            self._sends.append(self._params)

    def commands(self) -> list[dict[str, Any]]:
        """The commands as the function sent them (moto's own record of SendCommand lists every
        instance of the account when Targets is empty, so its InstanceIds are not used)."""
        by_comment = {c["Comment"]: c for c in self.sb.client("ssm").list_commands()["Commands"]}  # real
        result = []
        for params in self._sends[self._reported :]:
            command = {**by_comment[params["Comment"]], **params}
            self.sent[command["CommandId"]] = params["InstanceIds"]
            result.append(command)
        self._reported = len(self._sends)
        return result

    def _handler(
        self, operation: str, answer: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> Callable[..., Any]:
        def handle(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
            self.served.append(operation)
            return AWSResponse("https://ssm.simulated", 200, {}, None), answer(self._params)

        return handle

    def result(self, instance_id: str) -> str:
        name = self.names[instance_id]
        return self.overrides.get(name, FLEET[name][3])

    def describe_instance_information(self, _params: dict[str, Any]) -> dict[str, Any]:
        nodes = [
            {
                "InstanceId": i,
                "PingStatus": FLEET[n][1],
                "PlatformName": "Amazon Linux",
                "AgentVersion": "3.3.987.0",
                "ResourceType": "EC2Instance",
            }
            for i, n in self.names.items()
            if FLEET[n][0]
        ]
        return {"InstanceInformationList": nodes}

    def list_command_invocations(self, params: dict[str, Any]) -> dict[str, Any]:
        invocations = []
        for instance_id in self.sent[params["CommandId"]]:
            failed = self.result(instance_id) == "fail"
            status = "Failed" if failed else "Success"
            invocations.append(
                {
                    "CommandId": params["CommandId"],
                    "InstanceId": instance_id,
                    "DocumentName": "AWS-RunPatchBaseline",
                    "Status": status,
                    "StatusDetails": status,
                    "CommandPlugins": [
                        {
                            "Name": "PatchWindows",
                            "Status": "Success",
                            "ResponseCode": 0,
                            "Output": "Step execution skipped due to unsatisfied preconditions.",
                        },
                        {"Name": "PatchLinux", "Status": status, "ResponseCode": 1 if failed else 0},
                    ],
                }
            )
        return {"CommandInvocations": invocations}

    def get_command_invocation(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "CommandId": params["CommandId"],
            "InstanceId": params["InstanceId"],
            "PluginName": params.get("PluginName", ""),
            "Status": "Failed",
            "StandardOutputContent": FAILED_OUTPUT,
            "StandardErrorContent": FAILED_ERROR,
        }

    def describe_instance_patch_states(self, params: dict[str, Any]) -> dict[str, Any]:
        states = []
        for instance_id in params["InstanceIds"]:
            result = self.result(instance_id)
            states.append(
                {
                    "InstanceId": instance_id,
                    "PatchGroup": "default",
                    "BaselineId": "pb-0e8a2f3c4d5b6a7c8",
                    "Operation": "Install",
                    "OperationStartTime": "2026-11-22T03:01:00Z",
                    "OperationEndTime": "2026-11-22T03:09:00Z",
                    "InstalledCount": 212,
                    "InstalledPendingRebootCount": 3 if result == "pending-reboot" else 0,
                    "MissingCount": 7 if result == "fail" else 0,
                    "FailedCount": 1 if result == "fail" else 0,
                    "CriticalNonCompliantCount": 2 if result == "fail" else 0,
                    "SecurityNonCompliantCount": 7 if result == "fail" else 0,
                }
            )
        return {"InstancePatchStates": states}


def invoke(sb: Sandbox, sim: SimulatedSSM, event: dict[str, Any], env: dict[str, str]) -> Any:
    """demo.sandbox.Sandbox.invoke, plus the simulated SSM calls on the function's own client."""
    with sb.environment({"POWERTOOLS_SERVICE_NAME": "patch_sweeper", **env}):
        aws.reset_clients()
        sim.attach(aws.client("ssm"))
        module = importlib.reload(importlib.import_module("patch_sweeper.app"))
        return module.lambda_handler(event, LambdaContext())


def forged_trigger(sb: Sandbox, sim: SimulatedSSM, schedule: dict[str, Any], env: dict[str, str]) -> None:
    """A well-formed scheduled event, dated now, handed to the function by someone while its
    weekly schedule last fired six hours ago: refused, no call."""
    six_hours_ago = datetime.now(UTC) - timedelta(hours=6)
    weekly = f"cron({six_hours_ago.minute} {six_hours_ago.hour} ? * {six_hours_ago.strftime('%a').upper()} *)"
    step(f"Someone invokes the sweeper with a scheduled event of their own; its schedule is {weekly}")
    with CallRecorder() as calls:
        result = invoke(sb, sim, {**schedule, "id": str(uuid.uuid4())}, {**env, "SCHEDULE": weekly})
    print(f"   handler returned {result}")
    print_calls(calls)


def deliver_finals(
    sb: Sandbox, sim: SimulatedSSM, commands: list[dict[str, Any]], env: dict[str, str]
) -> Any:
    """SIMULATED agent: each command ends; SSM's EC2 Command Status-change Notification arrives."""
    template = sample_event("patch_sweeper/ssm.command_status.success")
    event: dict[str, Any] = {}
    for command in commands:
        failed = any(sim.result(i) == "fail" for i in command["InstanceIds"])
        event = copy.deepcopy(template)
        event["id"] = str(uuid.uuid4())  # every status event is an event of its own
        event["detail"]["command-id"] = command["CommandId"]
        event["detail"]["status"] = "Failed" if failed else "Success"
        event["detail"]["parameters"] = command["Parameters"]
        event["resources"] = [
            f"arn:aws:ec2:{sb.region}:123456789012:instance/{i}" for i in command["InstanceIds"]
        ]
        with CallRecorder() as calls:
            result = invoke(sb, sim, event, env)
        names = ", ".join(sorted(sim.names[i] for i in command["InstanceIds"]))
        print(f"   {names}: status={event['detail']['status']} -> handler returned {result}")
        print_calls(calls)
        sb.print_mails()
    return event


def tick(sb: Sandbox, sim: SimulatedSSM, env: dict[str, str]) -> list[dict[str, Any]]:
    """The hourly tick (its own event, every hour); returns the commands it sent."""
    event = {**sample_event("patch_sweeper/eventbridge.hourly_tick"), "id": str(uuid.uuid4())}
    with CallRecorder() as calls:
        result = invoke(sb, sim, event, env)
    print(f"   tick -> handler returned {result}")
    print_calls(calls)
    sb.print_mails()
    commands = sim.commands()
    show_sent(sim, commands)
    return commands


def show_sent(sim: SimulatedSSM, commands: list[dict[str, Any]]) -> None:
    for command in commands:
        names = ", ".join(sorted(sim.names[i] for i in command["InstanceIds"]))
        print(f"   sent {command['Comment']!r}: {names}")


RINGS = {"web-1": "0", "cache-1": "1", "web-2": "2"}  # db-1 untagged: the last ring (2)


def rings(sb: Sandbox, sim: SimulatedSSM, ids: dict[str, str], env: dict[str, str]) -> None:
    """Next weeks: the fleet tagged PatchRing, a 3-ring sweep, then a week whose canary fails."""
    ec2 = sb.client("ec2")
    for name, ring in RINGS.items():
        ec2.create_tags(Resources=[ids[name]], Tags=[{"Key": "PatchRing", "Value": ring}])
    tagged = ", ".join(f"{n}: PatchRing={r}" for n, r in RINGS.items())
    step(f"A week later, the fleet has rings ({tagged}; db-1 untagged, so the last ring): ring 0 first")
    print(
        "   (the demo soaks 0 hours - PatchSweeperRingSoakHours, default 24: each tick starts the next ring)"
    )
    ring_env = {**env, "PATCH_RING_SOAK_HOURS": "0"}
    with CallRecorder() as calls:
        result = invoke(sb, sim, {**sample_event("patch_sweeper/eventbridge.weekly_schedule"),
                                  "id": str(uuid.uuid4())}, ring_env)  # fmt: skip
    print(f"   handler returned {result}")
    print_calls(calls)
    commands = sim.commands()
    show_sent(sim, commands)
    sb.print_mails()
    for ring in (0, 1, 2):
        step(f"Ring {ring}'s commands end (SIMULATED agent)")
        deliver_finals(sb, sim, commands, ring_env)
        if ring < 2:
            step(f"The hourly tick after ring {ring} passed and soaked: ring {ring + 1} starts")
            commands = tick(sb, sim, ring_env)

    sim.overrides["web-1"] = "fail"
    step("Another week: the canary (ring 0, web-1) fails this time")
    invoke(sb, sim, {**sample_event("patch_sweeper/eventbridge.weekly_schedule"), "id": str(uuid.uuid4())},
           ring_env)  # fmt: skip
    deliver_finals(sb, sim, sim.commands(), ring_env)
    step("The hourly ticks after it: the halted sweep sends nothing to rings 1 and 2")
    tick(sb, sim, ring_env)


def seed(sb: Sandbox) -> dict[str, str]:
    ec2 = sb.client("ec2")
    ids: dict[str, str] = {}
    for name, (_managed, _ping, tags, _result) in FLEET.items():
        all_tags = [{"Key": "Name", "Value": name}] + [{"Key": k, "Value": v} for k, v in tags.items()]
        reply = ec2.run_instances(
            ImageId="ami-760aaa0f",
            MinCount=1,
            MaxCount=1,
            InstanceType="t3.small",
            TagSpecifications=[{"ResourceType": "instance", "Tags": all_tags}],
        )
        ids[name] = reply["Instances"][0]["InstanceId"]
    stopped = ec2.run_instances(
        ImageId="ami-760aaa0f",
        MinCount=1,
        MaxCount=1,
        InstanceType="t3.small",
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "old-build-box"}]}],
    )["Instances"][0]["InstanceId"]
    ec2.stop_instances(InstanceIds=[stopped])
    dynamodb = sb.client("dynamodb")
    dynamodb.create_table(
        TableName=TABLE,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.create_table(
        TableName=OUTBOX,
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        BillingMode="PAY_PER_REQUEST",
    )
    sb.client("logs").create_log_group(logGroupName=LOG_GROUP)
    return ids


def print_calls(recorder: CallRecorder) -> None:
    for operation, count in sorted(recorder.by_operation().items()):
        label = "  <- SIMULATED (moto lacks it)" if operation.split(".")[1] in SIMULATED else ""
        print(f"     {operation:40} {count}{label}")


def run(sb: Sandbox) -> None:
    ids = seed(sb)
    print("Fleet (moto EC2): " + ", ".join(f"{n}={i}" for n, i in ids.items()) + ", old-build-box (stopped)")
    print(
        "SSM view (SIMULATED DescribeInstanceInformation): "
        + ", ".join(f"{n}={FLEET[n][1]}" for n in FLEET if FLEET[n][0])
        + "; ftp-old has no SSM agent/role"
    )
    sim = SimulatedSSM(sb, ids)
    env = {
        **sb.base_env(),
        "OWNER_TAG_KEY": "Owner",  # template Globals
        "OUTBOX_TABLE": OUTBOX,  # template Globals
        "PATCH_OPERATION": "Install",
        "PATCH_REBOOT_OPTION": "NoReboot",
        "PATCH_MAX_CONCURRENCY": "20%",
        "PATCH_MAX_ERRORS": "10%",
        "OUTPUT_LOG_GROUP": LOG_GROUP,
        "STATE_TABLE": TABLE,
        # The function's own schedule (template: PatchSweeperSchedule). The sandbox's names every
        # minute, so the sample event, dated now, is on time.
        "SCHEDULE": "cron(* * * * ? *)",
    }
    schedule = sample_event("patch_sweeper/eventbridge.weekly_schedule")
    forged_trigger(sb, sim, schedule, env)

    step("Dry run (DRY_RUN=true): the weekly schedule fires; targets and not-patchable list, no command")
    dry_schedule = {**schedule, "id": str(uuid.uuid4())}  # another week's event
    with CallRecorder() as calls:
        result = invoke(sb, sim, dry_schedule, {**env, "DRY_RUN": "true"})
    print(f"   handler returned {result}")
    print_calls(calls)
    sb.print_mails()

    step("Real sweep (DRY_RUN=false): the same scheduled event")
    with CallRecorder() as calls:
        result = invoke(sb, sim, schedule, env)
    print(f"   handler returned {result}")
    print_calls(calls)
    commands = sim.commands()  # sent to moto's SendCommand (real); ids from moto's ListCommands
    for command in commands:
        names = sorted(sim.names[i] for i in command["InstanceIds"])
        print(f"   command {command['CommandId']} {command['DocumentName']} comment={command['Comment']!r}")
        print(f"     instances: {', '.join(names)}")
        print(
            f"     parameters: {command['Parameters']}  MaxConcurrency={command['MaxConcurrency']} "
            f"MaxErrors={command['MaxErrors']}"
        )
    sb.print_mails()

    step("The same scheduled event delivered again (same event id): the runner's claim, nothing sent twice")
    result = invoke(sb, sim, schedule, env)
    print(f"   handler returned {result}")

    step("SIMULATED agent: each command ends; SSM's EC2 Command Status-change Notification arrives")
    event = deliver_finals(sb, sim, commands, env)

    step("A duplicate of the last status event (same event id): no second digest")
    result = invoke(sb, sim, event, env)
    print(f"   handler returned {result}")
    sb.print_mails()

    step("Someone else's AWS-RunShellScript command finishing: ignored with one log line")
    other = sample_event("patch_sweeper/ssm.command_status.other_document")
    print(f"   handler returned {invoke(sb, sim, other, env)}")

    rings(sb, sim, ids, env)
