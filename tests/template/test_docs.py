"""The README agrees with the template and the Makefile."""

from __future__ import annotations

import re

import pytest

from template_tools import ROOT, automation_folders

pytestmark = pytest.mark.unit
README = (ROOT / "README.md").read_text()


def test_the_two_commands_are_at_the_very_top() -> None:
    head = "\n".join(README.splitlines()[:15])
    assert "make demo" in head and "make test" in head


def test_parameter_table_is_generated_from_the_template() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("params_table", ROOT / "tools" / "params_table.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render(README) == README, "README parameter table is stale: run `make docs`"


def test_every_automation_has_a_readme_entry() -> None:
    for name in automation_folders():
        assert f"docs/{name}.md" in README, f"README does not link docs/{name}.md"


def test_make_targets_named_in_the_readme_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in set(re.findall(r"`make ([a-z-]+)", README)):
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), (
            f"README names make {target}, Makefile lacks it"
        )


def test_every_test_docs_guarantees_names_exists() -> None:
    """docs/guarantees.md says which test enforces each promise: every file and test it names
    must exist, so moving or renaming a test cannot silently orphan a promise."""
    text = (ROOT / "docs" / "guarantees.md").read_text()
    current: str | None = None
    missing: list[str] = []
    for match in re.finditer(r"`(tests/[\w/]+\.py)(?:::(\w+))?`|`::(\w+)`", text):
        if match.group(1):
            current = match.group(1)
            if not (ROOT / current).is_file():
                missing.append(current)
                continue
        name = match.group(2) or match.group(3)
        if (
            name
            and current
            and (ROOT / current).is_file()
            and f"def {name}(" not in (ROOT / current).read_text()
        ):
            missing.append(f"{current}::{name}")
    assert not missing, missing
