"""The package's shape: every module imports on its own, no import cycle, no oversized module."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "segml"
MAX_MODULE_LINES = 600


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """The imports run when the module is imported: not those inside functions or classes,
    nor those under ``if TYPE_CHECKING:`` (never run)."""
    found: list[ast.Import | ast.ImportFrom] = []
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If):
            run = [] if _is_type_checking(node.test) else node.body
            pending.extend([*run, *node.orelse])
        elif isinstance(node, ast.Try):
            pending.extend([*node.body, *node.orelse, *node.finalbody])
            for handler in node.handlers:
                pending.extend(handler.body)
        elif isinstance(node, ast.With):
            pending.extend(node.body)
    return found


def _ancestors(name: str) -> set[str]:
    """The packages Python imports before ``name``: ``a`` and ``a.b`` for ``a.b.c``."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def _imported(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The ``segml`` modules an import statement of ``module`` loads.

    A name imported from a package is an edge to the package, a submodule imported from it an
    edge to the submodule. The packages Python loads on the way count too, but for the
    importing module's own: they are always loaded before it.
    """
    if isinstance(node, ast.Import):
        targets = {alias.name for alias in node.names}
    else:
        package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = node.module or ""
        if node.level:
            base = f"{package}.{base}" if base else package
        targets = {
            f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
            for alias in node.names
        }
    on_the_way = set().union(*(_ancestors(t) for t in targets)) - _ancestors(module)
    loaded = targets | on_the_way
    return {name for name in loaded if name in MODULES and name != module}


def import_graph() -> dict[str, set[str]]:
    """Each ``segml`` module and the ``segml`` modules its module-level imports load."""
    graph = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        graph[module] = set().union(*(_imported(module, n) for n in _module_level_imports(tree)))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (as the modules along it, the first repeated at the end)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_every_module_imports_in_a_fresh_interpreter() -> None:
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    names = [m for m in MODULES if m != "segml.__main__"]
    result = subprocess.run(
        [sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr


def test_the_module_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    assert "segml.scoring._clean" in graph["segml.scoring._ids"], "the graph sees imports"
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


@pytest.mark.parametrize(
    ("graph", "cycle"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ({"a": {"a"}}, ["a", "a"]),
    ],
)
def test_find_cycle_finds_a_cycle(graph: dict[str, set[str]], cycle: list[str] | None) -> None:
    assert find_cycle(graph) == cycle


def test_a_name_from_the_own_package_is_an_edge_its_submodule_is_not_one() -> None:
    tree = ast.parse("from segml.scoring import score\nfrom segml import tracking\n")
    loaded = set().union(*(_imported("segml.scoring.local", n) for n in tree.body))
    assert loaded == {"segml.scoring", "segml.tracking"}


def test_lazy_and_type_checking_imports_are_not_edges() -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "import segml.errors\n"
        "if TYPE_CHECKING:\n    import segml.spec\n"
        "def f():\n    import segml.model\n"
    )
    loaded = set().union(*(_imported("segml.data", n) for n in _module_level_imports(tree)))
    assert loaded == {"segml.errors"}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_exceeds_the_line_limit(module: str) -> None:
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{module}: {lines} lines; split it by job"
