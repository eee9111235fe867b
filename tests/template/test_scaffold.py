"""`make new-automation` on a copy of the repo, three times - a read-only scheduled automation, a
mutating one on CloudTrail RunInstances/StartInstances, and a read-only one on EC2 state changes
(running, terminated) with its converging schedule - and then, in that copy, everything the
gate asks of an automation:

- in ONE pytest session: both automations' own tests, the reliability suites on both (fault
  injection, idempotency, bad input, and the observed-IAM judgement at the end of the session,
  which must judge all three and find no mismatch: it only judges an automation whose whole test
  folder and the reliability folder ran, so the reliability cases are selected by node id,
  never by ``-k``), the template, docs and convention checks, and ``sam validate --lint``;
- ruff (check and format), ``mypy --strict`` and the security scan (checkov), with the repo's
  own .venv-scan (built once, as ``make scan`` builds it, and shared with the copy).

Other automations may be mid-change: their own parametrized cases are not judged here, and a
template-wide check that fails in the copy counts only if it passes on the repo itself.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from samcli.yamlhelper import yaml_parse

from template_tools import ROOT

# One worker runs the module (xdist loadgroup): the repo copy and its scaffolding are made once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("scaffold")]
IGNORE = shutil.ignore_patterns(
    ".venv",
    ".venv-*",  # .venv-scan is linked below; .venv-mutate is never needed
    "mutants",
    ".aws-sam",
    ".git",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".hypothesis",
)
BIN = Path(sys.executable).parent
READ_ONLY = "example_probe"  # TRIGGER=schedule (the default)
MUTATING = "example_tagger"  # TRIGGER=cloudtrail:RunInstances,StartInstances MUTATING=1
WATCH = "example_watch"  # TRIGGER=ec2-state:running,terminated
NAMES = (READ_ONLY, MUTATING, WATCH)
ROOMS = {"__init__", "event", "config", "decide", "service", "run", "report", "app"}
# tests/reliability/test_bad_input.py swaps the valid sample's source for another one, but picks
# "aws.ec2" for every automation except owner_tagger - which for any other CloudTrail automation
# is the valid event itself. The copy gets the general form of that line (a no-op once the repo
# has it), so that the hand-written bad-input cases are all checked on the CloudTrail automation.
IAM_CHECK = "tests/reliability/test_iam_observed.py"  # with it, the reliability folder runs in full
CHECKS = ("tests/template/test_template.py", "tests/template/test_docs.py", "tests/shared/test_convention.py")
SOURCE_SWAP = '_with(base, "aws.events" if name == "owner_tagger" else "aws.ec2", "source")'
SOURCE_SWAP_FIXED = '_with(base, "aws.ec2" if base.get("source") == "aws.events" else "aws.events", "source")'


def run(args: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0", "PYTHONDONTWRITEBYTECODE": "1"}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def shared_scan_venv() -> None:
    """The repo's own .venv-scan, built if missing or stale (tools/security_scan.py, as ``make
    scan`` does), so that copies link to it instead of each building one (about a minute). A
    lock keeps two sessions from building it at once."""
    from tools import security_scan

    key = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
    with (Path(tempfile.gettempdir()) / f"ops-autopilot-venv-scan-{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        security_scan.ensure_scan_venv()


def copy_repo(destination: Path) -> Path:
    shutil.copytree(ROOT, destination, ignore=IGNORE)
    for venv in (".venv", ".venv-scan"):  # built from the same pins: reuse, do not rebuild
        if (ROOT / venv).is_dir():
            (destination / venv).symlink_to(ROOT / venv)
    if (ROOT / ".mypy_cache").is_dir():  # mypy then checks only what the scaffold added
        shutil.copytree(ROOT / ".mypy_cache", destination / ".mypy_cache")
    return destination


def new_automation(copy: Path, name: str, trigger: str | None = None, mutating: bool = False) -> None:
    """Through the Makefile target when .venv is current (make would rebuild it otherwise: its
    stamp is named after the pins' checksum); else through the tool itself."""
    cksum = run(["cksum", "requirements-dev.txt"], copy).stdout.split(" ")[0]
    if (copy / ".venv" / f".installed-{cksum}").exists() and shutil.which("make"):
        command = ["make", "--no-print-directory", "new-automation", f"NAME={name}"]
        command += [f"TRIGGER={trigger}"] if trigger else []
        command += ["MUTATING=1"] if mutating else []
    else:
        command = [sys.executable, "tools/new_automation.py", name]
        command += ["--trigger", trigger] if trigger else []
        command += ["--mutating"] if mutating else []
    made = run(command, copy)
    assert made.returncode == 0, made.stdout + made.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    shared_scan_venv()
    copy = copy_repo(tmp_path_factory.mktemp("scaffold") / "repo")
    new_automation(copy, READ_ONLY)
    new_automation(copy, MUTATING, "cloudtrail:RunInstances,StartInstances", mutating=True)
    new_automation(copy, WATCH, "ec2-state:running,terminated")
    bad_input = copy / "tests" / "reliability" / "test_bad_input.py"
    bad_input.write_text(bad_input.read_text().replace(SOURCE_SWAP, SOURCE_SWAP_FIXED))
    yield copy


def test_every_piece_is_made_and_wired(repo: Path) -> None:
    for name in NAMES:
        rooms = {p.stem for p in (repo / "functions" / name).glob("*.py")}
        assert rooms == ROOMS, rooms
        for path in (
            f"tests/{name}/test_{name}_decide.py",
            f"tests/{name}/test_{name}_handler.py",
            f"tests/{name}/scenario.py",
            f"demo/scenarios/{name}.py",
            f"docs/{name}.md",
        ):
            assert (repo / path).is_file(), path
        assert f"[docs/{name}.md](docs/{name}.md)" in (repo / "README.md").read_text()
    assert {p.name for p in (repo / "events" / READ_ONLY).glob("*.json")} == {
        "eventbridge.scheduled.json",
        "eventbridge.not_scheduled.json",
    }
    assert {p.name for p in (repo / "events" / MUTATING).glob("*.json")} == {
        "cloudtrail.run_instances.json",
        "cloudtrail.start_instances.json",
        "cloudtrail.run_instances.failed.json",
        "cloudtrail.not_handled.json",
    }
    assert {p.name for p in (repo / "events" / WATCH).glob("*.json")} == {
        "eventbridge.scheduled.json",
        "eventbridge.not_scheduled.json",
        "ec2.state_change.running.json",
        "ec2.state_change.terminated.json",
        "ec2.state_change.not_handled.json",
    }
    template = yaml_parse((repo / "template.yaml").read_text())
    resources, parameters = template["Resources"], template["Parameters"]
    scheduled = resources["ExampleProbeFunction"]["Properties"]
    assert scheduled["Events"]["Schedule"]["Properties"]["Schedule"] == {"Ref": "ExampleProbeSchedule"}
    assert {"ExampleProbeSchedule", "ExampleProbeNameTagKey"} <= set(parameters)
    tagger = resources["ExampleTaggerFunction"]["Properties"]
    pattern = tagger["Events"]["ApiCalls"]["Properties"]["Pattern"]
    assert pattern["source"] == ["aws.ec2"] and pattern["detail-type"] == ["AWS API Call via CloudTrail"]
    assert pattern["account"] == [{"Ref": "AWS::AccountId"}]
    assert pattern["detail"] == {
        "eventSource": ["ec2.amazonaws.com"],
        "eventName": ["RunInstances", "StartInstances"],
        "errorCode": [{"exists": False}],
    }
    assert not any(p.startswith(("ExampleTaggerSchedule", "ExampleTaggerSilence")) for p in parameters)
    watch = resources["ExampleWatchFunction"]["Properties"]["Events"]
    assert watch["Schedule"]["Properties"]["Schedule"] == {"Ref": "ExampleWatchSchedule"}
    assert watch["StateChanges"]["Properties"]["Pattern"] == {
        "account": [{"Ref": "AWS::AccountId"}],
        "source": ["aws.ec2"],
        "detail-type": ["EC2 Instance State-change Notification"],
        "detail": {"state": ["running", "terminated"]},
    }
    assert {"ExampleWatchSchedule", "ExampleWatchSilenceAlarmHours"} <= set(parameters)
    assert "ExampleWatchSilenceAlarm" in resources
    # Its own role (SAM then attaches no managed policy), its log group's policy, its rule may
    # dead-letter to the queue; scheduled: its silence alarm, off when its hours are 0.
    for camel in ("ExampleProbe", "ExampleTagger", "ExampleWatch"):
        assert resources[f"{camel}Function"]["Properties"]["Role"] == {
            "Fn::GetAtt": [f"{camel}FunctionRole", "Arn"]
        }
        assert "Policies" not in resources[f"{camel}Function"]["Properties"]
        assert "ManagedPolicyArns" not in resources[f"{camel}FunctionRole"]["Properties"]
        assert camel in template["Resources"]["Fn::ForEach::Automation"][1]
    queue_policy = str(resources["FailedEventsQueuePolicy"])
    assert "ExampleProbeFunctionSchedule" in queue_policy and "ExampleTaggerFunctionApiCalls" in queue_policy
    assert all(f"ExampleWatchFunction{rule}" in queue_policy for rule in ("Schedule", "StateChanges"))
    alarm = resources["ExampleProbeSilenceAlarm"]
    assert (
        alarm["Condition"] == "ExampleProbeSilenceAlarmOn"
        and "ExampleProbeSilenceAlarmOn" in template["Conditions"]
    )
    assert alarm["Properties"]["TreatMissingData"] == "breaching"
    assert "ExampleTaggerSilenceAlarm" not in resources
    role = resources["ExampleTaggerFunctionRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    statements = {s["Sid"]: s for s in role["Statement"]}
    assert statements["WriteOnlyTheNeedsNameTag"]["Condition"] == {
        "ForAllValues:StringEquals": {"aws:TagKeys": ["NeedsName"]},
        "Null": {"aws:TagKeys": "false"},
    }
    assert "ec2:CreateTags" not in str(resources["ExampleProbeFunction"]) + str(
        resources["ExampleProbeFunctionRole"]
    )
    samconfig = (repo / "samconfig.toml").read_text()
    assert '"ExampleProbeSchedule=\\"rate(1 day)\\""' in samconfig
    assert '"ExampleProbeSilenceAlarmHours=\\"26\\""' in samconfig
    assert '"ExampleTaggerNameTagKey=\\"Name\\""' in samconfig


@dataclass(frozen=True)
class Outcome:
    nodeid: str
    result: str  # passed, failed, error, skipped
    message: str


def outcomes(junit: Path) -> list[Outcome]:
    found = []
    for case in ET.parse(junit).getroot().iter("testcase"):  # noqa: S314 - our own pytest's report
        module = case.get("classname", "").replace(".", "/") + ".py"
        result, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            element = case.find(kind)
            if element is not None:
                result = "failed" if kind == "failure" else kind
                message = (element.get("message") or "") + "\n" + (element.text or "")
        found.append(Outcome(f"{module}::{case.get('name')}", result, message))
    return found


def ours(nodeid: str) -> bool:
    """A case of one of the generated automations: in its folder, or parametrized with its name."""
    if any(nodeid.startswith(f"tests/{name}/") for name in NAMES):
        return True
    params = re.search(r"\[(.*)\]$", nodeid)
    return bool(params) and bool(set(params.group(1).split("-")) & set(NAMES))  # type: ignore[union-attr]


def test_the_generated_automations_pass_every_check(repo: Path, tmp_path: Path) -> None:
    pytest_args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"]
    collected = run([*pytest_args, "--collect-only", "tests/reliability", *CHECKS], repo)
    nodes = [line for line in collected.stdout.splitlines() if "::" in line]
    reliability = [n for n in nodes if n.startswith("tests/reliability/") and ours(n)]
    assert len(reliability) >= len(NAMES) * 6, collected.stdout[-3000:] + collected.stderr[-3000:]
    # The other automations' cases prove nothing about the generated ones (the main suite runs
    # them on the repo): only the generated automations' cases and the template-wide checks.
    checks = [n for n in nodes if not n.startswith("tests/reliability/") and (ours(n) or "[" not in n)]
    assert len(checks) >= len(NAMES) * 8, collected.stdout[-3000:]
    junit = tmp_path / "junit.xml"
    session = run(
        [
            *pytest_args,
            f"--junitxml={junit}",
            *(f"tests/{name}" for name in NAMES),
            *reliability,
            IAM_CHECK,
            *checks,
            "tests/template/test_sam_cli.py::test_sam_validate_lint_is_clean",
        ],
        repo,
    )
    assert junit.exists(), session.stdout[-3000:] + session.stderr[-3000:]
    results = outcomes(junit)
    mine = [o for o in results if ours(o.nodeid)]
    bad = [f"{o.nodeid}: {o.result}\n{o.message[-1500:]}" for o in mine if o.result != "passed"]
    assert not bad, "\n\n".join(bad)
    # The observed-IAM judgement (end of the session, tests/conftest.py): judged, no mismatch.
    figures = session.stdout[session.stdout.find("reliability and IAM figures") :]
    for name in NAMES:
        judged = rf"^IAM {name}: (\d+) actions granted, (\d+) observed"
        assert re.search(judged, figures, re.MULTILINE), f"observed-IAM not judged: {name}\n{figures}"
        mismatch = f"granted_actions_are_exactly_the_observed_calls[{name}]"
        assert mismatch not in session.stdout, session.stdout[-4000:]
        assert sum(o.nodeid.startswith(f"tests/{name}/") for o in mine) >= 8, name
    # Template-wide checks (no automation parameter): they count unless the repo fails them too.
    wide = [o.nodeid for o in results if "[" not in o.nodeid and o.result in {"failed", "error"}]
    if wide:
        original = run([*pytest_args, *wide], ROOT)
        fails_there_too = set(re.findall(r"^(?:FAILED|ERROR) (\S+)", original.stdout, re.MULTILINE))
        assert set(wide) <= fails_there_too, (set(wide) - fails_there_too, session.stdout[-4000:])


def test_the_generated_code_passes_ruff_mypy_and_the_security_scan(repo: Path) -> None:
    paths = [
        *(f"functions/{n}" for n in NAMES),
        *(f"tests/{n}" for n in NAMES),
        *(f"demo/scenarios/{n}.py" for n in NAMES),
    ]
    for check in (["check", *paths], ["format", "--check", *paths]):
        ruff = run([str(BIN / "ruff"), *check], repo)
        assert ruff.returncode == 0, ruff.stdout + ruff.stderr
    mypy = run([str(BIN / "mypy"), *(f"functions/{n}" for n in NAMES)], repo)  # strict: pyproject
    assert mypy.returncode == 0, mypy.stdout + mypy.stderr
    scan = run([sys.executable, "tools/security_scan.py"], repo)  # builds .venv-scan if the repo has none
    assert scan.returncode == 0, scan.stdout[-4000:] + scan.stderr[-4000:]
    assert "no unsuppressed findings" in scan.stdout


@pytest.fixture
def fresh_copy(tmp_path: Path) -> Path:
    return copy_repo(tmp_path / "repo")


def test_bad_or_taken_names_and_bad_options_are_refused(fresh_copy: Path) -> None:
    tool = [sys.executable, "tools/new_automation.py"]
    for args, reason in (
        (["Probe"], "snake_case"),
        (["json"], "snake_case"),
        (["website_health_check"], "already exists"),
        (["a_" + "x" * 40], "at most 32 characters"),
        (["ok_name", "--trigger", "sqs"], "use schedule, cloudtrail:"),
        (["ok_name", "--trigger", "cloudtrail:"], "use schedule, cloudtrail:"),
        (["ok_name", "--trigger", "ec2-state:"], "use schedule, cloudtrail:"),
        (["ok_name", "--trigger", "ec2-state:running,rebooting"], "not an EC2 instance state"),
        (["ok_name", "--trigger", "ec2-state:running,running"], "a state is given twice"),
        (["ok_name", "--trigger", "cloudtrail:runInstances"], "not an EC2 API call name"),
        (["ok_name", "--trigger", "cloudtrail:RunInstances,RunInstances"], "given twice"),
    ):
        result = run([*tool, *args], fresh_copy)
        assert result.returncode == 2 and reason in result.stderr, (args, result.stderr)
    assert not (fresh_copy / "functions" / "ok_name").exists()


def test_the_longest_name_keeps_every_generated_line_within_ruffs_limit(fresh_copy: Path) -> None:
    """Text that grows with the name (docstrings, comments) must still fit: ruff on the code of
    a 32-character name, for every trigger and mode."""
    triggers = ("schedule", "cloudtrail:RunInstances,StartInstances", "ec2-state:running,terminated")
    made = []
    for n, (trigger, mutating) in enumerate((t, m) for t in triggers for m in (False, True)):
        name = f"long_automation_name_number_{n}xxx"
        assert len(name) == 32
        args = [sys.executable, "tools/new_automation.py", name, "--trigger", trigger]
        result = run(args + (["--mutating"] if mutating else []), fresh_copy)
        assert result.returncode == 0, result.stderr
        made += [f"functions/{name}", f"tests/{name}", f"demo/scenarios/{name}.py"]
    ruff = run([str(BIN / "ruff"), "check", "--select", "E501", *made], fresh_copy)
    assert ruff.returncode == 0, ruff.stdout
