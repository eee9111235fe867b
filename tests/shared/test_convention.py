"""One shape for every automation (docs/adding-an-automation.md), held for every folder under
functions/ - the five of today and any made by `make new-automation`:

- the same rooms, and no others: event, config, decide, service, run, report, app (+ store);
- app.py declares PERMISSIONS (the runner's included) and AUTOMATION wired to the rooms, and
  its handler only calls the shared runner;
- the pure rooms (event, decide, report) do no I/O and read no clock;
- config.py is one frozen Config with from_env.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
from pathlib import Path

import pytest

from autopilot import runner
from template_tools import ROOT

pytestmark = pytest.mark.unit

FUNCTIONS = ROOT / "functions"
NAMES = sorted(p.parent.name for p in FUNCTIONS.glob("*/app.py"))
ROOMS = ("event", "config", "decide", "service", "run", "report", "app")
OPTIONAL = ("store",)
PURE = ("event", "decide", "report")
# What a pure room may not import: AWS, the network, the layer's AWS helpers.
IMPURE_MODULES = ("boto3", "botocore", "requests", "urllib3", "socket", "ssl", "http", "autopilot.aws")
# What a pure room may not call: clocks and sending.
IMPURE_CALLS = {"now", "utcnow", "today", "time", "monotonic", "publish", "send", "sleep"}


def room_files(name: str, room: str, functions: Path = FUNCTIONS) -> list[Path]:
    """The room's module, or the modules of its package (decide/ when it grew)."""
    folder = functions / name
    if (folder / room).is_dir():
        return sorted((folder / room).glob("*.py"))
    return [folder / f"{room}.py"] if (folder / f"{room}.py").exists() else []


def test_there_are_automations() -> None:
    assert len(NAMES) >= 5, NAMES


def misfits(name: str, functions: Path = FUNCTIONS) -> tuple[list[str], list[str]]:
    """(missing rooms, modules outside the convention) of functions/<name>."""
    folder = functions / name
    missing = [room for room in ROOMS if not room_files(name, room, functions)]
    present = {p.stem for p in folder.glob("*.py")} | {p.name for p in folder.iterdir() if p.is_dir()}
    extra = sorted(present - {*ROOMS, *OPTIONAL, "__init__", "__pycache__"})
    return missing, extra


@pytest.mark.parametrize("name", NAMES)
def test_every_automation_has_the_same_rooms_and_no_others(name: str) -> None:
    missing, extra = misfits(name)
    assert not missing, f"functions/{name} lacks {missing} (docs/adding-an-automation.md)"
    assert not extra, f"functions/{name} has modules outside the convention: {extra}"


@pytest.mark.parametrize("name", NAMES)
def test_the_handler_goes_through_the_runner(name: str) -> None:
    app = importlib.import_module(f"{name}.app")
    automation = app.AUTOMATION
    assert isinstance(automation, runner.Automation)
    assert automation.name == name
    run = importlib.import_module(f"{name}.run")
    report = importlib.import_module(f"{name}.report")
    event = importlib.import_module(f"{name}.event")
    assert automation.plan is run.plan and automation.act is run.act
    assert automation.report is report.mail and automation.counts is report.counts
    assert automation.parse.__module__.startswith((f"{name}.event", "autopilot.events")), automation.parse
    assert hasattr(event, "parse"), f"{name}.event has no parse()"
    assert runner.PERMISSIONS <= app.PERMISSIONS, "PERMISSIONS must include the runner's"
    tree = ast.parse((FUNCTIONS / name / "app.py").read_text())
    functions = [n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    assert functions == ["lambda_handler"], f"app.py holds logic: {functions}"
    handler = next(n for n in tree.body if isinstance(n, ast.FunctionDef))
    calls = [ast.unparse(n.func) for n in ast.walk(handler) if isinstance(n, ast.Call)]
    assert calls == ["runner.handle"], f"the handler must only call runner.handle, calls {calls}"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("room", PURE)
def test_pure_rooms_do_no_io_and_read_no_clock(name: str, room: str) -> None:
    for path in room_files(name, room):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                modules += [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.module == "autopilot":
                    modules += [f"autopilot.{a.name}" for a in node.names]
                bad = [m for m in modules if m.split(".")[0] in IMPURE_MODULES or m in IMPURE_MODULES]
                assert not bad, f"{path.relative_to(ROOT)}:{node.lineno} imports {bad}"
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                assert called not in IMPURE_CALLS, f"{path.relative_to(ROOT)}:{node.lineno} calls {called}()"


@pytest.mark.parametrize("name", NAMES)
def test_config_is_one_frozen_dataclass_from_the_environment(name: str) -> None:
    config = importlib.import_module(f"{name}.config").Config
    assert dataclasses.is_dataclass(config) and config.__dataclass_params__.frozen  # type: ignore[attr-defined]
    assert callable(getattr(config, "from_env", None))


def test_the_room_check_is_not_vacuous(tmp_path: Path) -> None:
    fake = tmp_path / "fake_thing"
    fake.mkdir()
    for room in ("event", "decide", "app", "helpers"):
        (fake / f"{room}.py").write_text("")
    assert misfits("fake_thing", tmp_path) == (["config", "service", "run", "report"], ["helpers"])
