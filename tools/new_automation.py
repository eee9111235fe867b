"""Scaffold a new automation in the house shape (docs/adding-an-automation.md).

    make new-automation NAME=stale_ami_report [TRIGGER=schedule|cloudtrail:A,B|ec2-state:S,T] [MUTATING=1]
    python tools/new_automation.py stale_ami_report --trigger cloudtrail:RunInstances --mutating
    python tools/new_automation.py host_watch --trigger ec2-state:running,terminated

Creates a working example automation - it reports running EC2 instances without a Name tag;
with --mutating it also tags them ``NeedsName=true`` (dry run, opt-out tag, idempotent) - and
everything around it:

- functions/<name>/: the rooms event, config, decide, service, run, report, app (on the runner);
- events/<name>/: real-shaped sample events (the schedule; or one CloudTrail event per call,
  a failed call and a call it does not handle; or, with ec2-state, the schedule and one EC2
  state-change notification per state, and one of a state it does not handle);
- tests/<name>/: unit and moto integration tests, and the reliability scenario (scenario.py);
- demo/scenarios/<name>.py, docs/<name>.md;
- template.yaml: the three automation lists (its log group, the right to write to it, alarms),
  the parameters and their ParameterGroup, the dashboard alarms, the failed-events queue's
  rule list, a banner section with the function, its own least-privilege role (no managed
  policy), its trigger with retry and dead-letter queue, and - scheduled - its silence alarm and
  that alarm's condition; samconfig.toml defaults; a README row and the parameter table.

The trigger ``ec2-state:<states>`` runs the automation on EC2's "EC2 Instance State-change
Notification" for those states (the instance that changed; its state read again from EC2) and
on a daily schedule that converges whatever an event missed.

Then `make test` passes with it. Templates are in tools/scaffold/: ``$name``-style placeholders
(string.Template) and ``#if <flag>`` / ``#else`` / ``#endif`` lines, flags being ``mutating``,
``readonly``, ``cloudtrail``, ``state``, ``schedule`` (a schedule: every trigger but
cloudtrail) and ``events`` (cloudtrail or state: events that name instances); ``not``,
``and`` and ``or`` allowed (``or`` binds loosest).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from string import Template

ROOT = Path(__file__).resolve().parent.parent
SKELETON = Path(__file__).resolve().parent / "scaffold"
NAME = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)+$")
MAX_NAME = 32  # the CamelCase name prefixes logical ids and parameters
EVENT_NAME = re.compile(r"^[A-Z][A-Za-z0-9]{2,63}$")
MAX_EVENT_NAMES = 20
EC2_STATES = ("pending", "running", "stopping", "stopped", "shutting-down", "terminated")

sys.path.insert(0, str(SKELETON))
import samples  # noqa: E402  - tools/scaffold/samples.py: the sample events

sys.path.pop(0)


def camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


@dataclass(frozen=True)
class Options:
    name: str
    events: tuple[str, ...]  # CloudTrail event names; empty for a schedule
    mutating: bool
    states: tuple[str, ...] = ()  # EC2 instance states (ec2-state:...), with a converging schedule

    @property
    def camel(self) -> str:
        return camel(self.name)

    @property
    def flags(self) -> dict[str, bool]:
        cloudtrail = bool(self.events)
        return {
            "mutating": self.mutating,
            "readonly": not self.mutating,
            "cloudtrail": cloudtrail,
            "state": bool(self.states),
            "schedule": not cloudtrail,
            "events": cloudtrail or bool(self.states),
        }

    def values(self) -> dict[str, str]:
        events = self.events
        table = "\n".join(
            (f"    # {e}: {UNKNOWN_NOTE}\n" if e not in samples.ID_PATHS else "")
            + f'    "{e}": {samples.id_path_literal(e)},'
            for e in events
        )
        when = f"on CloudTrail {', '.join(events)}" if events else f"every {self.camel}Schedule"
        if self.states:
            when = f"on EC2 state changes to {', '.join(self.states)} and every {self.camel}Schedule"
        does = (
            "tags the running instances without a Name tag NeedsName=true"
            if self.mutating
            else "reports the running instances without a Name tag"
        )
        if events:
            does = does.replace("the running instances", "the running instances the call named")
        states = self.states
        banner = textwrap.fill(
            f"{self.name}: {when}, {does} (scaffolded example: say what yours does)",
            width=96,
            initial_indent="  # ",
            subsequent_indent="  # ",
            break_on_hyphens=False,
        )
        return {
            "banner": banner,
            "name": self.name,
            "Camel": self.camel,
            "event_names_wrapped": textwrap.fill(", ".join(events), width=96),
            "event_names_yaml": "[" + ", ".join(events) + "]",
            "event_names_md": ", ".join(f"`{e}`" for e in events),
            "instance_ids_table": table,
            "first_event": events[0] if events else "",
            "first_sample": f"cloudtrail.{samples.snake(events[0])}" if events else "eventbridge.scheduled",
            "failed_sample": f"cloudtrail.{samples.snake(events[0])}.failed" if events else "",
            "states_literal": ", ".join(f'"{s}"' for s in states),
            "states_yaml": "[" + ", ".join(states) + "]",
            "states_md": ", ".join(f"`{s}`" for s in states),
            "states_text": ", ".join(states),
            "first_state": states[0] if states else "",
            "first_state_sample": f"ec2.state_change.{samples.snake_state(states[0])}" if states else "",
        }


UNKNOWN_NOTE = "not a call the scaffold knows - check where its events name the instances"


def parse_states(names: str) -> tuple[str, ...]:
    states = tuple(n.strip() for n in names.split(","))
    for state in states:
        if state not in EC2_STATES:
            fail(f"--trigger: {state!r} is not an EC2 instance state (one of {', '.join(EC2_STATES)})")
    if len(set(states)) != len(states):
        fail("--trigger: a state is given twice")
    return states


def parse_trigger(value: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(CloudTrail event names, EC2 states): both empty for a schedule."""
    if value == "schedule":
        return (), ()
    kind, _, names = value.partition(":")
    if kind == "ec2-state" and names:
        return (), parse_states(names)
    if kind != "cloudtrail" or not names:
        fail(
            f"--trigger {value!r}: use schedule, cloudtrail:EventA,EventB (e.g. cloudtrail:RunInstances) "
            "or ec2-state:state,... (e.g. ec2-state:running,terminated)"
        )
    events = tuple(n.strip() for n in names.split(","))
    for event in events:
        if not EVENT_NAME.match(event):
            fail(f"--trigger: {event!r} is not an EC2 API call name (CamelCase, e.g. StartInstances)")
    if len(set(events)) != len(events):
        fail("--trigger: an event name is given twice")
    if len(events) > MAX_EVENT_NAMES:
        fail(f"--trigger: at most {MAX_EVENT_NAMES} event names")
    return events, ()


