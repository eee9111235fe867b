"""Who gets patched: a pure decision over plain data, no AWS here.

Targets are running EC2 instances that Systems Manager manages and sees online, minus those
tagged ``AutoPatch=false``. Running instances SSM does not manage (or has lost contact with)
are "not patchable", each with the reason and the fix, because nobody sees them otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from autopilot.aws import chunked

MAX_INSTANCES_PER_COMMAND = 50  # SendCommand InstanceIds maximum
OPT_OUT_VALUES = frozenset({"false", "no", "never", "off"})

FIX_REGISTER = (
    "attach an instance profile whose role has the AmazonSSMManagedInstanceCore policy, and make "
    "sure the SSM Agent is installed and can reach the SSM endpoints (internet, NAT or VPC endpoints)"
)
FIX_CONNECTION = (
    "the SSM Agent stopped talking to Systems Manager: check the agent is running "
    "(systemctl status amazon-ssm-agent), the instance role still has AmazonSSMManagedInstanceCore, "
    "and the network path to the SSM endpoints"
)


@dataclass(frozen=True)
class Instance:
    """A running EC2 instance as DescribeInstances reports it."""

    id: str
    state: str = "running"
    tags: Mapping[str, str] = field(default_factory=dict)
    platform: str = "Linux/UNIX"

    @property
    def name(self) -> str:
        return self.tags.get("Name", "")


@dataclass(frozen=True)
class ManagedNode:
    """An SSM managed node as DescribeInstanceInformation reports it."""

    instance_id: str
    ping_status: str  # Online | ConnectionLost | Inactive
    agent_version: str = ""
    platform: str = ""
    last_ping: str = ""


@dataclass(frozen=True)
class NotPatchable:
    instance: Instance
    reason: str
    fix: str


@dataclass(frozen=True)
class TargetPlan:
    targets: tuple[Instance, ...]
    not_patchable: tuple[NotPatchable, ...]
    opted_out: tuple[Instance, ...]

    def batches(self, size: int = MAX_INSTANCES_PER_COMMAND) -> list[list[str]]:
        return plan_batches([t.id for t in self.targets], size)


def opted_out(instance: Instance, tag_key: str = "AutoPatch") -> bool:
    return instance.tags.get(tag_key, "").strip().lower() in OPT_OUT_VALUES


def decide_targets(
    instances: Iterable[Instance], nodes: Iterable[ManagedNode], *, opt_out_tag: str = "AutoPatch"
) -> TargetPlan:
    """Split running instances into targets, not-patchable (with reason and fix) and opted-out.

    Opted-out instances are never targets and never reported as not patchable (the owner chose).
    """
    by_id = {n.instance_id: n for n in nodes}
    targets: list[Instance] = []
    broken: list[NotPatchable] = []
    skipped: list[Instance] = []
    for instance in sorted({i.id: i for i in instances}.values(), key=lambda i: i.id):
        if instance.state != "running":
            continue
        if opted_out(instance, opt_out_tag):
            skipped.append(instance)
            continue
        node = by_id.get(instance.id)
        if node is None:
            broken.append(NotPatchable(instance, "not managed by Systems Manager", FIX_REGISTER))
        elif node.ping_status != "Online":
            since = f" since {node.last_ping}" if node.last_ping else ""
            broken.append(NotPatchable(instance, f"SSM Agent {node.ping_status}{since}", FIX_CONNECTION))
        else:
            targets.append(instance)
    return TargetPlan(tuple(targets), tuple(broken), tuple(skipped))


def plan_batches(instance_ids: Sequence[str], size: int = MAX_INSTANCES_PER_COMMAND) -> list[list[str]]:
    """Instance ids in SendCommand-sized batches (at most 50), each id exactly once, in order."""
    if not 1 <= size <= MAX_INSTANCES_PER_COMMAND:
        raise ValueError(f"batch size must be 1..{MAX_INSTANCES_PER_COMMAND}")
    return list(chunked(dict.fromkeys(instance_ids), size))
