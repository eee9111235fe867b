"""The markers say what a test needs (pyproject.toml): ``unit`` is pure logic - no AWS, not
even moto, and no local server; ``integration`` runs against moto or local servers; ``slow``
takes more than a few seconds. Read from the test files themselves with ast (nothing is
imported or run), so that ``-m unit`` selects exactly the tests that need nothing.

What counts as needing AWS or a server: requesting a fixture that does (the shared ones of
tests/conftest.py - stack_env, mailbox, calls, topic_arn, lambda_context - or any fixture
built on them, or whose code makes clients, servers or subprocesses), or code of the test's
own - followed through the helpers and fixtures of tests/ it uses - that does: boto3, an
autopilot.aws client, moto's backends, a Stubber, a handler, the runner, a function's
impure rooms (service, run, store), an HTTP server, a subprocess."""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from template_tools import ROOT

pytestmark = pytest.mark.unit

TESTS = ROOT / "tests"
FUNCTIONS = ROOT / "functions"
AUTOMATIONS = frozenset(p.parent.name for p in FUNCTIONS.glob("*/app.py"))
# The fixtures of tests/conftest.py that put something into moto or record the calls made to it.
AWS_FIXTURES = frozenset({"stack_env", "mailbox", "calls", "topic_arn", "lambda_context"})
# Names whose use means AWS (moto), a local server or another process.
IMPURE_NAMES = frozenset(
    {
        "boto3",
        "mock_aws",
        "ec2_backends",
        "Stubber",
        "CallRecorder",
        "lambda_handler",
        "create_outbox_table",
        "ThreadingHTTPServer",
        "HTTPServer",
        "subprocess",
    }
)
# Modules (as imported) whose functions call AWS: the impure rooms of every automation, the
# runner's handle and the layer's AWS helpers, outbox and mail sending.
IMPURE_ROOMS = ("service", "run", "store", "app")
IMPURE_LAYER = (
    "autopilot.aws.client",
    "autopilot.aws.paginate",
    "autopilot.aws.running_instances",
    "autopilot.outbox",
    "autopilot.runner.handle",
    "autopilot.notify.publish",
)
KINDS = ("unit", "integration", "slow")


def impure_module(qualified: str) -> bool:
    parts = qualified.split(".")
    if parts[0] in AUTOMATIONS and len(parts) > 1 and parts[1] in IMPURE_ROOMS:
        return not (len(parts) > 2 and parts[1] == "app" and parts[2] in {"PERMISSIONS", "AUTOMATION"})
    return qualified.startswith(IMPURE_LAYER)


@dataclass
class Module:
    """One Python file under tests/: its top-level functions and classes, its fixtures and
    what each imported name refers to."""

    path: Path
    tree: ast.Module
    defs: dict[str, ast.AST] = field(default_factory=dict)
    fixtures: dict[str, ast.FunctionDef] = field(default_factory=dict)
    imports: dict[str, str] = field(default_factory=dict)  # local name -> module[.name]

    @classmethod
    def read(cls, path: Path) -> Module:
        module = cls(path, ast.parse(path.read_text()))
        for node in module.tree.body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                module.defs[node.name] = node
                if isinstance(node, ast.FunctionDef) and any(_is_fixture(d) for d in node.decorator_list):
                    module.fixtures[node.name] = node
            elif isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    module.imports[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    module.imports[alias.asname or alias.name.split(".")[0]] = alias.name
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name):
                        module.defs[target.id] = node
        return module


def _is_fixture(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return ast.unparse(target) in {"pytest.fixture", "fixture"}


@functools.cache
def module_at(path: Path) -> Module:
    return Module.read(path)


def source_of(qualified: str) -> tuple[Path, str] | None:
    """The file under tests/ an imported ``package.module.name`` comes from, and the name."""
    parts = qualified.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        candidate = TESTS.joinpath(*parts[:cut]).with_suffix(".py")
        if candidate.exists():
            return candidate, parts[cut]
    return None


def conftests(path: Path) -> list[Path]:
    """The conftest.py files that apply to a test file, nearest first."""
    found = []
    for folder in path.parents:
        if (folder / "conftest.py").exists():
            found.append(folder / "conftest.py")
        if folder == TESTS:
            break
    return found


def fixture_def(path: Path, name: str) -> tuple[Path, ast.FunctionDef] | None:
    """Where the fixture ``name`` that a test in ``path`` gets is defined."""
    for candidate in [path, *conftests(path)]:
        module = module_at(candidate)
        if name in module.fixtures:
            return candidate, module.fixtures[name]
        imported = module.imports.get(name)
        found = source_of(imported) if imported else None
        if found and found[1] in module_at(found[0]).fixtures:
            return found[0], module_at(found[0]).fixtures[found[1]]
    return None


def parameters(node: ast.FunctionDef) -> list[str]:
    return [a.arg for a in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]]


