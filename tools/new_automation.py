"""Scaffold a new automation: `make new-automation NAME=snake_name`.

Creates functions/<name>/ (a working, read-only example: it reports running EC2 instances
without a Name tag; replace the logic), events/<name>/, tests/<name>/, demo/scenarios/<name>.py,
docs/<name>.md, and wires it into template.yaml (the automation lists, a schedule parameter, a
banner section with the function) and samconfig.toml. Then `make test` passes with it.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from string import Template

ROOT = Path(__file__).resolve().parent.parent
SKELETON = Path(__file__).resolve().parent / "scaffold"
NAME = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)+$")


def camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def check_name(name: str, root: Path) -> None:
    if not NAME.match(name):
        fail(f"{name!r}: use snake_case with at least two words, e.g. stale_ami_report")
    if (root / "functions" / name).exists():
        fail(f"functions/{name} already exists")
    if importlib.util.find_spec(name) is not None:
        fail(f"{name!r} is already an importable module; pick another name")
    if f"{camel(name)}Function:" in (root / "template.yaml").read_text():
        fail(f"template.yaml already has {camel(name)}Function")


def render_files(name: str, root: Path) -> list[Path]:
    values = {"name": name, "Camel": camel(name), "title": name.replace("_", " ").capitalize()}
    created = []
    for source in sorted(SKELETON.rglob("*.tmpl")):
        relative = Path(str(source.relative_to(SKELETON)).replace("__name__", name).removesuffix(".tmpl"))
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(Template(source.read_text()).substitute(values))
        created.append(relative)
    return created


def _insert_before(text: str, marker: str, block: str) -> str:
    if marker not in text:
        fail(f"template.yaml: cannot find {marker.strip()!r} to insert before")
    return text.replace(marker, block + marker, 1)


def wire_template(name: str, root: Path) -> None:
    path = root / "template.yaml"
    text = path.read_text()
    c = camel(name)
    for loop in ("Fn::ForEach::Automation", "Fn::ForEach::FunctionNames"):
        pattern = re.compile(rf"({re.escape(loop)}:\n\s+- Name\n\s+- \[)([^\]]*)\]")
        if not pattern.search(text):
            fail(f"template.yaml: cannot find the {loop} list")
        text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}, {c}]", text, count=1)
    mapping = re.compile(r"(\nMappings:\n  Automations:\n(?:    \w+: \{Service: \w+\}\n)+)")
    if not mapping.search(text):
        fail("template.yaml: cannot find Mappings/Automations")
    text = mapping.sub(lambda m: m.group(1) + f"    {c}: {{Service: {name}}}\n", text, count=1)
    title = name.replace("_", " ").capitalize()
    text = _insert_before(
        text, "\nParameters:\n", f"      - Label: {{default: {title}}}\n        Parameters: [{c}Schedule]\n"
    )
    text = _insert_before(
        text,
        "\nConditions:\n",
        f"""
  # ---- {name}
  {c}Schedule:
    Type: String
    Default: rate(1 day)
    AllowedPattern: ^(rate\\(\\d+ (minute|minutes|hour|hours|day|days)\\)|cron\\(.+\\))$
    Description: How often {name} runs (EventBridge rate or cron expression).
""",
    )
    marker = '"${FailedEventsAlarm.Arn}", '
    if marker not in text:
        fail("template.yaml: cannot find the dashboard's alarm list")
    text = text.replace(marker, marker + f'"${{{c}FailedAlarm.Arn}}", ', 1)
    section = (SKELETON / "template-section.yaml").read_text()
    text = _insert_before(text, "\nOutputs:\n", Template(section).substitute(name=name, Camel=c))
    path.write_text(text)


def wire_samconfig(name: str, root: Path) -> None:
    path = root / "samconfig.toml"
    text = path.read_text()
    match = re.search(r"parameter_overrides = \[\n(.*?)\n\]", text, re.DOTALL)
    if not match:
        fail("samconfig.toml: cannot find parameter_overrides = [ ... ]")
    line = f'  "{camel(name)}Schedule=\\"rate(1 day)\\"",'
    text = text[: match.end(1)] + "\n" + line + text[match.end(1) :]
    path.write_text(text)


def wire_readme(name: str, root: Path) -> None:
    """A row in the README's automation table, and the parameter table regenerated."""
    path = root / "README.md"
    lines = path.read_text().splitlines()
    header = next((i for i, line in enumerate(lines) if line.startswith("| automation | runs |")), None)
    if header is None:
        fail("README.md: cannot find the automation table")
    end = header
    while end + 1 < len(lines) and lines[end + 1].startswith("|"):
        end += 1
    lines.insert(end + 1, f"| {name} | daily | (scaffolded) describe it | [docs/{name}.md](docs/{name}.md) |")
    text = "\n".join(lines) + "\n"
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from params_table import render

    path.write_text(render(text))


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        fail("usage: new_automation.py snake_name")
    name = argv[0]
    check_name(name, ROOT)
    created = render_files(name, ROOT)
    ruff = Path(sys.executable).with_name("ruff")
    if ruff.exists():  # keep generated code in the house style
        python_files = [str(ROOT / p) for p in created if p.suffix == ".py"]
        subprocess.run([str(ruff), "check", "--quiet", "--fix", "--select", "I", *python_files], check=False)
        subprocess.run([str(ruff), "format", "--quiet", *python_files], check=False)
    wire_template(name, ROOT)
    wire_samconfig(name, ROOT)
    wire_readme(name, ROOT)
    print(f"Created {name}:")
    for path in created:
        print(f"  {path}")
    print("  template.yaml: automation lists, parameter, ParameterGroup, section; samconfig.toml: default;")
    print("  README.md: a row in the automation table, the parameter table regenerated")
    print(f"\nNext: put your logic in functions/{name}/decide.py, keep PERMISSIONS and the")
    print("template's Policies in step, then `make test`.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
