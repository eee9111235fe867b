"""What a finished sweep means: a pure classification of command results and patch states."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

TAIL_LINES = 12
TAIL_CHARS = 1200
# Plugin steps of AWS-RunPatchBaseline (one per platform; the others are skipped by precondition).
PATCH_PLUGINS = ("PatchLinux", "PatchWindows", "PatchMacOS")
_FAILED_PLUGIN_STATUSES = frozenset({"Failed", "TimedOut", "Cancelled"})


@dataclass(frozen=True)
class PluginResult:
    name: str
    status: str
    status_details: str = ""
    response_code: int = 0


@dataclass(frozen=True)
class Invocation:
    """One instance's result of one command (ListCommandInvocations with Details)."""

    command_id: str
    instance_id: str
    status: str  # CommandInvocationStatus: Success, Failed, TimedOut, Cancelled, ...
    status_details: str = ""
    plugins: tuple[PluginResult, ...] = ()

    @property
    def succeeded(self) -> bool:
        return self.status == "Success"

    def failed_plugin(self) -> str | None:
        """The step whose output explains the failure, if any step ran."""
        for plugin in self.plugins:
            if plugin.status in _FAILED_PLUGIN_STATUSES or plugin.response_code != 0:
                return plugin.name
        return None


@dataclass(frozen=True)
class PatchState:
    """The instance's patch compliance as last reported (DescribeInstancePatchStates)."""

    instance_id: str
    installed: int = 0
    installed_pending_reboot: int = 0
    missing: int = 0
    failed: int = 0
    not_applicable: int = 0
    critical_non_compliant: int = 0
    security_non_compliant: int = 0
    operation: str = ""


@dataclass(frozen=True)
class SendFailure:
    """A whole batch that SendCommand refused (error code), so none of its instances ran."""

    instance_ids: tuple[str, ...]
    error_code: str


@dataclass(frozen=True)
class Failed:
    instance_id: str
    command_id: str | None
    reason: str
    output_tail: str = ""


@dataclass(frozen=True)
class ComplianceTotals:
    reporting: int = 0
    installed: int = 0
    installed_pending_reboot: int = 0
    missing: int = 0
    failed: int = 0
    critical_non_compliant: int = 0
    security_non_compliant: int = 0


@dataclass(frozen=True)
class SweepOutcome:
    succeeded: tuple[str, ...]
    failed: tuple[Failed, ...]
    pending_reboot: tuple[PatchState, ...]
    compliance: ComplianceTotals
    states: Mapping[str, PatchState] = field(default_factory=dict)

    @property
    def patched_cleanly(self) -> tuple[str, ...]:
        waiting = {s.instance_id for s in self.pending_reboot}
        return tuple(i for i in self.succeeded if i not in waiting)


def classify(
    targeted: Sequence[str],
    invocations: Iterable[Invocation],
    states: Iterable[PatchState],
    send_failures: Iterable[SendFailure] = (),
    output_tails: Mapping[tuple[str, str], str] | None = None,
) -> SweepOutcome:
    """Every targeted instance ends up exactly once in succeeded or failed.

    - SendCommand refused its batch -> failed with the error code;
    - its invocation succeeded -> succeeded (and pending reboot if patches wait for a reboot);
    - its invocation ended otherwise, or no invocation was reported -> failed.
    """
    tails = output_tails or {}
    by_instance: dict[str, Invocation] = {}
    for inv in invocations:
        by_instance[inv.instance_id] = inv
    refused = {i: f.error_code for f in send_failures for i in f.instance_ids}
    state_by_id = {s.instance_id: s for s in states}
    succeeded: list[str] = []
    failed: list[Failed] = []
    for instance_id in dict.fromkeys(targeted):
        if instance_id in refused:
            failed.append(Failed(instance_id, None, f"command not sent: {refused[instance_id]}"))
            continue
        found = by_instance.get(instance_id)
        if found is None:
            failed.append(Failed(instance_id, None, "no result reported for this instance"))
        elif found.succeeded:
            succeeded.append(instance_id)
        else:
            plugin = found.failed_plugin()
            details = found.status_details or found.status
            reason = f"{details} in step {plugin}" if plugin else details
            tail = tails.get((found.command_id, instance_id), "")
            failed.append(Failed(instance_id, found.command_id, reason, tail))
    ok = set(succeeded)
    pending = tuple(
        state_by_id[i] for i in succeeded if i in state_by_id and state_by_id[i].installed_pending_reboot > 0
    )
    reporting = [state_by_id[i] for i in dict.fromkeys(targeted) if i in state_by_id]
    totals = ComplianceTotals(
        reporting=len(reporting),
        installed=sum(s.installed for s in reporting),
        installed_pending_reboot=sum(s.installed_pending_reboot for s in reporting),
        missing=sum(s.missing for s in reporting),
        failed=sum(s.failed for s in reporting),
        critical_non_compliant=sum(s.critical_non_compliant for s in reporting),
        security_non_compliant=sum(s.security_non_compliant for s in reporting),
    )
    return SweepOutcome(
        succeeded=tuple(succeeded),
        failed=tuple(failed),
        pending_reboot=tuple(p for p in pending if p.instance_id in ok),
        compliance=totals,
        states=state_by_id,
    )


def tail(stdout: str, stderr: str = "", *, lines: int = TAIL_LINES, chars: int = TAIL_CHARS) -> str:
    """The last lines of a command's output (stderr after stdout), at most ``chars`` characters."""
    parts = [p.rstrip() for p in (stdout, stderr) if p and p.strip()]
    text = "\n".join(parts)
    kept = [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]
    result = "\n".join(kept)
    if len(result) > chars:
        result = "..." + result[-(chars - 3) :]
    return result