def check_name(name: str, root: Path) -> None:
    if not NAME.match(name):
        fail(f"{name!r}: use snake_case with at least two words, e.g. stale_ami_report")
    if len(name) > MAX_NAME:
        fail(f"{name!r}: at most {MAX_NAME} characters")
    if (root / "functions" / name).exists():
        fail(f"functions/{name} already exists")
    if importlib.util.find_spec(name) is not None:
        fail(f"{name!r} is already an importable module; pick another name")
    if f"{camel(name)}Function:" in (root / "template.yaml").read_text():
        fail(f"template.yaml already has {camel(name)}Function")


# -- rendering --------------------------------------------------------------------------------

_DIRECTIVE = re.compile(r"^\s*#(if|else|endif)\b\s*(.*?)\s*$")


def _holds(condition: str, flags: dict[str, bool]) -> bool:
    if " or " in condition:
        return any(_holds(part, flags) for part in condition.split(" or "))
    result = True
    for term in condition.split(" and "):
        words = term.split()
        negate = words[:1] == ["not"]
        flag = words[-1] if words else ""
        if flag not in flags or len(words) != 1 + negate:
            raise ValueError(f"unknown condition {condition!r}")
        result = result and (flags[flag] != negate)
    return result


def preprocess(text: str, flags: dict[str, bool], where: str = "template") -> str:
    """Keep the lines whose ``#if`` conditions hold; drop the directive lines themselves."""
    out: list[str] = []
    stack: list[tuple[bool, bool]] = []  # (this branch holds, the enclosing one holds)
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        match = _DIRECTIVE.match(line)
        if match:
            kind, condition = match.groups()
            if kind == "if":
                enclosing = all(h for h, _ in stack[-1:]) if stack else True
                stack.append((enclosing and _holds(condition, flags), enclosing))
            elif not stack:
                raise ValueError(f"{where}:{number}: #{kind} without #if")
            elif kind == "else":
                holds, enclosing = stack.pop()
                stack.append((enclosing and not holds, enclosing))
            else:
                stack.pop()
            continue
        if all(holds for holds, _ in stack):
            out.append(line)
    if stack:
        raise ValueError(f"{where}: #if without #endif")
    return "".join(out)


def render(source: Path, options: Options) -> str:
    text = preprocess(source.read_text(), options.flags, str(source.relative_to(SKELETON)))
    return Template(text).substitute(options.values())


