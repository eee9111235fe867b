"""Mutation testing of the decision and safety modules, and of the template's IAM policies.

    make mutate                                        # everything (Python and template)
    make mutate MUTATE_ARGS="idle_stopper layer.tags"  # some groups only (--list names them)
    make mutate MUTATE_ARGS=--template                 # only the IAM policy pass
    make mutate MUTATE_ARGS="--jobs 1 --keep"          # one worker; keep the temporary copies

1. builds .venv-mutate from requirements-dev.txt plus requirements-mutate.txt (mutmut) when it
   is missing or out of date (a stamp named after both files' checksum, as tools/security_scan.py
   does for .venv-scan), and runs itself again in it. .venv is never touched;
2. copies the working tree to a temporary directory (the ignore patterns of
   tests/template/test_scaffold.py, no virtualenvs): every mutant is written there, never into
   the tree, so a crash cannot leave one behind;
3. Python: for each group, mutmut on the group's modules against the group's tests (never the
   tests marked slow, never the template's: template_tests()). mutmut runs each mutant only
   against the tests that reach the mutated function (it records which in a first, clean run);
4. template: policy mutants of every IAM statement of every function's Policies and every
   resource policy (KMS key, SNS topic, SQS queue, bucket): the statement dropped, each Condition
   key dropped, the Resource widened to "*", the Effect flipped, one Action of a Deny dropped;
   each written to a copy's template.yaml and judged by the tests that judge IAM
   (template_tests());
5. writes docs/mutation.json, renders it into the "Mutation testing" section of
   docs/benchmarks.md (``make bench`` keeps that section: bench/report.py) and prints every
   surviving mutant (file:line and the diff).

A run of some groups only replaces their rows in docs/mutation.json and keeps the others.
"""

from __future__ import annotations

import argparse
import ast
import copy
import hashlib
import importlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
import venv
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEV_REQUIREMENTS = ROOT / "requirements-dev.txt"
MUTATE_REQUIREMENTS = ROOT / "requirements-mutate.txt"
MUTATE_VENV = ROOT / ".venv-mutate"
RESULTS = ROOT / "docs" / "mutation.json"
BENCHMARKS = ROOT / "docs" / "benchmarks.md"
SECTION = "## Mutation testing"
LAYER = "layers/autopilot/python/"
FUNCTIONS = "functions/"

# tests/template/test_scaffold.py's IGNORE (the virtualenvs are never copied), and mutmut's own output.
IGNORE = shutil.ignore_patterns(
    ".venv",
    ".venv-scan",
    ".venv-mutate",
    ".aws-sam",
    ".git",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".hypothesis",
    "mutants",
)
# For every mutant run: no slow tests; the property tests with a fixed seed (the same examples in
# every run, so a score does not move by chance). Marker filtering also keeps the session-end
# observed-IAM judgement out (tests/conftest.py judges only unfiltered sessions).
PYTEST_ARGS = ("-m", "not slow", "-p", "no:cacheprovider", "--hypothesis-seed=0")
# pytest 9 dropped Node._nodeid, which mutmut 3.7.0's stats collector reads (mutmut 3.8 reads
# nodeid but needs click>=8.4.2, and aws-sam-cli pins click==8.1.8): a plugin in the copy sets it.
COMPAT_PLUGIN = "mutate_pytest9_compat"
COMPAT_SOURCE = '''"""Written by tools/mutate.py into its temporary copy only: see COMPAT_PLUGIN there."""


def pytest_collection_modifyitems(items):
    for item in items:
        item._nodeid = item.nodeid
'''


@dataclass(frozen=True)
class Group:
    """Modules mutated together, against the tests that can judge them (one mutmut session)."""

    name: str
    modules: tuple[str, ...]  # repository paths: modules or packages
    tests: tuple[str, ...]  # test folders or files (slow tests are left out in any case)
    rule: str  # the PRODUCT.md safety rules these modules decide


LAYER_PKG = LAYER + "autopilot/"
GROUPS: tuple[Group, ...] = (
    Group(
        "idle_stopper",
        ("functions/idle_stopper/decide.py",),
        ("tests/idle_stopper",),
        "2 (never stopped: ASG/EKS/Spot/instance store/opt-out/too little data/protected; the cap)",
    ),
    Group(
        "owner_tagger",
        ("functions/owner_tagger/decide",),
        ("tests/owner_tagger",),
        "an existing Owner is never overwritten; only the owner key is written",
    ),
    Group(
        "patch_sweeper",
        ("functions/patch_sweeper/decide.py",),
        ("tests/patch_sweeper",),
        "AutoPatch=false instances are never patched; what could not be patched is reported",
    ),
    Group(
        "snapshot_rotator",
        ("functions/snapshot_rotator/decide",),
        ("tests/snapshot_rotator",),
        "1 (a snapshot is deleted only if ours, not among the newest kept, not AMI-used, no failed new one)",
    ),
    Group(
        "website_health_check",
        ("functions/website_health_check/decide.py",),
        ("tests/website_health_check",),
        "mail on the change only (down, recovered), never every 5 minutes",
    ),
    Group(
        "layer.tags",
        (LAYER_PKG + "tags.py",),
        (
            "tests/shared",
            "tests/idle_stopper/test_idle_stopper_decide.py",
            "tests/patch_sweeper/test_patch_sweeper_decide.py",
            "tests/snapshot_rotator/test_snapshot_rotator_decide_selection.py",
            "tests/owner_tagger/test_owner_tagger_decide_plan.py",
            "tests/owner_tagger/test_owner_tagger_decide_identity.py",
        ),
        "2 and the opt-out words of every opt-out tag; tag keys and values EC2 accepts",
    ),
    Group(
        "layer.runner",
        (LAYER_PKG + "runner.py", LAYER_PKG + "outbox.py"),
        ("tests/shared", "tests/reliability"),
        "4 (never twice, never lost: the claim, the outbox, marked sent only after SNS took it)",
    ),
    Group(
        "layer.events",
        (LAYER_PKG + "events.py",),
        ("tests/shared", "tests/reliability", *(f"tests/{n}/test_{n}_event.py" for n in (
            "idle_stopper", "owner_tagger", "patch_sweeper", "snapshot_rotator", "website_health_check"))),
        "5 and 7 (a malformed, foreign or stale event changes nothing; time is the clock's)",
    ),
)  # fmt: skip
TEMPLATE_GROUP = "template"


