"""The import directions that keep the tree what README's Layout section says.

Packages: catalogs are facts and read nothing of ours; planning reads catalogs only; nothing a user runs imports the
test folder; the code that runs inside the gateway's container (gateway_plugins/) imports nothing of ours, and the
program reads it only as files.

Planes inside components/ (each a subpackage; only the wiring, platform.py, sits at the top):

- shared helpers read nothing else of components/;
- compute is the bottom plane: it reads shared only, never serving or edge;
- serving runs on compute and never reads edge;
- edge fronts serving: it reads compute and serving;
- observability watches compute and serving, so it reads their names (namespaces, GPU taint, KEDA's operator,
  each model's minimum servers), and never edge: the gateway brings its own ServiceMonitor, and the NetworkPolicies
  are handed Prometheus's namespace and labels by platform.py;
- serving and edge read observability only through the PromQL it publishes (`observability.signals`): KEDA scales
  on the recorded series. That is the loop of the architecture diagram (servers -> metrics -> signals -> KEDA ->
  servers), so serving and observability read each other, serving only through signals; no module ever imports
  itself back (`test_no_import_cycle_between_modules`).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

PROJECT_PACKAGES = {"catalog", "planning", "config", "components", "gateway_plugins", "llmctl", "policy", "tests"}
MAY_IMPORT = {
    "catalog": {"catalog"},
    "planning": {"catalog", "planning"},
    "config": {"catalog", "planning", "config"},
    "components": {"catalog", "planning", "config", "components"},
    "llmctl": {"catalog", "planning", "config", "components", "llmctl", "policy"},
    "policy": {"policy"},  # the pack runs in its own virtualenv (policy/requirements.txt): nothing of ours there
    "gateway_plugins": set(),  # mounted into the LiteLLM container, where nothing of ours exists
}

SIGNALS = "observability.signals"
PLANE_MAY_IMPORT = {
    "shared": {"shared"},
    "compute": {"shared", "compute"},
    "serving": {"shared", "compute", "serving", SIGNALS},
    "edge": {"shared", "compute", "serving", "edge", SIGNALS},
    "observability": {"shared", "compute", "serving", "observability"},
}
TOP_OF_COMPONENTS = {"__init__.py", "platform.py"}

# What LiteLLM itself brings into its container beside the standard library.
PROXY_IMPORTS = {"litellm", "fastapi"}


def modules(package: str) -> list[Path]:
    """Every module of a package, subpackages included; virtualenvs (policy/venv) are not ours."""
    return sorted(p for p in (ROOT / package).rglob("*.py")
                  if not {"venv", "__pycache__"} & set(p.relative_to(ROOT).parts))


def imports(path: Path) -> list[tuple[str, int]]:
    """(dotted target, relative level) of every import; `from a.b import c` names `a.b.c` when c is a module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            for alias in node.names:
                target = f"{base}.{alias.name}" if base else alias.name
                is_module = (ROOT / target.replace(".", "/")).with_suffix(".py").exists() or \
                    (ROOT / target.replace(".", "/")).is_dir()
                found.append((target if node.level == 0 and is_module else base, node.level))
    return found


def imported_packages(path: Path) -> set[str]:
    return {target.split(".")[0] for target, level in imports(path) if level == 0} & PROJECT_PACKAGES


def component_imports(path: Path) -> set[str]:
    """The modules of components/ that a file imports, as `<plane>.<module>` (or `platform`)."""
    return {target.removeprefix("components.") for target, level in imports(path)
            if level == 0 and target.startswith("components.")}


def plane_of(module: str) -> str:
    return module.split(".")[0]


def wrong_way(plane: str, imported: set[str]) -> list[str]:
    allowed = PLANE_MAY_IMPORT[plane]
    return sorted(m for m in imported if plane_of(m) not in allowed and m not in allowed)


# Packages -----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_each_package_imports_only_in_its_direction(package):
    files = modules(package)
    assert files, f"{package}/ has no modules"
    wrong = {str(f.relative_to(ROOT)): sorted(imported_packages(f) - MAY_IMPORT[package]) for f in files}
    assert not {name: pkgs for name, pkgs in wrong.items() if pkgs}, wrong


def test_the_program_itself_imports_no_test_code():
    assert not imported_packages(ROOT / "__main__.py") & {"tests", "gateway_plugins"}


def test_the_check_sees_a_wrong_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from config.schema import StackConfig\nimport planning.capacity\n"
                      "from components.serving import model_server\n")
    assert imported_packages(module) == {"config", "planning", "components"}
    assert component_imports(module) == {"serving.model_server"}


# Planes inside components/ ------------------------------------------------------------------------------------------