def render_files(options: Options, root: Path) -> list[Path]:
    created = []
    for source in sorted(SKELETON.rglob("*.tmpl")):
        text = render(source, options)
        if not text.strip():  # a file for the other trigger or mode
            continue
        relative = Path(
            str(source.relative_to(SKELETON)).replace("__name__", options.name).removesuffix(".tmpl")
        )
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        created.append(relative)
    for filename, event in samples.events(
        options.name, options.camel, options.events, options.states
    ).items():
        relative = Path("events") / options.name / filename
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(json.dumps(event, indent=2) + "\n")
        created.append(relative)
    return sorted(created)


# -- wiring -----------------------------------------------------------------------------------


def _insert_before(text: str, marker: str, block: str, where: str = "template.yaml") -> str:
    if marker not in text:
        fail(f"{where}: cannot find {marker.strip()!r} to insert before")
    return text.replace(marker, block + marker, 1)


def parameter(options: Options, setting: str) -> tuple[str, str]:
    """(the parameter's YAML, its default) from tools/scaffold/parameters/<setting>.yaml."""
    source = (SKELETON / "parameters" / f"{setting}.yaml").read_text()
    text = Template(source).substitute(name=options.name, Camel=options.camel)
    default = re.search(r"^    Default: (.*)$", text, re.MULTILINE)
    if not default:
        raise ValueError(f"tools/scaffold/parameters/{setting}.yaml has no Default")
    return text, default.group(1).strip().strip('"')


def settings(options: Options) -> list[str]:
    """The automation's parameters, by setting (the parameter is <CamelName><setting>)."""
    return ["NameTagKey"] if options.events else ["Schedule", "SilenceAlarmHours", "NameTagKey"]


def _insert_after_last(text: str, pattern: str, line: str, what: str) -> str:
    """``line`` after the last line matching ``pattern`` (a list the template keeps one per line)."""
    matches = list(re.finditer(pattern, text, re.MULTILINE))
    if not matches:
        fail(f"template.yaml: cannot find {what}")
    end = matches[-1].end()
    return text[:end] + line + text[end:]


def wire_template(options: Options, text: str) -> str:
    """template.yaml with the automation wired in."""
    name, c = options.name, options.camel
    for loop in ("Fn::ForEach::Automation", "Fn::ForEach::FunctionNames"):
        pattern = re.compile(rf"({re.escape(loop)}:\n\s+- Name\n\s+- \[)([^\]]*)\]")
        if not pattern.search(text):
            fail(f"template.yaml: cannot find the {loop} list")
        text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}, {c}]", text, count=1)
    mapping = re.compile(r"(\nMappings:\n  Automations:\n(?:    \w+: \{Service: \w+\}\n)+)")
    if not mapping.search(text):
        fail("template.yaml: cannot find Mappings/Automations")
    text = mapping.sub(lambda m: m.group(1) + f"    {c}: {{Service: {name}}}\n", text, count=1)
    names = [c + setting for setting in settings(options)]
    title = name.replace("_", " ").capitalize()
    group = f"      - Label: {{default: {title}}}\n        Parameters:\n" + "".join(
        f"          - {p}\n" for p in names
    )
    text = _insert_before(text, "\nParameters:\n", group)
    block = "".join(parameter(options, setting)[0] for setting in settings(options))
    text = _insert_before(text, "\nConditions:\n", f"\n  # ---- {name}\n{block}")
    if '"${SilenceAlarms}]' not in text:
        fail("template.yaml: cannot find the dashboard's alarm list (ending in ${SilenceAlarms}])")
    text = text.replace('"${SilenceAlarms}]', f'", "${{{c}FailedAlarm.Arn}}"${{SilenceAlarms}}]', 1)
    # The dead-letter rule of its trigger may send to the failed-events queue (its policy).
    rules = [f"{c}Function{'ApiCalls' if options.events else 'Schedule'}"]
    if options.states:
        rules.append(f"{c}FunctionStateChanges")
    for rule in rules:
        text = _insert_after_last(
            text,
            r'^ +"aws:SourceArn":  # rule list\n(?: +- !GetAtt \w+\.Arn\n)+',
            f"                  - !GetAtt {rule}.Arn\n",
            "the failed-events queue policy's rule list",
        )
    if not options.events:  # scheduled: a silence alarm, its condition and its dashboard entry
        text = _insert_after_last(
            text,
            r"^  \w+SilenceAlarmOn: .*\n",
            f'  {c}SilenceAlarmOn: !Not [!Equals [!Ref {c}SilenceAlarmHours, "0"]]\n',
            "the SilenceAlarmOn conditions",
        )
        text = _insert_after_last(
            text,
            r"^ +- !If \[\w+SilenceAlarmOn, .*\n",
            f'                      - !If [{c}SilenceAlarmOn, !Sub \', "${{{c}SilenceAlarm.Arn}}"\', ""]\n',
            "the dashboard's silence alarm list",
        )
    section = render(SKELETON / "template-section.yaml", options)
    return _insert_before(text, "\nOutputs:\n", section)


