"""Every EC2 and SSM call: gather the fleet, send the patch commands, read their results.

Every call goes through ``autopilot.aws.client`` (shared retry config, call recorder), pages
with paginators and batches at the API maximum. Nothing here decides anything. Calls per
sweep of N targets in B = ceil(N / 50) commands:

- gather: ec2:DescribeInstances ceil(N / 1000) pages, ssm:DescribeInstanceInformation
  ceil(N / 50) pages;
- send: ssm:SendCommand B; a resumed sweep first ssm:ListCommands ceil(C / 50) pages (the
  account's C patch commands since the sweep started) to find batches already sent;
- results: ssm:ListCommandInvocations B (50 per page), ssm:GetCommandInvocation 1 per failed
  instance (at most 50), ssm:DescribeInstancePatchStates B (50 ids per call),
  ec2:DescribeInstances 1 per 200 listed instances (Name and owner of at most 150).

The sweep table's calls are store.py's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from autopilot import aws
from autopilot.aws import error_code
from autopilot.tags import as_dict
from patch_sweeper.decide import (
    MAX_INSTANCES_PER_COMMAND,
    Instance,
    Invocation,
    ManagedNode,
    PatchState,
    PluginResult,
    SweepRecord,
    tail,
)
from patch_sweeper.event import DOCUMENT, FINAL_STATUSES

DESCRIBE_INSTANCES_PAGE = 1000  # DescribeInstances MaxResults maximum
INSTANCE_INFORMATION_PAGE = 50  # DescribeInstanceInformation MaxResults maximum
INVOCATIONS_PAGE = 50  # ListCommandInvocations MaxResults maximum
LIST_COMMANDS_PAGE = 50  # ListCommands MaxResults maximum
PATCH_STATES_IDS = 50  # DescribeInstancePatchStates InstanceIds maximum
FILTER_VALUES = 200  # values per EC2 filter
COMMAND_TIMEOUT_SECONDS = 14400  # how long an instance may wait for its turn (MaxConcurrency waves)
MAX_OUTPUT_TAILS = 50  # GetCommandInvocation calls per digest (the mail lists 50 failures)


# -- the fleet --------------------------------------------------------------------------------


def running_instances() -> list[Instance]:
    return [_instance(raw) for raw in aws.running_instances(DESCRIBE_INSTANCES_PAGE)]


def instances_by_id(instance_ids: Iterable[str]) -> dict[str, Instance]:
    """Name and tags of specific instances (any state), for the digest; unknown ids are absent."""
    ec2 = aws.client("ec2")
    result: dict[str, Instance] = {}
    for batch in aws.chunked(sorted(set(instance_ids)), FILTER_VALUES):
        for raw in aws.paginate(
            ec2,
            "describe_instances",
            "Reservations[].Instances[]",
            Filters=[{"Name": "instance-id", "Values": batch}],
        ):
            instance = _instance(raw)
            result[instance.id] = instance
    return result


def _instance(raw: dict[str, Any]) -> Instance:
    return Instance(
        id=raw["InstanceId"],
        state=raw.get("State", {}).get("Name", ""),
        tags=as_dict(raw.get("Tags")),
        platform=raw.get("PlatformDetails", raw.get("Platform", "Linux/UNIX")),
    )


def managed_nodes() -> list[ManagedNode]:
    """Every EC2 instance SSM knows, with its ping status (any status, so we can say why not)."""
    ssm = aws.client("ssm")
    found = aws.paginate(
        ssm,
        "describe_instance_information",
        "InstanceInformationList[]",
        Filters=[{"Key": "ResourceType", "Values": ["EC2Instance"]}],
        PaginationConfig={"PageSize": INSTANCE_INFORMATION_PAGE},
    )
    return [
        ManagedNode(
            instance_id=raw["InstanceId"],
            ping_status=raw.get("PingStatus", ""),
            agent_version=raw.get("AgentVersion", ""),
            platform=raw.get("PlatformName", ""),
            last_ping=_iso(raw.get("LastPingDateTime")),
        )
        for raw in found
    ]


def _iso(value: Any) -> str:
    if value is None:
        return ""
    return value.strftime("%Y-%m-%d %H:%M UTC") if hasattr(value, "strftime") else str(value)


# -- the commands -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommandRequest:
    instance_ids: Sequence[str]
    operation: str
    reboot_option: str
    snapshot_id: str
    comment: str
    max_concurrency: str
    max_errors: str
    log_group: str


def send_patch_command(request: CommandRequest) -> str:
    """One SendCommand for at most 50 instances; returns the command id. ClientError propagates."""
    if not 1 <= len(request.instance_ids) <= MAX_INSTANCES_PER_COMMAND:
        raise ValueError(f"a command takes 1..{MAX_INSTANCES_PER_COMMAND} instances")
    response = aws.client("ssm").send_command(
        InstanceIds=list(request.instance_ids),
        DocumentName=DOCUMENT,
        Comment=request.comment[:100],
        Parameters={
            "Operation": [request.operation],
            "RebootOption": [request.reboot_option],
            "SnapshotId": [request.snapshot_id],
        },
        TimeoutSeconds=COMMAND_TIMEOUT_SECONDS,
        MaxConcurrency=request.max_concurrency,
        MaxErrors=request.max_errors,
        CloudWatchOutputConfig={
            "CloudWatchLogGroupName": request.log_group,
            "CloudWatchOutputEnabled": True,
        },
    )
    return str(response["Command"]["CommandId"])


def sent_commands(sweep_id: str, since: datetime) -> list[tuple[str, frozenset[str]]]:
    """(command id, instance ids) of every AWS-RunPatchBaseline command of this sweep (its
    SnapshotId parameter) invoked since ``since``: ceil(C / 50) ListCommands for the C patch
    commands of the account in that time. SendCommand has no idempotency token, so this is how
    a resumed sweep finds a batch that was sent just before the run died, before it was
    recorded, and does not send (and reboot) it again."""
    filters = [
        {"key": "DocumentName", "value": DOCUMENT},
        {"key": "InvokedAfter", "value": since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")},
    ]
    found: list[tuple[str, frozenset[str]]] = []
    for command in aws.paginate(
        aws.client("ssm"),
        "list_commands",
        "Commands[]",
        Filters=filters,
        PaginationConfig={"PageSize": LIST_COMMANDS_PAGE},
    ):
        if command.get("DocumentName") != DOCUMENT:
            continue
        if command.get("Parameters", {}).get("SnapshotId") != [sweep_id]:
            continue
        found.append((str(command["CommandId"]), frozenset(command.get("InstanceIds", []))))
    return found


def is_sweep_command(command_id: str, sweep_id: str) -> bool:
    """True when SSM has this command as an AWS-RunPatchBaseline of this sweep (its SnapshotId)
    in a final status (1 ListCommands)."""
    try:
        found = aws.client("ssm").list_commands(CommandId=command_id).get("Commands", [])
    except ClientError as err:
        if error_code(err) == "InvalidCommandId":
            return False
        raise
    return any(
        c.get("DocumentName") == DOCUMENT
        and c.get("Parameters", {}).get("SnapshotId") == [sweep_id]
        and c.get("Status") in FINAL_STATUSES
        for c in found
    )


# -- the results ----------------------------------------------------------------------------------


def invocations(command_id: str) -> Iterator[Invocation]:
    ssm = aws.client("ssm")
    for raw in aws.paginate(
        ssm,
        "list_command_invocations",
        "CommandInvocations[]",
        CommandId=command_id,
        Details=True,
        PaginationConfig={"PageSize": INVOCATIONS_PAGE},
    ):
        yield Invocation(
            command_id=command_id,
            instance_id=raw["InstanceId"],
            status=raw.get("Status", ""),
            status_details=raw.get("StatusDetails", ""),
            plugins=tuple(
                PluginResult(
                    name=p.get("Name", ""),
                    status=p.get("Status", ""),
                    status_details=p.get("StatusDetails", ""),
                    response_code=int(p.get("ResponseCode", 0)),
                )
                for p in raw.get("CommandPlugins", [])
            ),
        )


def output_tail(command_id: str, instance_id: str, plugin: str | None) -> str:
    """The end of a step's output (GetCommandInvocation keeps up to 24,000 characters)."""
    kwargs: dict[str, Any] = {"CommandId": command_id, "InstanceId": instance_id}
    if plugin:
        kwargs["PluginName"] = plugin
    response = aws.client("ssm").get_command_invocation(**kwargs)
    return tail(response.get("StandardOutputContent", ""), response.get("StandardErrorContent", ""))