def needs(path: Path, node: ast.AST, seen: frozenset[tuple[Path, str]] = frozenset()) -> str | None:
    """Why ``node`` (a test, a fixture, a helper of ``path``) needs AWS or a server, or None."""
    key = (path, getattr(node, "name", f"line {getattr(node, 'lineno', 0)}"))
    if key in seen:
        return None
    seen = seen | {key}
    module = module_at(path)
    if isinstance(node, ast.FunctionDef):
        for name in parameters(node):
            if name in AWS_FIXTURES:
                return f"fixture {name}"
            found = fixture_def(path, name)
            if found and (why := needs(found[0], found[1], seen)):
                return f"fixture {name} -> {why}"
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and sub.id in IMPURE_NAMES:
            return sub.id
        if isinstance(sub, ast.Attribute) and sub.attr in IMPURE_NAMES:
            return ast.unparse(sub)
        if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name):
            qualified = module.imports.get(sub.value.id)
            if qualified and impure_module(f"{qualified}.{sub.attr}"):
                return ast.unparse(sub)
        if isinstance(sub, ast.Name) and (why := name_needs(path, sub.id, node, seen)):
            return why
    return None


def name_needs(path: Path, name: str, user: ast.AST, seen: frozenset[tuple[Path, str]]) -> str | None:
    """Why what ``name`` refers to in ``path`` (a helper, a class, an import) needs AWS or a server."""
    module = module_at(path)
    target = module.defs.get(name)
    if target is not None and target is not user and (why := needs(path, target, seen)):
        return f"{name} -> {why}"
    qualified = module.imports.get(name)
    if qualified is None:
        return None
    if impure_module(qualified):
        return qualified
    found = source_of(qualified)
    helper = module_at(found[0]).defs.get(found[1]) if found else None
    if found and helper is not None and (why := needs(found[0], helper, seen)):
        return f"{name} -> {why}"
    return None


def marks_of(decorators: list[ast.expr]) -> set[str]:
    found = set()
    for decorator in decorators:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        text = ast.unparse(target)
        if text.startswith("pytest.mark.") and text.split(".")[2] in KINDS:
            found.add(text.split(".")[2])
    return found


def module_marks(module: Module) -> set[str]:
    node = module.defs.get("pytestmark")
    if not isinstance(node, ast.Assign | ast.AnnAssign) or node.value is None:
        return set()
    value = node.value
    return marks_of(list(value.elts) if isinstance(value, ast.List | ast.Tuple) else [value])


@dataclass(frozen=True)
class Case:
    path: Path
    name: str
    marks: frozenset[str]
    needs: str | None

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}::{self.name} {sorted(self.marks)}"


def collected() -> list[Case]:
    found = []
    for path in sorted(TESTS.rglob("test_*.py")):
        module = module_at(path)
        marks = module_marks(module)
        for node in module.tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                own = frozenset(marks | marks_of(node.decorator_list))
                found.append(Case(path, node.name, own, needs(path, node)))
    return found


CASES = collected()


def test_the_walk_sees_the_tests_and_what_they_need() -> None:
    by_name = {(t.path.name, t.name): t for t in CASES}
    assert len(CASES) > 300
    assert by_name["test_shared_basics.py", "test_chunked"].needs is None
    handler = by_name["test_patch_sweeper_handler.py", "test_120_targets_make_exactly_3_send_commands"]
    assert handler.needs is not None and handler.needs.startswith("fixture env -> fixture stack_env")


def test_every_test_says_what_it_needs() -> None:
    unmarked = [str(t) for t in CASES if not t.marks]
    both = [str(t) for t in CASES if {"unit", "integration"} <= t.marks]
    assert not unmarked, "mark these unit, integration or slow:\n" + "\n".join(unmarked)
    assert not both, "a test is unit or integration, not both:\n" + "\n".join(both)


def test_unit_tests_need_no_aws_and_no_server() -> None:
    wrong = [f"{t}: {t.needs}" for t in CASES if "unit" in t.marks and t.needs]
    assert not wrong, "unit tests that use AWS (moto) or a server - mark them integration:\n" + "\n".join(
        wrong
    )


def test_integration_tests_use_moto_or_a_server() -> None:
    wrong = [str(t) for t in CASES if "integration" in t.marks and not t.needs]
    assert not wrong, "integration tests that need neither moto nor a server - mark them unit:\n" + "\n".join(
        wrong
    )
