"""Every decision of the patch sweeper, pure, on plain data (no AWS, no clock).

1. **Who gets patched** (:func:`decide_targets`): running EC2 instances that Systems Manager
   manages and sees online, minus those opted out (``AutoPatch=false``, or ``no``, ``never``,
   ``off``: :func:`autopilot.tags.opted_out`). Running instances SSM does not manage (or has
   lost contact with) are "not patchable", each with the reason and the fix, because nobody
   sees them otherwise. Targets go out in SendCommand-sized batches (:func:`plan_batches`).
2. **What a finished command means for its sweep** (:func:`on_command_finished`,
   :class:`SweepRecord`): not ours, already counted, to be counted (and the digest made
   when it was the last one), or final before the sweep recorded it (``early``).
3. **What a finished ring means** (:func:`classify`): every targeted instance exactly once in
   succeeded or failed (a command still running when the ring timed out: "no result"), plus
   pending reboot and the compliance totals; :func:`summarise` keeps what the digest shows, as
   plain JSON for the outbox.
4. **Rings** (:func:`assign_rings`, :func:`ring_verdict`, :func:`on_tick`): ``PatchRing=<n>``
   orders the sweep - ring 0 first, untagged (or badly tagged) instances in the last ring; the
   next ring starts only when the previous one's success rate met the threshold and its soak
   time has passed by the clock; a ring below the threshold halts the sweep; a ring whose last
   status never comes is closed by the timeout.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from autopilot.notify import ITEMS_PER_SECTION
from autopilot.schedule import Schedule
from autopilot.tags import opted_out as tag_opted_out

MAX_INSTANCES_PER_COMMAND = 50  # SendCommand InstanceIds maximum
MAX_STORED_NOT_PATCHABLE = 500  # kept in the sweep record; the mail shows 50, the count is exact
SHOWN = ITEMS_PER_SECTION  # items per mail section; the rest are counted, and in the log
TAIL_LINES = 12
TAIL_CHARS = 1200
# Plugin steps of AWS-RunPatchBaseline (one per platform; the others are skipped by precondition).
PATCH_PLUGINS = ("PatchLinux", "PatchWindows", "PatchMacOS")
_FAILED_PLUGIN_STATUSES = frozenset({"Failed", "TimedOut", "Cancelled"})
# Invocation statuses that are not an end (CommandInvocationStatus): still one of these when the
# ring's timeout closes it is "no result".
RUNNING_INVOCATION_STATUSES = frozenset({"Pending", "InProgress", "Delayed", "Cancelling", ""})
RING_TAG = "PatchRing"
MAX_RING = 99  # PatchRing=0..99; anything else is reported and patched in the last ring
NO_RESULT = "no result"  # the reason's start for an instance whose command never reported

FIX_REGISTER = (
    "attach an instance profile whose role has the AmazonSSMManagedInstanceCore policy, and make "
    "sure the SSM Agent is installed and can reach the SSM endpoints (internet, NAT or VPC endpoints)"
)
FIX_CONNECTION = (
    "the SSM Agent stopped talking to Systems Manager: check the agent is running "
    "(systemctl status amazon-ssm-agent), the instance role still has AmazonSSMManagedInstanceCore, "
    "and the network path to the SSM endpoints"
)


# -- 1. who gets patched ------------------------------------------------------------------


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

    def entry(self, owner_tag_key: str) -> dict[str, str]:
        """Id, Name and owner, as the mail shows them (plain JSON for the outbox)."""
        return {"id": self.id, "name": self.name, "owner": self.tags.get(owner_tag_key, "")}


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

    def worth_a_run(self, dry_run: bool) -> bool:
        """Anything to do or to say: targets to patch, instances nobody can patch, or (dry run)
        instances it would leave out. An empty account gets no record and no mail."""
        return bool(self.targets or self.not_patchable or (dry_run and self.opted_out))


def opted_out(instance: Instance, tag_key: str = "AutoPatch") -> bool:
    return tag_opted_out(instance.tags, tag_key)


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
    unique = list(dict.fromkeys(instance_ids))
    return [unique[i : i + size] for i in range(0, len(unique), size)]


def not_patchable_entries(plan: TargetPlan, owner_tag_key: str) -> list[dict[str, str]]:
    return [{**n.instance.entry(owner_tag_key), "reason": n.reason, "fix": n.fix} for n in plan.not_patchable]


@dataclass(frozen=True)
class BadRingTag:
    instance: Instance
    value: str


@dataclass(frozen=True)
class Rings:
    """The targets in patch order: (ring number, its instances), ring 0 first; and the
    instances whose PatchRing tag is not a ring number (patched in the last ring, and said)."""

    rings: tuple[tuple[int, tuple[Instance, ...]], ...]
    bad_tags: tuple[BadRingTag, ...] = ()

    def batches(self, size: int = MAX_INSTANCES_PER_COMMAND) -> list[tuple[int, list[list[str]]]]:
        return [(number, plan_batches([i.id for i in members], size)) for number, members in self.rings]


def ring_number(value: str) -> int | None:
    """``PatchRing``'s value as a ring number 0..MAX_RING, or None when it is not one."""
    text = value.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 2:
        return None
    return int(text)