def test_components_top_holds_only_the_wiring():
    """A new component goes into the plane it belongs to, not beside platform.py."""
    top = {p.name for p in (ROOT / "components").glob("*.py")}
    planes = {p.name for p in (ROOT / "components").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert top == TOP_OF_COMPONENTS
    assert planes == set(PLANE_MAY_IMPORT)


@pytest.mark.parametrize("plane", sorted(PLANE_MAY_IMPORT))
def test_each_plane_imports_only_in_its_direction(plane):
    files = modules(f"components/{plane}")
    assert len(files) > 1, f"components/{plane}/ has no modules beside __init__.py"
    wrong = {f.name: wrong_way(plane, component_imports(f)) for f in files}
    assert not {name: found for name, found in wrong.items() if found}, wrong


@pytest.mark.parametrize(("plane", "source", "flagged"), [
    ("compute", "from components.serving.model_server import NAMESPACE", ["serving.model_server"]),
    ("compute", "from components.edge import gateway", ["edge.gateway"]),
    ("compute", "from components.observability.signals import READY", ["observability.signals"]),
    ("shared", "from components.compute.cluster import SYSTEM_NODE_LABEL", ["compute.cluster"]),
    ("serving", "from components.edge.gateway import NAMESPACE", ["edge.gateway"]),
    ("serving", "from components.observability import monitoring", ["observability.monitoring"]),
    ("edge", "import components.observability.dashboards", ["observability.dashboards"]),
    ("observability", "from components.edge.gateway import PORT", ["edge.gateway"]),
    ("observability", "from components import platform", ["platform"]),
    ("serving", "from components.observability.signals import scaler_queries", []),
    ("edge", "from components.observability import signals", []),
    ("observability", "from components.serving.keda_scaler import NAMESPACE", []),
    ("edge", "from components.compute.cluster import SYSTEM_NODE_LABEL\nfrom components.shared import helm", []),
])
def test_the_plane_check_sees_a_wrong_way_import(tmp_path, plane, source, flagged):
    module = tmp_path / "m.py"
    module.write_text(source + "\n")
    assert wrong_way(plane, component_imports(module)) == flagged


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for path in modules("components"):
        name = ".".join(path.relative_to(ROOT / "components").with_suffix("").parts)
        graph[name] = {m for m in component_imports(path)
                       if (ROOT / "components" / m.replace(".", "/")).with_suffix(".py").exists()}
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it, or None."""
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_no_import_cycle_between_modules():
    graph = import_graph()
    assert "serving.keda_scaler" in graph and "observability.signals" in graph["serving.keda_scaler"]
    assert cycle(graph) is None, " -> ".join(cycle(graph))


def test_the_cycle_check_sees_a_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


# Code that runs inside the gateway's container ----------------------------------------------------------------------

def proxy_import_problems(path: Path) -> list[str]:
    """Imports that would fail in the LiteLLM container, where the file sits alone beside config.yaml."""
    problems = []
    for target, level in imports(path):
        top = target.split(".")[0]
        if level:
            problems.append(f"relative import of '{target or '.'}'")
        elif top not in sys.stdlib_module_names and top not in PROXY_IMPORTS:
            problems.append(f"'{target}' is neither the standard library nor LiteLLM's")
    return problems


def test_gateway_plugins_import_only_the_standard_library_and_litellm():
    files = [f for f in modules("gateway_plugins") if f.name != "__init__.py"]
    assert files
    problems = {f.name: proxy_import_problems(f) for f in files}
    assert not {name: found for name, found in problems.items() if found}, problems


@pytest.mark.parametrize("source", [
    "from gateway_plugins.gateway_auth import key_hash",  # no such package in the container
    "from . import gateway_auth",
    "from components.edge import gateway",
    "import yaml",  # installed beside the program, not promised in the proxy's image
])
def test_the_plugin_check_sees_an_import_the_container_lacks(tmp_path, source):
    module = tmp_path / "m.py"
    module.write_text(f"import json\nfrom fastapi import HTTPException\n{source}\n")
    assert len(proxy_import_problems(module)) == 1


def code_mentions(path: Path, name: str) -> bool:
    """Whether the code (imports, names, strings; not docstrings or comments) names `name`."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if name in node.value:
                return True
        elif isinstance(node, ast.Name) and node.id == name:
            return True
    return any(target.split(".")[0] == name for target, _ in imports(path))


def test_only_the_gateway_component_refers_to_gateway_plugins():
    program = [p for p in ROOT.rglob("*.py")
               if not {"tests", "gateway_plugins", "build", "venv", "__pycache__"} & set(p.relative_to(ROOT).parts)
               and not p.relative_to(ROOT).parts[0].startswith(".")]
    referring = {str(p.relative_to(ROOT)) for p in program if code_mentions(p, "gateway_plugins")}
    assert referring == {"components/edge/gateway.py"}


def test_the_gateway_mounts_every_plugin():
    from components.edge import gateway

    on_disk = {f.name: f.read_text() for f in modules("gateway_plugins") if f.name != "__init__.py"}
    assert gateway.proxy_modules() == on_disk