def patch_states(instance_ids: Sequence[str]) -> list[PatchState]:
    ssm = aws.client("ssm")
    states: list[PatchState] = []
    for batch in aws.chunked(dict.fromkeys(instance_ids), PATCH_STATES_IDS):
        for raw in aws.paginate(
            ssm, "describe_instance_patch_states", "InstancePatchStates[]", InstanceIds=batch
        ):
            states.append(
                PatchState(
                    instance_id=raw["InstanceId"],
                    installed=int(raw.get("InstalledCount", 0)),
                    installed_pending_reboot=int(raw.get("InstalledPendingRebootCount", 0)),
                    missing=int(raw.get("MissingCount", 0)),
                    failed=int(raw.get("FailedCount", 0)),
                    not_applicable=int(raw.get("NotApplicableCount", 0)),
                    critical_non_compliant=int(raw.get("CriticalNonCompliantCount", 0)),
                    security_non_compliant=int(raw.get("SecurityNonCompliantCount", 0)),
                    operation=raw.get("Operation", ""),
                )
            )
    return states


@dataclass
class Results:
    """Everything SSM says about a finished sweep; what could not be read is in ``errors``."""

    invocations: list[Invocation] = field(default_factory=list)
    tails: dict[tuple[str, str], str] = field(default_factory=dict)
    states: list[PatchState] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def gather_results(record: SweepRecord) -> Results:
    """Read every result of the sweep. Per-resource read errors are kept (the digest reports
    them, Failed counts them); the rest is still read."""
    found = Results()
    for command_id in sorted(set(record.sent.values())):
        try:
            found.invocations.extend(invocations(command_id))
        except ClientError as err:
            found.errors.append(f"results of command {command_id}: {error_code(err)}")
    for inv in [i for i in found.invocations if not i.succeeded][:MAX_OUTPUT_TAILS]:
        try:
            found.tails[(inv.command_id, inv.instance_id)] = output_tail(
                inv.command_id, inv.instance_id, inv.failed_plugin()
            )
        except ClientError as err:
            found.errors.append(f"output of {inv.instance_id}: {error_code(err)}")
    sent_ids = [i for idx, b in enumerate(record.batches) if idx in record.sent for i in b]
    if sent_ids:
        try:
            found.states = patch_states(sent_ids)
        except ClientError as err:
            found.errors.append(f"patch compliance: {error_code(err)}")
    return found