def assign_rings(targets: Sequence[Instance], tag_key: str = RING_TAG) -> Rings:
    """Every target in exactly one ring. Untagged instances, and those whose tag is not a ring
    number, go to the last ring (the highest number any target names; 0 when none does), so an
    account that tags nothing has one ring and is patched as before."""
    numbered: dict[str, int] = {}
    bad: list[BadRingTag] = []
    for instance in targets:
        value = instance.tags.get(tag_key)
        if value is None:
            continue
        number = ring_number(value)
        if number is None:
            bad.append(BadRingTag(instance, value[:40]))
        else:
            numbered[instance.id] = number
    last = max(numbered.values(), default=0)
    members: dict[int, list[Instance]] = {}
    for instance in targets:
        members.setdefault(numbered.get(instance.id, last), []).append(instance)
    return Rings(tuple((n, tuple(members[n])) for n in sorted(members)), tuple(bad))


# -- 2. the sweep's record and its commands' final events ----------------------------------


@dataclass(frozen=True)
class RingInfo:
    """One ring of a sweep as recorded: its number, how many commands and instances."""

    number: int
    batches: int
    instances: int

    def as_json(self) -> dict[str, int]:
        return {"number": self.number, "batches": self.batches, "instances": self.instances}


@dataclass(frozen=True)
class SweepRecord:
    """The sweep's own state (store.py keeps it in the sweep table)."""

    sweep_id: str
    started_at: str
    operation: str
    reboot_option: str
    batches: tuple[tuple[str, ...], ...]
    sent: Mapping[int, str] = field(default_factory=dict)  # batch index -> command id
    send_errors: Mapping[int, str] = field(default_factory=dict)  # batch index -> error code
    pending: frozenset[str] = frozenset()  # command ids not final yet
    phase: str = "sending"  # sending | sent (every batch sent or refused)
    not_patchable: tuple[Mapping[str, str], ...] = ()
    not_patchable_count: int = 0
    opted_out_count: int = 0
    digest_claim: str | None = None  # the token of the run that makes the digest
    # commands SSM reported final before the sweep recorded them: recorded, they are not pending
    finished: frozenset[str] = frozenset()
    # -- rings: ``batches``, ``sent`` .. ``finished`` above are the current ring's --------------
    rings: tuple[RingInfo, ...] = ()  # every ring of the sweep, in order (empty: one ring)
    ring_index: int = 0  # the current ring's position in ``rings``
    status: str = "running"  # running | soaking (ring passed, next waits) | halted | done
    ring_started_at: str = ""  # when the current ring's first command was about to be sent
    soak_until: str = ""  # soaking: the next ring starts at the first tick after this
    timed_out: frozenset[str] = frozenset()  # commands still running when the ring timed out
    results: tuple[Mapping[str, Any], ...] = ()  # one summary per finished ring (RingResult.as_json)
    freeze_noted: int = -1  # the ring whose start a change freeze holds back, once mailed
    bad_ring_tags: tuple[Mapping[str, str], ...] = ()  # the first SHOWN (id, name, owner, value)
    bad_ring_tag_count: int = 0
    # the current ring's instances no longer running, or opted out, when the ring started (a ring
    # starts days after the sweep was planned: its owners were told how to opt out before)
    left_out: frozenset[str] = frozenset()
    # the previous sweep, still soaking or running when this one started: its later rings are
    # not started (this sweep begins again at ring 0); said in ring 0's mail
    superseded: str = ""

    @property
    def ring(self) -> RingInfo:
        return self.rings[self.ring_index] if self.rings else RingInfo(0, len(self.batches), 0)

    @property
    def last_ring(self) -> bool:
        return self.ring_index >= len(self.rings) - 1

    @property
    def targeted(self) -> list[str]:
        return [i for batch in self.batches for i in batch if i not in self.left_out]

    @property
    def complete(self) -> bool:
        return self.phase == "sent" and not self.pending

    def batches_to_send(self) -> list[tuple[int, tuple[str, ...]]]:
        """Batches neither sent nor refused yet (a resumed run continues where it stopped),
        without the instances left out since the sweep was planned (possibly none left)."""
        done = set(self.sent) | set(self.send_errors)
        return [
            (i, tuple(x for x in b if x not in self.left_out))
            for i, b in enumerate(self.batches)
            if i not in done
        ]


