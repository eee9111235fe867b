"""The mails people receive: one plain-text digest per run per automation, via the stack's topic.

An automation collects what happened into a :class:`Digest` (sections of items, each item a
resource with the numbers that decided its fate and a console link) and calls
:meth:`Digest.mail`, which renders it for the outbox (:mod:`autopilot.runner` sends it). An
empty digest renders to nothing. The subject always starts with
``[<stack name>]``, is one ASCII line of at most 99 characters (SNS e-mail subjects must be
shorter than 100), and says what happened. Message attributes ``automation`` and ``severity``
let subscribers filter.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from autopilot import aws
from autopilot.outbox import Mail

Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")
MAX_SUBJECT = 99
MAX_BODY_BYTES = 240_000  # SNS allows 256 KiB; leave room for the envelope
ITEMS_PER_SECTION = 50

_ASCII_FOLD = {"—": "-", "–": "-", "’": "'", "‘": "'", "“": '"', "”": '"', "…": "...", "→": "->", "×": "x"}


def make_subject(stack_name: str, text: str, *, dry_run: bool = False) -> str:
    """``[stack] text`` as one printable ASCII line of at most 99 characters."""
    text = "".join(_ASCII_FOLD.get(ch, ch) for ch in text)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    text = " ".join(text.split())  # no line breaks or control characters
    prefix = f"[{stack_name}] " + ("DRY RUN: " if dry_run else "")
    subject = (prefix + text).rstrip()
    if len(subject) > MAX_SUBJECT:
        subject = subject[: MAX_SUBJECT - 3].rstrip() + "..."
    return subject


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``1 instance``, ``2 instances``."""
    return f"{count} {singular if count == 1 else (plural_form or singular + 's')}"


@dataclass
class Item:
    """One resource in a digest: a title line, detail lines, an optional console link."""

    title: str
    details: list[str] = field(default_factory=list)
    link: str | None = None

    def render(self) -> list[str]:
        lines = [f"- {self.title}"]
        lines += [f"  {d}" for d in self.details]
        if self.link:
            lines.append(f"  {self.link}")
        return lines


@dataclass
class Section:
    heading: str
    items: list[Item] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    limit: int = ITEMS_PER_SECTION  # items listed; the rest counted (a digest may list them all)

    def render(self) -> list[str]:
        limit = self.limit
        lines = [self.heading, "-" * min(len(self.heading), 72)]
        lines += self.text
        for item in self.items[:limit]:
            lines += item.render()
        if len(self.items) > limit:
            lines.append(f"... and {len(self.items) - limit} more (every one is in the function's log).")
        return lines


@dataclass
class Digest:
    """Everything one run of one automation has to tell people."""

    automation: str
    stack_name: str
    region: str
    dry_run: bool = False
    sections: list[Section] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)

    def section(
        self,
        heading: str,
        items: list[Item] | None = None,
        text: list[str] | None = None,
        limit: int = ITEMS_PER_SECTION,
    ) -> Section:
        new = Section(heading, list(items or []), list(text or []), limit)
        self.sections.append(new)
        return new

    @property
    def empty(self) -> bool:
        return not any(s.items or s.text for s in self.sections)

    def subject(self, text: str) -> str:
        return make_subject(self.stack_name, text, dry_run=self.dry_run)

    def body(self, summary: str, now: datetime | None = None) -> str:
        when = (now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
        lines = [summary, ""]
        if self.dry_run:
            lines += ["DRY RUN: nothing was changed. This is what would have happened.", ""]
        for s in self.sections:
            if s.items or s.text:
                lines += [*s.render(), ""]
        if self.advice:
            lines += ["What you can do", "---------------", *(f"- {a}" for a in self.advice), ""]
        lines += [
            "--",
            f"ops-autopilot, stack {self.stack_name}, automation {self.automation}, "
            f"region {self.region}, {when}.",
        ]
        text = "\n".join(lines)
        encoded = text.encode("utf-8")
        if len(encoded) > MAX_BODY_BYTES:
            cut = encoded[:MAX_BODY_BYTES].decode("utf-8", "ignore")
            text = (
                cut.rsplit("\n", 1)[0]
                + "\n\n[... mail cut at 240 KB; the full list is in the function's log.]"
            )
        return text

    def mail(
        self, subject: str, summary: str, severity: Severity, now: datetime | None = None
    ) -> Mail | None:
        """The rendered mail for the outbox, or None when there is nothing to say. Sending is the
        runner's job (autopilot.runner), after the mail is recorded."""
        if self.empty:
            return None
        if severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}")
        return Mail(self.subject(subject), self.body(summary, now), severity)


def publish(topic_arn: str, subject: str, body: str, automation: str, severity: Severity) -> str:
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}")
    response: dict[str, Any] = aws.client("sns").publish(
        TopicArn=topic_arn,
        Subject=subject,
        Message=body,
        MessageAttributes={
            "automation": {"DataType": "String", "StringValue": automation},
            "severity": {"DataType": "String", "StringValue": severity},
        },
    )
    return str(response["MessageId"])


def send_email(sender: str, to: str, subject: str, body: str, automation: str) -> str:
    """One recipient's digest through Amazon SES (1 sesv2:SendEmail); the message id. The
    sender is the stack's SES verified identity (MAIL_FROM)."""
    response: dict[str, Any] = aws.client("sesv2").send_email(
        FromEmailAddress=sender,
        Destination={"ToAddresses": [to]},
        Content={
            "Simple": {
                "Subject": {"Data": subject, "Charset": "UTF-8"},
                "Body": {"Text": {"Data": body, "Charset": "UTF-8"}},
            }
        },
        EmailTags=[{"Name": "automation", "Value": automation}],
    )
    return str(response["MessageId"])
