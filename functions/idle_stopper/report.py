"""What one run tells people: the digest mail, the tags written on stopped instances, counts.

Pure functions of the run's outcome; :mod:`idle_stopper.app` sends and emits them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from autopilot import console
from autopilot.notify import Digest, Item, Severity, plural
from autopilot.tags import clean_value
from idle_stopper.decision import EXCLUDED, Assessment, Outcome, Plan, Policy
from idle_stopper.duration import format_duration
from idle_stopper.service import Failure

AUTOMATION = "idle_stopper"
# A malformed StopAfter alone (nothing stopped, nothing failed) is mailed once a day, in the
# run whose scheduled time falls in this UTC hour; otherwise it rides along in every mail.
MALFORMED_REPORT_HOUR_UTC = 7
LABELS = {
    Outcome.BUSY.value: "busy",
    Outcome.TOO_LITTLE_DATA.value: "too little metric data",
    Outcome.TOO_YOUNG.value: "started too recently to judge",
    Outcome.NOT_RUNNING.value: "not running",
    Outcome.AUTO_SCALING.value: "in an Auto Scaling group",
    Outcome.KUBERNETES.value: "EKS/Karpenter/Kubernetes node",
    Outcome.MANAGED.value: "managed by another service",
    Outcome.SPOT.value: "Spot/not on-demand",
    Outcome.INSTANCE_STORE.value: "instance-store root",
    Outcome.OPTED_OUT.value: "opted out (AutoStop)",
    Outcome.STOP_PROTECTED.value: "stop-protected",
    Outcome.OVER_CAP.value: "over the stop limit",
    "StopFailed": "stop failed",
}


@dataclass
class RunOutcome:
    """What the run decided and what actually happened."""

    plan: Plan
    policy: Policy
    now: datetime
    dry_run: bool
    stopped: list[Assessment] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    @property
    def malformed(self) -> list[Assessment]:
        return [a for a in self.plan.all if a.stop_after_error]

    def counts(self) -> Counter[str]:
        """Per-outcome counts of the final state (a planned stop that failed is not a stop)."""
        stopped_ids = {a.instance.instance_id for a in self.stopped}
        counts: Counter[str] = Counter()
        for a in self.plan.all:
            if a.stops and a.instance.instance_id not in stopped_ids and not self.dry_run:
                counts["StopFailed"] += 1
            else:
                counts[a.outcome.value] += 1
        return counts

    def metrics(self) -> dict[str, int]:
        """Checked / Changed / Skipped / Failed (the dashboard's names) and the specific ones."""
        counts = self.counts()
        idle = sum(1 for a in self.plan.all if a.verdict is not None and a.verdict.idle)
        skipped = {f"Skipped{o.value}": counts[o.value] for o in (*EXCLUDED, Outcome.OVER_CAP)}
        return {
            "Checked": len(self.plan.all),
            "Idle": idle,
            "Changed": 0 if self.dry_run else len(self.stopped),
            "WouldStop": len(self.plan.stop) if self.dry_run else 0,
            "StoppedIdle": 0 if self.dry_run else self._stopped(Outcome.STOP_IDLE),
            "StoppedLifetime": 0 if self.dry_run else self._stopped(Outcome.STOP_LIFETIME),
            "Skipped": sum(skipped.values()),
            **{k: v for k, v in skipped.items() if v},
            "MalformedStopAfter": len(self.malformed),
            "Failed": len(self.failures),
        }

    def _stopped(self, outcome: Outcome) -> int:
        return sum(1 for a in self.stopped if a.outcome is outcome)

    def should_mail(self) -> bool:
        if self.stopped or self.failures:
            return True
        return bool(self.malformed) and self.now.astimezone(UTC).hour == MALFORMED_REPORT_HOUR_UTC


def stopped_tags(assessment: Assessment, stack_name: str, now: datetime) -> dict[str, str]:
    """StoppedBy / StoppedReason (with the numbers) / StoppedAt for one stopped instance.
    StoppedReason is written in the characters EC2 tag values allow (no %, commas, brackets)."""
    verdict = assessment.verdict
    if assessment.outcome is Outcome.STOP_IDLE and verdict is not None:
        reason = (
            f"idle: {verdict.idle_periods} of {verdict.periods} hours quiet - "
            f"peak CPU {verdict.peak_cpu or 0:.1f} pct - peak network {verdict.peak_network_mb or 0:.2f} MB/h"
        )
    else:
        running = format_duration(now - assessment.instance.launch_time)
        stop_after = assessment.instance.tags.get("StopAfter", "").strip()
        reason = f"lifetime: StopAfter={stop_after} reached after {running} running"
    return {
        "StoppedBy": clean_value(f"ops-autopilot/{stack_name}"),
        "StoppedReason": clean_value(reason),
        "StoppedAt": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def subject_text(outcome: RunOutcome) -> str:
    stopped = outcome.stopped
    parts = []
    idle = sum(1 for a in stopped if a.outcome is Outcome.STOP_IDLE)
    lifetime = len(stopped) - idle
    if idle:
        parts.append(f"{idle} idle")
    if lifetime:
        parts.append(f"{lifetime} past StopAfter")
    verb = "would be stopped" if outcome.dry_run else "stopped"
    text = f"{plural(len(stopped), 'instance')} {verb} ({', '.join(parts)})" if stopped else ""
    failed = len({f.instance_id for f in outcome.failures})
    if failed:
        text += ("; " if text else "") + f"{plural(failed, 'instance')} could not be handled"
    if not text:
        text = f"{plural(len(outcome.malformed), 'instance')} with a malformed StopAfter tag"
    return text


def build_digest(
    outcome: RunOutcome, stack_name: str, region: str, owner_tag_key: str
) -> tuple[Digest, str, Severity]:
    """The digest, its subject text and severity."""
    digest = Digest(automation=AUTOMATION, stack_name=stack_name, region=region, dry_run=outcome.dry_run)
    policy = outcome.policy

    def item(a: Assessment, *details: str) -> Item:
        instance = a.instance
        title = instance.instance_id
        title += f" ({instance.name})" if instance.name else ""
        title += f", owner {instance.owner(owner_tag_key) or 'unknown'}"
        since = f"{instance.launch_time.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
        facts = f"{instance.instance_type or 'type unknown'}, running since {since}"
        return Item(title, [*details, facts], console.ec2_instance(region, instance.instance_id))

    idle = [a for a in outcome.stopped if a.outcome is Outcome.STOP_IDLE]
    lifetime = [a for a in outcome.stopped if a.outcome is Outcome.STOP_LIFETIME]
    verb = "Would stop" if outcome.dry_run else "Stopped"
    if idle:
        digest.section(
            f"{verb}: idle ({policy.describe()})",
            [item(a, f"Why: {a.reason}") for a in idle],
        )
    if lifetime:
        digest.section(
            f"{verb}: StopAfter lifetime reached (idle or not)",
            [item(a, f"Why: {a.reason}") for a in lifetime],
        )
    by_id = {a.instance.instance_id: a for a in outcome.plan.all}
    if outcome.failures:
        digest.section(
            "Could not be handled (still running unless said otherwise)",
            [
                item(by_id[f.instance_id], f"Could not {f.action}: {f.code}: {f.message}")
                if f.instance_id in by_id
                else Item(f.instance_id, [f"Could not {f.action}: {f.code}: {f.message}"])
                for f in outcome.failures
            ],
        )
    if outcome.malformed:
        digest.section(
            "StopAfter tag not understood (not guessed; the instance is judged on idleness only)",
            [item(a, f"{a.stop_after_error}") for a in outcome.malformed],
        )
    protected = [a for a in outcome.plan.others if a.outcome is Outcome.STOP_PROTECTED]
    over_cap = [a for a in outcome.plan.others if a.outcome is Outcome.OVER_CAP]
    notes = []
    if protected:
        ids = ", ".join(a.instance.instance_id for a in protected[:20])
        notes.append(
            f"Stop protection on, left running although the rule matched ({len(protected)}): {ids}. "
            "Tag them AutoStop=false to stop checking them."
        )
    if over_cap:
        notes.append(
            f"{plural(len(over_cap), 'more instance')} met the rule but this run's limit of "
            f"{policy.max_stops} stops was reached; the next run looks at them again."
        )
    if notes and not digest.empty:
        digest.section("Also worth knowing", text=notes)
    digest.advice = [
        "Keep an instance running: tag it AutoStop=false (or AutoStop=never).",
        "Give an instance a lifetime: tag it StopAfter=90m, 8h or 2d (counted from its last start).",
        "Start a stopped instance again from the console link, or: "
        "aws ec2 start-instances --instance-ids <id>. "
        f"After a start it is not judged idle for {policy.lookback_periods} hours.",
        "The StoppedBy, StoppedReason and StoppedAt tags on each stopped instance say who, why and when.",
    ]
    return digest, subject_text(outcome), "warning" if outcome.failures else "info"


def summary_line(outcome: RunOutcome) -> str:
    counts = outcome.counts()
    total = len(outcome.plan.all)
    kept = ", ".join(
        f"{n} {LABELS.get(name, name)}"
        for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        if n and name not in {Outcome.STOP_IDLE.value, Outcome.STOP_LIFETIME.value}
    )
    verb = "would stop" if outcome.dry_run else "stopped"
    return f"Looked at {plural(total, 'running instance')}: {verb} {len(outcome.stopped)}" + (
        f"; left running: {kept}." if kept else "."
    )