def template_tests(root: Path) -> list[str]:
    """The tests that judge the template's IAM: the template checks, the automations' own IAM
    and template tests, the observed-IAM test (and tests/template/test_iam*.py once they exist).
    tests/template's other files (docs, sam validate/build, the scaffold) judge no policy."""
    found = ["tests/template/test_template.py"]
    found += sorted(str(p.relative_to(root)) for p in root.glob("tests/template/test_iam*.py"))
    found += sorted(str(p.relative_to(root)) for p in root.glob("tests/*/test_*_template.py"))
    found += sorted(str(p.relative_to(root)) for p in root.glob("tests/*/test_*_iam.py"))
    found.append("tests/reliability/test_iam_observed.py")
    return [t for t in dict.fromkeys(found) if (root / t).exists()]


# ---- the virtualenv ---------------------------------------------------------------------------


def _venv_python() -> Path:
    return MUTATE_VENV / "bin" / "python"


def ensure_mutate_venv() -> Path:
    digest = hashlib.sha256(DEV_REQUIREMENTS.read_bytes() + MUTATE_REQUIREMENTS.read_bytes()).hexdigest()[:16]
    stamp = MUTATE_VENV / f".installed-{digest}"
    if not stamp.exists():
        print(f"Setting up {MUTATE_VENV.name} from {DEV_REQUIREMENTS.name} + {MUTATE_REQUIREMENTS.name} ...")
        venv.EnvBuilder(clear=True, with_pip=True).create(MUTATE_VENV)
        pip = [str(_venv_python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, "-r", str(DEV_REQUIREMENTS), "-r", str(MUTATE_REQUIREMENTS)], check=True)
        stamp.touch()
    return _venv_python()


def _in_mutate_venv() -> bool:
    return Path(sys.prefix).resolve() == MUTATE_VENV.resolve()


# ---- results ------------------------------------------------------------------------------------


@dataclass
class Survivor:
    where: str  # file:line
    mutant: str  # mutmut's name, or the policy mutation
    status: str
    diff: str


@dataclass
class Row:
    kind: str  # "python" or "template"
    group: str
    module: str  # a file (Python) or a resource (template)
    mutants: int = 0
    killed: int = 0
    survived: int = 0
    timeout: int = 0
    no_tests: int = 0  # counted as survived too: no test reaches the mutant at all
    survivors: list[Survivor] = field(default_factory=list)
    error: str = ""
    failing: list[str] = field(default_factory=list)  # tests failing unmutated: left out of the run

    @property
    def score(self) -> float:
        return 100.0 * (self.killed + self.timeout) / self.mutants if self.mutants else 0.0

    def add(self, status: str) -> bool:
        """Counts one mutant; True when it survived."""
        self.mutants += 1
        if status in ("killed", "caught by type check"):
            self.killed += 1
        elif status in ("timeout", "segfault"):  # mutmut names the CPU limit's SIGKILL a segfault
            self.timeout += 1
        else:  # survived, no tests, suspicious, not checked
            self.survived += 1
            self.no_tests += status == "no tests"
            return True
        return False

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["score"] = round(self.score, 1)
        return data


# ---- the copy ---------------------------------------------------------------------------------


def import_path(repo_path: str) -> str:
    """functions/idle_stopper/decide.py -> idle_stopper/decide.py (the path Python imports it by)."""
    for base in (FUNCTIONS, LAYER):
        if repo_path.startswith(base):
            return repo_path[len(base) :]
    raise ValueError(f"{repo_path} is neither under {FUNCTIONS} nor under {LAYER}")


def copy_tree(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination, ignore=IGNORE, symlinks=True)  # copy2: times kept
    return destination


