"""The packages' import directions, so the layout stays what README's Layout section says: catalogs are facts and
read nothing of ours; planning reads catalogs only; nothing a user runs imports the test folder."""

from __future__ import annotations

import ast

import pytest

from tests.conftest import ROOT

PROJECT_PACKAGES = {"catalog", "planning", "config", "components", "llmctl", "policy", "tests"}
MAY_IMPORT = {
    "catalog": {"catalog"},
    "planning": {"catalog", "planning"},
    "config": {"catalog", "planning", "config"},
    "components": {"catalog", "planning", "config", "components"},
    "llmctl": {"catalog", "planning", "config", "components", "llmctl", "policy"},
    "policy": {"policy"},  # the pack runs in its own virtualenv (policy/requirements.txt): nothing of ours there
}


def imported_packages(path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & PROJECT_PACKAGES


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_each_package_imports_only_in_its_direction(package):
    files = sorted((ROOT / package).glob("*.py"))
    assert files, f"{package}/ has no modules"
    wrong = {f.name: sorted(imported_packages(f) - MAY_IMPORT[package]) for f in files}
    assert not {name: pkgs for name, pkgs in wrong.items() if pkgs}, wrong


def test_the_program_itself_imports_no_test_code():
    assert "tests" not in imported_packages(ROOT / "__main__.py")


def test_the_check_sees_a_wrong_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from config.schema import StackConfig\nimport planning.capacity\n")
    assert imported_packages(module) == {"config", "planning"}