def wire_samconfig(options: Options, text: str) -> str:
    """samconfig.toml with the defaults of the automation's parameters."""
    match = re.search(r"parameter_overrides = \[\n(.*?)\n\]", text, re.DOTALL)
    if not match:
        fail("samconfig.toml: cannot find parameter_overrides = [ ... ]")
    lines = "".join(
        f'\n  "{options.camel}{setting}=\\"{parameter(options, setting)[1]}\\"",'
        for setting in settings(options)
    )
    return text[: match.end(1)] + lines + text[match.end(1) :]


def wire_readme(options: Options, text: str) -> str:
    """The README with a row in its automation table (the parameter table is regenerated from
    the template once that is written)."""
    lines = text.splitlines()
    header = next((i for i, line in enumerate(lines) if line.startswith("| automation | runs |")), None)
    if header is None:
        fail("README.md: cannot find the automation table")
    end = header
    while end + 1 < len(lines) and lines[end + 1].startswith("|"):
        end += 1
    name = options.name
    runs = "on CloudTrail " + ", ".join(f"`{e}`" for e in options.events) if options.events else "daily"
    if options.states:
        runs = "on EC2 state changes to " + ", ".join(f"`{s}`" for s in options.states) + ", and daily"
    does = (
        "tags running instances without a Name tag `NeedsName=true`"
        if options.mutating
        else "reports running instances without a Name tag"
    )
    row = f"| {name} | {runs} | (scaffolded example) {does} | [docs/{name}.md](docs/{name}.md) |"
    lines.insert(end + 1, row)
    return "\n".join(lines) + "\n"


def house_style(paths: list[Path]) -> None:
    """ruff's import order and format on the generated code (line breaks depend on the name)."""
    ruff = Path(sys.executable).with_name("ruff")
    python_files = [str(p) for p in paths if p.suffix == ".py"]
    if ruff.exists() and python_files:
        subprocess.run([str(ruff), "check", "--quiet", "--fix", "--select", "I", *python_files], check=False)
        subprocess.run([str(ruff), "format", "--quiet", *python_files], check=False)


def arguments(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(
        prog="new_automation.py", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("name", help="snake_case, at least two words (e.g. stale_ami_report)")
    parser.add_argument(
        "--trigger",
        default="schedule",
        help="schedule (default), cloudtrail:EventA,EventB (EC2 API calls, e.g. cloudtrail:RunInstances) "
        "or ec2-state:state,... (EC2 state-change notifications, e.g. ec2-state:running,terminated; "
        "with a daily schedule that converges)",
    )
    parser.add_argument(
        "--mutating",
        action="store_true",
        help="the example also tags the instances it finds (NeedsName=true): dry run, opt-out, idempotent",
    )
    args = parser.parse_args(argv)
    events, states = parse_trigger(args.trigger)
    return Options(args.name, events, args.mutating, states)


def main(argv: list[str]) -> int:
    options = arguments(argv)
    check_name(options.name, ROOT)
    # Everything that can refuse is done before anything is written.
    files = {f: ROOT / f for f in ("template.yaml", "samconfig.toml", "README.md")}
    template = wire_template(options, files["template.yaml"].read_text())
    samconfig = wire_samconfig(options, files["samconfig.toml"].read_text())
    readme = wire_readme(options, files["README.md"].read_text())
    created = render_files(options, ROOT)
    house_style([ROOT / p for p in created])
    files["template.yaml"].write_text(template)
    files["samconfig.toml"].write_text(samconfig)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from params_table import render as render_params  # reads the template just written

    files["README.md"].write_text(render_params(readme))
    name = options.name
    trigger = f"CloudTrail {', '.join(options.events)}" if options.events else "a schedule"
    if options.states:
        trigger = f"EC2 state changes to {', '.join(options.states)} and a schedule"
    mode = "mutating (tags NeedsName=true)" if options.mutating else "read-only"
    print(f"Created {name} ({mode}, on {trigger}):")
    for path in created:
        print(f"  {path}")
    print("  template.yaml: automation lists, parameters and their group, dashboard alarm, the function's")
    print("  section; samconfig.toml: defaults; README.md: a row, the parameter table regenerated")
    print(f"\nNext: put your logic in functions/{name}/ (decide.py pure, service.py the AWS calls),")
    print("keep app.PERMISSIONS and the template's Policies in step, then `make test`.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