def export_rev(rev: str, destination: Path) -> Path:
    """The tree of commit ``rev`` (git archive: nothing in the checkout changes), plus the working
    tree's tests/*/test_mutants_*.py (the tests written for this tool's survivors)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", rev], capture_output=True, check=True
    ).stdout
    destination.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(destination, filter="data")
    for test in ROOT.glob("tests/*/test_mutants_*.py"):
        shutil.copy2(test, destination / test.relative_to(ROOT))
    return destination


def _link_packages(base: Path, modules: Sequence[str]) -> None:
    """mutmut names a mutant after its file's path from the project root, and its trampolines
    compare that name with the module's ``__name__``: ``idle_stopper/decide.py`` must be where
    ``idle_stopper.decide`` is found. The tests find it in functions/ (pyproject's pythonpath,
    as Lambda does), so the top package gets a link at the root: <root>/idle_stopper ->
    functions/idle_stopper. mutmut reads the original there and writes the mutants through
    mutants/idle_stopper into mutants/functions/idle_stopper, where the tests import them."""
    for repo_path in modules:
        top = import_path(repo_path).split("/")[0]
        link = base / top
        if not link.is_symlink():
            link.symlink_to(Path(repo_path[: len(repo_path) - len(import_path(repo_path))]) / top)


def _python_files(root: Path, repo_path: str) -> list[str]:
    path = root / repo_path
    if path.is_dir():
        return sorted(str(p.relative_to(root)) for p in path.rglob("*.py"))
    return [repo_path]


def _toml_list(values: Sequence[str]) -> str:
    return json.dumps(list(values))


# ---- Python: mutmut -------------------------------------------------------------------------


def run_group(group: Group, pristine: Path, work: Path, jobs: int) -> tuple[list[Row], float]:
    started = time.monotonic()
    root = copy_tree(pristine, work / group.name)
    copy_tree(pristine, root / "mutants")
    for base in (root, root / "mutants"):
        _link_packages(base, group.modules)
    (root / "mutants" / f"{COMPAT_PLUGIN}.py").write_text(COMPAT_SOURCE)
    for repo_path in (f for m in group.modules for f in _python_files(pristine, m)):
        undecorate_classes(root / repo_path)
    sources = [import_path(m) for m in group.modules]
    # The template's tests judge template.yaml, never Python: left out (the template pass runs them).
    ignore = [f"--ignore={test}" for test in template_tests(pristine)]
    # mutmut needs every selected test to pass unmutated. Tests that fail already (an edit in
    # progress elsewhere) can kill nothing: they are left out, and named in the results.
    failing = _failing_tests(root / "mutants", [*PYTEST_ARGS, *ignore, *group.tests])
    ignore += [f"--deselect={test}" for test in failing]
    pyproject = root / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text()
        + "\n[tool.mutmut]\n"
        + f"source_paths = {_toml_list(sources)}\n"
        + f"pytest_add_cli_args_test_selection = {_toml_list(group.tests)}\n"
        + f"pytest_add_cli_args = {_toml_list(['-p', COMPAT_PLUGIN, *PYTEST_ARGS, *ignore])}\n"
        + "use_git_change_detection = false\n"
    )
    log = root / "mutmut.log"
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0"}
    mutmut = Path(sys.executable).parent / "mutmut"
    with log.open("w") as out:
        result = subprocess.run(
            [str(mutmut), "run", "--max-children", str(jobs)], cwd=root, stdout=out, stderr=subprocess.STDOUT,
            env=env, check=False,
        )  # fmt: skip
    seconds = time.monotonic() - started
    files = [f for m in group.modules for f in _python_files(pristine, m)]
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").replace("\r", "\n").splitlines()[-25:])
        error = f"mutmut failed (exit {result.returncode}); the end of its log ({log}):\n{tail}"
        return [Row("python", group.name, f, error=error, failing=failing) for f in files], seconds
    rows = [_python_row(group, root, f, (pristine / f).read_text()) for f in files]
    for row in rows:
        row.failing = failing
    return rows, seconds


def undecorate_classes(path: Path) -> None:
    """mutmut leaves every decorated class alone, so the methods of a @dataclass (Outbox,
    Policy, SweepRecord ...) would never be mutated. In the copy mutmut reads (never in the
    tree), ``@d class C: ...`` becomes ``class C: ...`` followed by ``C = d(C)``: the same class,
    its methods mutated. (Decorated functions and properties stay out, as mutmut wants.)"""
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    classes = [n for n in ast.parse(text).body if isinstance(n, ast.ClassDef) and n.decorator_list]
    for node in reversed(classes):
        applied = node.name
        for decorator in reversed(node.decorator_list):
            applied = f"{ast.get_source_segment(text, decorator)}({applied})"
        end = node.end_lineno or node.lineno
        lines[end:end] = [f"{node.name} = {applied}\n"]
        del lines[node.decorator_list[0].lineno - 1 : node.lineno - 1]
    if classes:
        path.write_text("".join(lines))


def _failing_tests(directory: Path, args: Sequence[str]) -> list[str]:
    """The node ids of the tests among ``args`` that fail on the unmutated copy."""
    command = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:randomly", *args]
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0"}
    result = subprocess.run(command, cwd=directory, capture_output=True, text=True, env=env, check=False)
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+::\S+)", result.stdout, re.MULTILINE)
    if failed:
        print(f"  left out, failing before any mutation: {', '.join(failed)}", flush=True)
    return sorted(set(failed))


def _python_row(group: Group, root: Path, repo_path: str, source: str) -> Row:
    """The results of one file; ``source`` is the file as in the tree (for the line numbers)."""
    row = Row("python", group.name, repo_path)
    module_path = import_path(repo_path)
    meta = root / "mutants" / f"{module_path}.meta"
    if not meta.exists():
        return row  # nothing to mutate in it (no function)
    codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
    here = Path.cwd()
    os.chdir(root)  # mutmut reads its configuration (on import) and its mutants from the project root
    try:
        from mutmut.__main__ import get_diff_for_mutant, status_by_exit_code

        for name, code in sorted(codes.items(), key=lambda item: _mutant_number(item[0])):
            status = status_by_exit_code[code]
            if row.add(status):
                diff = get_diff_for_mutant(name, path=module_path)
                line = _changed_line(source, name, diff)
                row.survivors.append(Survivor(f"{repo_path}:{line}", name, status, _short_diff(diff)))
    finally:
        os.chdir(here)
    row.survivors.sort(key=lambda s: (int(s.where.rsplit(":", 1)[1]), _mutant_number(s.mutant)))
    return row


def _mutant_number(name: str) -> tuple[str, int]:
    base, _, number = name.rpartition("__mutmut_")
    return base, int(number) if number.isdigit() else 0


def _short_diff(diff: str) -> str:
    return "\n".join(
        line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("---", "+++")
    )


def _changed_line(source: str, mutant: str, diff: str) -> int:
    """The line of the original file that the mutant changes: the first removed line of the diff
    (a function's diff, numbered from the function's first line), found in the function."""
    from mutmut.__main__ import orig_function_and_class_names_from_key

    function, cls = orig_function_and_class_names_from_key(mutant)
    node = _function_node(ast.parse(source), function, cls)
    if node is None:
        return 1
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    lines = source.splitlines()
    offset, removed = 0, None
    for text in diff.splitlines():
        if hunk := re.match(r"@@ -(\d+)", text):
            offset = int(hunk.group(1)) - 1
            continue
        if text.startswith(("---", "+++")):
            continue
        if text.startswith("-"):
            removed = text[1:].strip()
            break
        if text.startswith("+"):
            break
        offset += 1
    guess = first + offset
    if removed:
        span = range(max(first - 5, 1), (node.end_lineno or guess) + 1)
        matches = [n for n in span if lines[n - 1].strip() == removed]
        if matches:
            return min(matches, key=lambda n: abs(n - guess))
    return min(guess, node.end_lineno or guess)


def _function_node(
    tree: ast.Module, name: str, cls: str | None
) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    body: list[ast.stmt] = tree.body
    if cls is not None:
        owner = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls), None)
        body = owner.body if owner else []
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef)
    return next((n for n in body if isinstance(n, kinds) and n.name == name), None)


# ---- the template: IAM policy mutants -----------------------------------------------------------

# Where each resource type keeps its policy documents (under Properties).
POLICY_PROPERTIES = {
    "AWS::Serverless::Function": "Policies",
    "AWS::IAM::Role": "Policies",
    "AWS::IAM::Policy": "PolicyDocument",
    "AWS::IAM::ManagedPolicy": "PolicyDocument",
    "AWS::KMS::Key": "KeyPolicy",
    "AWS::SNS::TopicPolicy": "PolicyDocument",
    "AWS::SQS::QueuePolicy": "PolicyDocument",
    "AWS::S3::BucketPolicy": "PolicyDocument",
}
Path_ = tuple[str | int, ...]


@dataclass
class PolicyMutant:
    resource: str
    sid: str
    line: int
    mutation: str
    statement: Path_  # where the statement is, from the template's root
    status: str = ""


def _statement_paths(node: Any, path: Path_, in_statement: bool = False) -> Iterator[Path_]:
    """Every statement under ``node``: dicts with an Effect in a Statement list, in either branch
    of an Fn::If."""
    if isinstance(node, dict):
        if in_statement and "Effect" in node:
            yield path
        elif "Fn::If" in node and isinstance(node["Fn::If"], list):
            for branch in (1, 2):
                yield from _statement_paths(node["Fn::If"][branch], (*path, "Fn::If", branch), in_statement)
        else:
            for key, value in node.items():
                yield from _statement_paths(value, (*path, key), in_statement or key == "Statement")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _statement_paths(value, (*path, index), in_statement)


def _at(node: Any, path: Path_) -> Any:
    for step in path:
        node = node[step]
    return node


def _actions(statement: dict[str, Any]) -> list[str]:
    actions = statement.get("Action", [])
    return [actions] if isinstance(actions, str) else list(actions)


def policy_mutants(template: dict[str, Any], text: str) -> list[PolicyMutant]:
    """Every policy mutant of the template. Mutations no test could tell from the original
    (dropping a Sid, widening a Resource that is "*" already) are not generated."""
    lines = text.splitlines()
    mutants: list[PolicyMutant] = []
    for name, resource in template.get("Resources", {}).items():
        if not isinstance(resource, dict) or resource.get("Type") not in POLICY_PROPERTIES:
            continue
        key = POLICY_PROPERTIES[resource["Type"]]
        properties = resource.get("Properties", {})
        if key not in properties:
            continue
        start = next((i for i, t in enumerate(lines) if re.match(rf"  {re.escape(name)}:\s*(#.*)?$", t)), 0)
        for path in _statement_paths(properties[key], ("Resources", name, "Properties", key)):
            statement = _at(template, path)
            sid = str(statement.get("Sid", f"statement {path[-1]}"))
            line = next(
                (
                    i + 1
                    for i in range(start, len(lines))
                    if re.search(rf"Sid:\s*{re.escape(sid)}\s*$", lines[i])
                ),
                start + 1,
            )

            def add(mutation: str, at: Path_ = path, s: str = sid, n: int = line, r: str = name) -> None:
                mutants.append(PolicyMutant(r, s, n, mutation, at))

            add("drop the statement")
            condition = statement.get("Condition")
            if isinstance(condition, dict):
                for operator, keys in condition.items():
                    for condition_key in keys if isinstance(keys, dict) else ():
                        add(f"drop Condition {operator} {condition_key}")
            if "Resource" in statement and statement["Resource"] != "*":
                add('widen Resource to "*"')
            add(f"flip Effect to {'Deny' if statement['Effect'] == 'Allow' else 'Allow'}")
            if statement["Effect"] == "Deny" and len(_actions(statement)) > 1:
                for action in _actions(statement):
                    add(f"drop Action {action} of the Deny")
    return mutants


def apply_mutant(template: dict[str, Any], mutant: PolicyMutant) -> dict[str, Any]:
    mutated = copy.deepcopy(template)
    path = mutant.statement
    parent = _at(mutated, path[:-1])
    statement = parent[path[-1]]
    how = mutant.mutation
    if how == "drop the statement":
        if isinstance(parent, list):
            del parent[path[-1]]
        else:  # an Fn::If branch
            parent[path[-1]] = {"Ref": "AWS::NoValue"}
    elif how.startswith("drop Condition "):
        operator, condition_key = how.removeprefix("drop Condition ").split(" ", 1)
        del statement["Condition"][operator][condition_key]
        if not statement["Condition"][operator]:
            del statement["Condition"][operator]
        if not statement["Condition"]:
            del statement["Condition"]
    elif how.startswith("widen Resource"):
        statement["Resource"] = "*"
    elif how.startswith("flip Effect"):
        statement["Effect"] = "Deny" if statement["Effect"] == "Allow" else "Allow"
    elif how.startswith("drop Action "):
        action = how.removeprefix("drop Action ").removesuffix(" of the Deny")
        statement["Action"] = [a for a in _actions(statement) if a != action]
    else:
        raise ValueError(how)
    return mutated


def _node_at(node: Any, path: Path_) -> Any:
    """The YAML node (yaml.compose: with its place in the text) at a parsed template's ``path``.
    ``!If [c, a, b]`` is one tagged sequence where the parsed template has ``{"Fn::If": [...]}``."""
    import yaml

    for step in path:
        if isinstance(node, yaml.MappingNode):
            node = next(v for k, v in node.value if k.value == step)
        elif step == "Fn::If" and node.tag == "!If":
            continue
        else:
            node = node.value[step]
    return node


def _end(node: Any) -> int:
    """Where a node's own text ends: a block collection's end mark lies at the next token (past
    the blank and comment lines between), so it ends where its last value does."""
    import yaml

    if isinstance(node, yaml.MappingNode) and not node.flow_style and node.value:
        return _end(node.value[-1][1])
    if isinstance(node, yaml.SequenceNode) and not node.flow_style and node.value:
        return _end(node.value[-1])
    return int(node.end_mark.index)


def mutant_text(text: str, template: dict[str, Any], mutant: PolicyMutant) -> str:
    """template.yaml with only the mutated part's text changed (a value written as JSON, which
    YAML reads as it is, or lines removed): every other line, comment and short-form tag stays
    (tests read the text too, e.g. the automations' banner comments)."""
    import yaml
    from samcli.yamlhelper import yaml_parse

    mutated = apply_mutant(template, mutant)
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    path, how = mutant.statement, mutant.mutation
    statement = _node_at(root, path)
    parent = _node_at(root, path[:-1])
    if how == "drop the statement" and isinstance(parent, yaml.SequenceNode) and len(parent.value) > 1:
        new = _remove_lines(text, statement.start_mark.index, _end(statement), item=True)
    elif how == "drop the statement":  # the only one of its list, or an Fn::If branch
        at = path[:-1] if isinstance(parent, yaml.SequenceNode) else path
        new = _replace(text, _node_at(root, at), _at(mutated, at))
    elif how.startswith("drop Condition ") and "Condition" not in _at(mutated, path):
        key, value = next((k, v) for k, v in statement.value if k.value == "Condition")
        new = _remove_lines(text, key.start_mark.index, _end(value), item=False)
    else:
        field_ = {
            "drop Con": "Condition",
            "widen Re": "Resource",
            "flip Eff": "Effect",
            "drop Act": "Action",
        }[how[:8]]
        new = _replace(text, _node_at(root, (*path, field_)), _at(mutated, (*path, field_)))
    if yaml_parse(new) != mutated:
        raise RuntimeError(
            f"{mutant.resource} {mutant.sid}: {how}: the text edit does not parse as the mutant"
        )
    return new


def _replace(text: str, node: Any, value: Any) -> str:
    return text[: node.start_mark.index] + json.dumps(value, default=str) + text[_end(node) :]


def _remove_lines(text: str, start: int, end: int, *, item: bool) -> str:
    """Removes text[start:end] (a sequence item when ``item``: from its "- "), with its lines and
    their trailing comments when it has lines of its own."""
    first = text.rfind("-", 0, start) if item else start
    line_start, line_end = text.rfind("\n", 0, first), text.find("\n", end)
    if text[line_start + 1 : first].strip() or line_end < 0:  # shares its first line
        return text[:first] + text[end:].lstrip(" ")
    return text[:line_start] + text[line_end:]


def _preload() -> None:
    """What every template test process imports anyway, imported once before forking."""
    for module in ("pytest", "boto3", "moto", "samtranslator.translator.transform", "hypothesis"):
        importlib.import_module(module)
    importlib.import_module("aws_lambda_powertools")


def _pytest_child(directory: Path, tests: Sequence[str]) -> None:
    """In a forked child: the tests in ``directory``, output to its last.log, exit with pytest's code."""
    import pytest

    os.chdir(directory)
    tree = {str(ROOT), str(ROOT / "tools")}  # only the copy's code and tests may be imported
    sys.path[:] = [p for p in sys.path if p and str(Path(p).resolve()) not in tree]
    log = os.open(directory / "last.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(log, 1)
    os.dup2(log, 2)
    try:
        code = int(pytest.main(["--rootdir", str(directory), "-x", "-q", "-n", "0", *PYTEST_ARGS, *tests]))
    except BaseException:  # noqa: BLE001 - whatever happens, the child must not return
        traceback.print_exc()
        code = 3
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _status(code: int) -> str:
    if code == 0:
        return "survived"
    if code in (1, 2):  # failed, or interrupted (a template the tests cannot even load)
        return "killed"
    return f"error (pytest exit {code})"


def _judge(slots: list[Path], templates: list[str], tests: Sequence[str], timeout: float) -> list[str]:
    """Runs the tests once per template text, one forked process per slot at a time."""
    statuses = [""] * len(templates)
    pending = list(range(len(templates)))
    running: dict[int, tuple[int, int, float]] = {}  # pid -> (slot, index, started)
    free = list(range(len(slots)))
    while pending or running:
        while pending and free:
            slot, index = free.pop(), pending.pop(0)
            (slots[slot] / "template.yaml").write_text(templates[index])
            pid = os.fork()
            if pid == 0:
                _pytest_child(slots[slot], tests)
            running[pid] = (slot, index, time.monotonic())
        pid, wait_status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            for other, (slot, index, started) in list(running.items()):
                if time.monotonic() - started > timeout:
                    os.kill(other, signal.SIGKILL)
                    os.waitpid(other, 0)
                    statuses[index] = "timeout"
                    del running[other]
                    free.append(slot)
            time.sleep(0.05)
            continue
        slot, index, _ = running.pop(pid)
        free.append(slot)
        statuses[index] = _status(os.waitstatus_to_exitcode(wait_status))
        done = sum(1 for s in statuses if s)
        if len(templates) > 1 and (done % 25 == 0 or done == len(templates)):
            print(f"template: {done}/{len(templates)} judged", flush=True)
    return statuses


def run_template(pristine: Path, work: Path, jobs: int) -> tuple[list[Row], float]:
    from samcli.yamlhelper import yaml_parse

    started = time.monotonic()
    text = (pristine / "template.yaml").read_text()
    template = yaml_parse(text)
    tests = template_tests(pristine)
    slots = [copy_tree(pristine, work / f"template-{k}") for k in range(jobs)]
    failing = _failing_tests(slots[0], ["-n", "0", *PYTEST_ARGS, *tests])  # as for Python: left out
    tests = [*tests, *(f"--deselect={test}" for test in failing)]
    _preload()
    t0 = time.monotonic()
    (baseline,) = _judge(slots[:1], [text], tests, timeout=600)
    took = time.monotonic() - t0
    if baseline != "survived":
        error = f"the IAM tests fail on the unmutated template: see {slots[0] / 'last.log'}"
        row = Row("template", TEMPLATE_GROUP, "template.yaml", error=error, failing=failing)
        return [row], time.monotonic() - started
    mutants = policy_mutants(template, text)
    print(f"template: {len(mutants)} policy mutants, {len(tests)} test files, {took:.1f} s per run unmutated")
    texts = [mutant_text(text, template, m) for m in mutants]
    for mutant, status in zip(
        mutants, _judge(slots, texts, tests, timeout=max(60.0, 10 * took)), strict=True
    ):
        mutant.status = status
    rows: dict[str, Row] = {}
    for mutant in mutants:
        row = rows.setdefault(
            mutant.resource, Row("template", TEMPLATE_GROUP, mutant.resource, failing=failing)
        )
        if mutant.status.startswith("error"):
            row.error = f"{mutant.sid}: {mutant.mutation}: {mutant.status}; see {slots[0] / 'last.log'}"
        if row.add(mutant.status):
            before = json.dumps(_at(template, mutant.statement), default=str)
            row.survivors.append(
                Survivor(f"template.yaml:{mutant.line}", f"{mutant.sid}: {mutant.mutation}", mutant.status,
                         f"- {before}")
            )  # fmt: skip
    return list(rows.values()), time.monotonic() - started


# ---- report -------------------------------------------------------------------------------------


def load_results() -> dict[str, Any]:
    if RESULTS.exists():
        data: dict[str, Any] = json.loads(RESULTS.read_text())
        return data
    return {"rows": [], "runs": {}}


def merge(
    old: dict[str, Any], rows: list[Row], runs: dict[str, float], tool: str, tree: str
) -> dict[str, Any]:
    """``old`` with the groups of this run replaced; ``tree`` says what was mutated."""
    ran = set(runs)
    kept = [r for r in old.get("rows", []) if r["group"] not in ran]
    at = datetime.now(UTC).strftime("%Y-%m-%d")
    fresh = {
        g: {"seconds": round(s), "date": at, "tree": tree, "class_methods": True} for g, s in runs.items()
    }
    all_runs = {**old.get("runs", {}), **fresh}
    order = [g.name for g in GROUPS] + [TEMPLATE_GROUP]
    merged = sorted(
        [*kept, *(r.as_json() for r in rows)], key=lambda r: (order.index(r["group"]), r["module"])
    )
    data = {"tool": tool, "rows": merged, "runs": {g: all_runs[g] for g in order if g in all_runs}}
    if ran >= set(order):
        data["full_run_seconds"] = round(sum(runs.values()))
    elif "full_run_seconds" in old:
        data["full_run_seconds"] = old["full_run_seconds"]
    return data


def _table(rows: list[dict[str, Any]], first: str) -> list[str]:
    out = [f"| {first} | mutants | killed | survived | timeout | score % |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r.get("error"):
            why = r["error"].splitlines()[0].split(" (")[0]
            out.append(f"| {r['module']} | not run: {why} (see `make mutate`'s output) | | | | |")
            continue
        if not r["mutants"]:
            continue  # nothing to mutate (a package's __init__.py)
        survived = f"{r['survived']} ({r['no_tests']} reached by no test)" if r["no_tests"] else r["survived"]
        cells = (r["module"], r["mutants"], r["killed"], survived, r["timeout"], f"{r['score']:.1f}")
        out.append("| " + " | ".join(str(c) for c in cells) + " |")
    total = [r for r in rows if not r.get("error")]
    if len(total) > 1:
        n, killed, survived_, timeout = (
            sum(r[k] for r in total) for k in ("mutants", "killed", "survived", "timeout")
        )
        score = 100 * (killed + timeout) / n if n else 0.0
        cells = ("all", n, killed, survived_, timeout, f"{score:.1f}")
        out.append("| " + " | ".join(f"**{c}**" for c in cells) + " |")
    failing = sorted({test for r in rows for test in r.get("failing", [])})
    if failing:
        out += [
            "",
            "Left out, failing on the unmutated tree when measured: " + ", ".join(f"`{f}`" for f in failing),
        ]
    return out


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def render_section(data: dict[str, Any] | None = None) -> list[str]:
    """The "Mutation testing" section of docs/benchmarks.md, from docs/mutation.json (also called
    by ``make bench``, so that regenerating the benchmarks keeps it)."""
    data = load_results() if data is None else data
    if not data.get("rows"):
        return []
    python = [r for r in data["rows"] if r["kind"] == "python"]
    template = [r for r in data["rows"] if r["kind"] == "template"]
    runs = data.get("runs", {})
    full = data.get("full_run_seconds")
    per_group = ", ".join(
        f"{g} {_minutes(r['seconds'])}" + (f" ({r['tree'].split(' +')[0]})" if r.get("tree") else "")
        for g, r in runs.items()
    )
    if full:
        took = f"A full run took {_minutes(full)} on 2 cores, 2 mutants at a time ({per_group})."
    else:  # the groups were last run separately: their times add up to a full run's
        total = sum(r["seconds"] for r in runs.values())
        took = (
            f"The groups' last runs add up to {_minutes(total)} on 2 cores, 2 mutants at a time, some "
            f"beside other runs ({per_group}; each tree with tests/*/test_mutants_*.py)."
        )
    md = [
        SECTION,
        "",
        f"Generated by `make mutate` ({data.get('tool', 'tools/mutate.py')}) into docs/mutation.json and "
        "rendered here; `make bench` keeps this section. Do not edit by hand.",
        "",
        "`make mutate` mutates the modules where a safety rule of the product is decided (every "
        "automation's `decide`, the layer's tags, runner + outbox and events) with mutmut, each against "
        "its automation's tests (the layer's: tests/shared, tests/reliability and the decide and event "
        "tests that reach them; never the slow ones, nor the template's), and every statement of every "
        'IAM policy in template.yaml (dropped, a Condition key dropped, Resource widened to `"*"`, Effect '
        "flipped, one Action of a Deny dropped) against the tests that judge IAM. All of it runs in a "
        "temporary copy of the tree (never on the files themselves), mutmut in its own `.venv-mutate`. "
        '`make mutate MUTATE_ARGS="idle_stopper --jobs 1"` runs one group (`--list` names them), '
        "`MUTATE_ARGS=--template` only the template pass, `--rev HEAD` the committed tree (while edits in "
        "progress break the tests). " + took,
        "",
        "A mutant is *killed* when a test fails, *timeout* when the tests ran 15x (Python) or 10x "
        "(template) longer than unmutated; score = (killed + timeout) / mutants. Survivors on lines that "
        "implement a safety rule are killed by a test written for them, explained, or listed as open in "
        "[mutation-survivors.md](mutation-survivors.md); `make mutate` prints them all (file:line and the "
        "diff), docs/mutation.json lists them.",
        "",
        "### Python (mutmut, per module)",
        "",
        *_table(python, "module"),
        "",
    ]
    before = [g for g, r in runs.items() if g != TEMPLATE_GROUP and not r.get("class_methods")]
    if before:
        md += [
            f"Measured before `make mutate` mutated the methods of decorated classes (mutmut leaves a "
            f"`@dataclass` alone; tools/mutate.py now undecorates them in its copy): {', '.join(before)}. "
            "Their next run adds those mutants (outbox.py's `Outbox` methods alone are about 350).",
            "",
        ]
    if template:
        md += ["### Template (IAM policy mutants, per resource)", "", *_table(template, "resource"), ""]
    return md


def write_section(lines: list[str]) -> None:
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n"
    start = text.find(f"\n{SECTION}\n")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[: start + 1] + (text[end + 1 :] if end >= 0 else "")
    BENCHMARKS.write_text(text.rstrip("\n") + "\n\n" + "\n".join(lines).rstrip("\n") + "\n")


def print_survivors(rows: list[Row]) -> None:
    for row in rows:
        if row.error:
            print(f"\n{row.module}: NOT RUN\n{row.error}")
        for s in row.survivors:
            print(f"\n{s.where}: {s.status}: {s.mutant}")
            print("\n".join(f"    {line}" for line in s.diff.splitlines()))


# ---- main ---------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tools/mutate.py", description=__doc__.splitlines()[0])
    every = [*(g.name for g in GROUPS), TEMPLATE_GROUP]
    parser.add_argument("groups", nargs="*", help=f"any of {', '.join(every)} (default: all)")
    parser.add_argument("--python", action="store_true", help="every Python group, no template pass")
    parser.add_argument("--template", action="store_true", help="only the template pass")
    parser.add_argument("--jobs", type=int, default=2, help="mutants run at once (default 2; 2 cores)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies (path printed)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not rewrite docs/")
    parser.add_argument("--list", action="store_true", help="list the groups and exit")
    parser.add_argument(
        "--render", action="store_true", help="only re-render the section from docs/mutation.json"
    )
    parser.add_argument(
        "--rev",
        help="mutate the tree of this commit (e.g. HEAD: git archive) instead of the working tree, plus "
        "the working tree's tests/*/test_mutants_*.py - for when edits in progress break the tests",
    )
    return parser


def _list() -> None:
    for g in GROUPS:
        print(f"{g.name:22} {', '.join(g.modules)}")
        print(f"{'':22} tests: {', '.join(g.tests)}\n{'':22} rule: {g.rule}")
    print(f"{TEMPLATE_GROUP:22} template.yaml policies; tests: {', '.join(template_tests(ROOT))}")


def _tool() -> str:
    from importlib.metadata import version

    return f"tools/mutate.py, mutmut {version('mutmut')}"


def _tree(rev: str | None) -> str:
    """What a run mutates: the working tree, or a commit (with the tests written for survivors)."""
    if not rev:
        return "the working tree"
    git = ["git", "-C", str(ROOT), "rev-parse", "--short", rev]
    commit = subprocess.run(git, capture_output=True, text=True, check=True).stdout.strip()
    return f"commit {commit} + tests/*/test_mutants_*.py"


def run(
    chosen: Sequence[str],
    jobs: int,
    rev: str | None,
    keep: bool,
    save: Callable[[list[Row], dict[str, float]], None],
) -> tuple[list[Row], dict[str, float]]:
    """Runs the chosen groups; ``save`` gets the results so far after each (a later crash or
    interruption keeps them)."""
    work = Path(tempfile.mkdtemp(prefix="ops-autopilot-mutate-"))
    rows: list[Row] = []
    runs: dict[str, float] = {}
    try:
        pristine = export_rev(rev, work / "repo") if rev else copy_tree(ROOT, work / "repo")
        for group in GROUPS:
            if group.name in chosen:
                print(f"{group.name}: mutmut on {', '.join(group.modules)} ...", flush=True)
                group_rows, runs[group.name] = run_group(group, pristine, work, jobs)
                rows += group_rows
                _progress(group.name, group_rows, runs[group.name])
                save(rows, runs)
        if TEMPLATE_GROUP in chosen:
            print("template: policy mutants of template.yaml ...", flush=True)
            template_rows, runs[TEMPLATE_GROUP] = run_template(pristine, work, jobs)
            rows += template_rows
            _progress(TEMPLATE_GROUP, template_rows, runs[TEMPLATE_GROUP])
    finally:
        if keep:
            print(f"kept the copies in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return rows, runs


def main(argv: Sequence[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.list:
        _list()
        return 0
    if args.render:
        write_section(render_section())
        return 0
    names = [g.name for g in GROUPS]
    unknown = set(args.groups) - {*names, TEMPLATE_GROUP}
    if unknown:
        parser.error(f"unknown group(s): {', '.join(sorted(unknown))}")
    everything = names if args.python else [] if args.template else [*names, TEMPLATE_GROUP]
    chosen = list(args.groups) or everything
    if args.template and TEMPLATE_GROUP not in chosen:
        chosen.append(TEMPLATE_GROUP)
    if not _in_mutate_venv():
        python = ensure_mutate_venv()
        os.execv(python, [str(python), __file__, *argv])  # noqa: S606 - this script again, in .venv-mutate

    tool, tree = _tool(), _tree(args.rev)

    def save(rows: list[Row], runs: dict[str, float]) -> None:
        if not args.no_write:  # merged into the file as it is now: other groups' rows stay
            data = merge(load_results(), rows, runs, tool, tree)
            RESULTS.write_text(json.dumps(data, indent=1) + "\n")
            write_section(render_section(data))

    rows, runs = run(chosen, args.jobs, args.rev, args.keep, save)
    save(rows, runs)
    print_survivors(rows)
    print("\n" + "\n".join(render_section(merge(load_results(), rows, runs, tool, tree))))
    if not args.no_write:
        print(f"wrote {RESULTS.relative_to(ROOT)} and the {SECTION[3:]!r} section of docs/benchmarks.md")
    return 1 if any(r.error for r in rows) else 0


def _progress(name: str, rows: list[Row], seconds: float) -> None:
    n = sum(r.mutants for r in rows)
    caught = sum(r.killed + r.timeout for r in rows)
    failed = " (NOT RUN: see below)" if any(r.error for r in rows) else ""
    print(f"{name}: {n} mutants, {caught} killed, {n - caught} survived, {seconds:.0f} s{failed}", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