Verdict = Literal["ignore", "count", "early"]


def on_command_finished(record: SweepRecord | None, command_id: str) -> tuple[Verdict, str]:
    """What a command's final event means, judged on the sweep record as read: ``count`` it
    (take it off the pending set; the digest if it was the last), or ``ignore`` it, and why."""
    if record is None:
        return "ignore", "no such sweep in this stack (another stack's, or expired)"
    if command_id not in record.sent.values():
        if record.phase == "sending" and command_id not in record.finished:
            # SSM may report a command final before the run that sent it has recorded it (a
            # small batch, or a run slowed between SendCommand and its UpdateItem).
            return "early", "final before the sweep recorded it (the sweep is still being sent)"
        return "ignore", "not one of the sweep's commands"
    if command_id in record.pending:
        return "count", "one of the sweep's commands is final"
    if record.complete and record.digest_claim is None:
        return "count", "the sweep is complete but its digest was not made yet"
    return "ignore", "already counted (a repeated event)"


# -- 4. rings: when the next one starts ---------------------------------------------------------

RingStatus = Literal["done", "soaking", "halted"]
TickVerdict = Literal["start-ring", "time-out", "wait"]


def ring_verdict(succeeded: int, targeted: int, percent: int, last: bool) -> RingStatus:
    """After a ring: the sweep is done (it was the last), the next ring waits for the soak time
    (the success rate met ``percent``), or the sweep halts (it did not). Integer arithmetic: 19
    of 20 is exactly 95 %."""
    if last:
        return "done"
    return "soaking" if succeeded * 100 >= percent * targeted else "halted"


def on_tick(record: SweepRecord | None, now: datetime, timeout: timedelta) -> tuple[TickVerdict, str]:
    """What the clock (``now``, never an event's time) means for the open sweep: start its next
    ring, close its running ring as timed out, or nothing yet."""
    if record is None:
        return "wait", "no open sweep"
    if record.status == "soaking":
        due = datetime.fromisoformat(record.soak_until)
        if now >= due:
            return "start-ring", f"ring {record.ring.number} passed and soaked until {record.soak_until}"
        return "wait", f"ring {record.ring.number} soaks until {record.soak_until}"
    if record.status == "running" and not record.complete and record.ring_started_at:
        due = datetime.fromisoformat(record.ring_started_at) + timeout
        if now >= due:
            return "time-out", f"ring {record.ring.number} started {record.ring_started_at}, no last status"
        return "wait", f"ring {record.ring.number} is running"
    return "wait", f"sweep is {record.status}"


def next_sweep(schedule: Schedule, now: datetime, within: timedelta) -> datetime | None:
    """The first minute after ``now`` and at most ``within`` ahead that the sweep's schedule
    names (the time its next sweep starts), or None. Pure: minute by minute (at most 4,320)."""
    minute = now.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    while minute <= now + within:
        if schedule.names(minute):
            return minute
        minute += timedelta(minutes=1)
    return None


# -- 3. what a finished sweep means ---------------------------------------------------------


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

    def shown(self) -> list[str]:
        """The instances the digest lists by name (the first of each section)."""
        return (
            [f.instance_id for f in self.failed[:SHOWN]]
            + [s.instance_id for s in self.pending_reboot[:SHOWN]]
            + list(self.patched_cleanly[:SHOWN])
        )


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
            failed.append(Failed(instance_id, None, f"{NO_RESULT} reported for this instance"))
        elif found.succeeded:
            succeeded.append(instance_id)
        elif found.status in RUNNING_INVOCATION_STATUSES:  # the ring timed out before it ended
            status = found.status or "Pending"
            failed.append(
                Failed(instance_id, found.command_id, f"{NO_RESULT}: still {status} at the timeout")
            )
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


