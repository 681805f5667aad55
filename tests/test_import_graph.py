"""The project's modules import one another in one direction and without a circle (read
from the source, imports inside functions included): sweeps -> trainables -> sevlm; sevlm
imports none of the others; analysis reads MLflow through trainables' names and store."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("sevlm", "trainables", "sweeps", "analysis")
# package -> the project's packages it must never import
NEVER = {"sevlm": {"trainables", "sweeps", "analysis"}, "trainables": {"sweeps", "analysis"}}


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    return modules


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports; ``from pkg import submodule`` names the submodule."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in modules:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & set(modules)
            found |= submodules if len(submodules) == len(node.names) else {node.module} | submodules
    return found


def test_no_module_imports_its_way_back_to_itself_and_layers_point_one_way():
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError naming the circle
    wrong = sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                   if b.split(".")[0] in NEVER.get(a.split(".")[0], ()))
    assert not wrong, wrong
    assert "trainables.trial" not in graph["trainables.worker"]  # the circle issue 23 removed