def failed_entry(failure: Failed, who: Mapping[str, str]) -> dict[str, Any]:
    """A failed instance as the digests list it (plain JSON)."""
    return {**who, "command_id": failure.command_id, "reason": failure.reason, "tail": failure.output_tail}


def pending_entry(state: PatchState, who: Mapping[str, str]) -> dict[str, Any]:
    """An instance waiting for a reboot as the digests list it (plain JSON)."""
    return {**who, "patches": state.installed_pending_reboot}


def owners_of(
    findings: Mapping[str, Sequence[tuple[str, Callable[[], dict[str, Any]]]]],
    to: Mapping[str, str],
    budget: int,
) -> dict[str, Any]:
    """Each recipient's own instances of each kind (``findings``: kind -> (instance id, its
    entry when listed); ``to``: instance id -> address): the first :data:`SHOWN` of each kind with
    the exact count (``<kind>_count``), recipient by recipient until their JSON reaches
    ``budget`` bytes. ``owners`` {address: {...}}, and the recipients past the budget
    (``owners_unmailed``, named to the operators)."""
    mine: dict[str, dict[str, Any]] = {}
    for kind, found in findings.items():
        for instance_id, entry in found:
            address = to.get(instance_id)
            if not address:
                continue
            lists = mine.setdefault(
                address, {k: v for name in findings for k, v in ((name, []), (f"{name}_count", 0))}
            )
            lists[f"{kind}_count"] += 1
            if len(lists[kind]) < SHOWN:
                lists[kind].append(entry())
    owners: dict[str, Any] = {}
    unmailed: list[str] = []
    size = 0
    for address, theirs in mine.items():
        cost = len(json.dumps(theirs, separators=(",", ":")))
        if size + cost > budget:
            unmailed.append(address)
            continue
        size += cost
        owners[address] = theirs
    return {"owners": owners, "owners_unmailed": unmailed} if mine else {}


def summarise(
    record: SweepRecord,
    outcome: SweepOutcome,
    instances: Mapping[str, Instance],
    errors: Sequence[str],
    owner_tag_key: str,
) -> dict[str, Any]:
    """What the digest shows, as plain JSON (it is stored in the outbox with the mail): the
    exact counts, and the first :data:`SHOWN` of each list with Name and owner."""

    def who(instance_id: str) -> dict[str, str]:
        found = instances.get(instance_id)
        return found.entry(owner_tag_key) if found else {"id": instance_id, "name": "", "owner": ""}

    patched = []
    for instance_id in outcome.patched_cleanly[:SHOWN]:
        state = outcome.states.get(instance_id)
        numbers = (
            {"installed": state.installed, "missing": state.missing, "failed": state.failed} if state else {}
        )
        patched.append({**who(instance_id), **numbers})
    c = outcome.compliance
    return {
        "operation": record.operation,
        "reboot_option": record.reboot_option,
        "targeted": len(outcome.succeeded) + len(outcome.failed),
        "succeeded": len(outcome.succeeded),
        "failed_count": len(outcome.failed),
        "no_result_count": sum(1 for f in outcome.failed if f.reason.startswith(NO_RESULT)),
        "failed": [failed_entry(f, who(f.instance_id)) for f in outcome.failed[:SHOWN]],
        "pending_reboot_count": len(outcome.pending_reboot),
        "pending_reboot": [pending_entry(s, who(s.instance_id)) for s in outcome.pending_reboot[:SHOWN]],
        "patched_count": len(outcome.patched_cleanly),
        "patched": patched,
        "not_patchable": [dict(e) for e in record.not_patchable],
        "not_patchable_count": record.not_patchable_count,
        "opted_out_count": record.opted_out_count,
        "compliance": {
            "reporting": c.reporting,
            "installed": c.installed,
            "installed_pending_reboot": c.installed_pending_reboot,
            "missing": c.missing,
            "failed": c.failed,
            "critical_non_compliant": c.critical_non_compliant,
            "security_non_compliant": c.security_non_compliant,
        },
        "errors": list(errors),
    }
