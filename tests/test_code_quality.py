"""The linters the project holds itself to, run as part of the test command."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_ruff() -> None:
    pytest.importorskip("ruff", reason="ruff is not installed (pip install -e '.[test]')")
    result = _run(sys.executable, "-m", "ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    pytest.importorskip("mypy", reason="mypy is not installed (pip install -e '.[test]')")
    result = _run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr


# -- imports: no loops, nothing imported from a layer above --------------------------------

LAYERS: tuple[tuple[str, ...], ...] = (
    # Lowest first. A module may import modules of its own layer and of the layers below it,
    # never one above. A name stands for a module and everything under it, except the top
    # package ("sweeper"), which stands for its __init__ alone. Every module must be in one.
    (  # helpers that know nothing of sweeps
        "sweeper._errors",
        "sweeper._logging",
        "sweeper._process",
        "sweeper._current",
        "sweeper._format",
        "sweeper._cost",
    ),
    ("sweeper.channel",),  # the trial channel: a transport and the messages above it
    ("sweeper.trial",),  # RemoteTrial and a trial's messages, run in a worker
    ("sweeper.objective",),  # objective files: read, captured, loaded
    ("sweeper.study",),  # storages, samplers, pruners, recovery
    ("sweeper._config",),  # a sweep's options (checks sampler and pruner names)
    ("sweeper.tracking",),  # Aim: events, the one writer, the UI
    ("sweeper.backends",),  # where trials run (the Modal App runs the tracking writer)
    ("sweeper.orchestrator",),  # the sweep loop; what it tells a Reporter
    ("sweeper.progress",),  # Reporters: what the person watching sees
    ("sweeper._words", "sweeper._plots", "sweeper._api"),  # the Python API
    ("sweeper.cli", "sweeper.__main__", "sweeper"),  # the command line; the package
)

ALLOWED_UPWARD: set[tuple[str, str]] = {
    # (importer, imported): deliberate imports from a layer above, each with why. None now.
}


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_graph(root: Path) -> dict[str, dict[str, int]]:
    """Each module of the package at ``root``: the package's modules it imports, at module
    level or in a function (``if TYPE_CHECKING:`` blocks left out), with a line of each."""
    files = {_module_name(path, root): path for path in sorted(root.rglob("*.py"))}
    graph: dict[str, dict[str, int]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: dict[str, int] = {}

        def add(target: str, line: int, edges: dict[str, int] = edges) -> None:
            if target in files and target not in edges:
                edges[target] = line

        nodes: list[ast.AST] = [ast.parse(path.read_text(encoding="utf-8"), str(path))]
        while nodes:
            node = nodes.pop()
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                nodes.extend(node.orelse)
                continue
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(alias.name, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*up, *([node.module] if node.module else [])])
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    add(full if full in files else base, node.lineno)
            nodes.extend(ast.iter_child_nodes(node))
        graph[name] = edges
    return graph


def import_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The import loops: each group of modules that reach one another through imports (a
    strongly connected component, by Tarjan's algorithm), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph.get(node, {}):
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def layer_of(module: str, layers: tuple[tuple[str, ...], ...] = LAYERS) -> int | None:
    """The layer of ``module``: that of the longest name in ``layers`` covering it."""
    matches = [
        (len(name), number)
        for number, names in enumerate(layers)
        for name in names
        if module == name or ("." in name and module.startswith(name + "."))
    ]
    return max(matches)[1] if matches else None


def upward_imports(
    graph: dict[str, dict[str, int]],
    layers: tuple[tuple[str, ...], ...] = LAYERS,
    allowed: set[tuple[str, str]] | frozenset[tuple[str, str]] = frozenset(),
) -> list[str]:
    found = []
    for module, edges in sorted(graph.items()):
        own = layer_of(module, layers)
        for target, line in edges.items():
            theirs = layer_of(target, layers)
            if own is None or theirs is None or theirs <= own or (module, target) in allowed:
                continue
            found.append(
                f"{module} (line {line}) imports {target}: {layers[theirs][0]} stands above "
                f"{layers[own][0]}"
            )
    return found


def test_no_import_cycles() -> None:
    cycles = import_cycles(import_graph(REPO / "sweeper"))
    assert not cycles, "modules that import each other (give what they share one home):\n" + (
        "\n".join(" <-> ".join(group) for group in cycles)
    )


def test_every_module_has_a_layer() -> None:
    missing = [m for m in import_graph(REPO / "sweeper") if layer_of(m) is None]
    assert not missing, f"put these in LAYERS: {missing}"


def test_no_import_from_a_layer_above() -> None:
    graph = import_graph(REPO / "sweeper")
    found = upward_imports(graph, allowed=ALLOWED_UPWARD)
    assert not found, "imports from a layer above:\n" + "\n".join(found)
    stale = [pair for pair in ALLOWED_UPWARD if pair[1] not in graph.get(pair[0], {})]
    assert not stale, f"ALLOWED_UPWARD lists imports that are gone: {stale}"


def test_the_import_checks_see_loops_and_upward_imports(tmp_path: Path) -> None:
    """The checks above on a small package: a loop through a function-level import is
    found, an import only for type checking is not."""
    package = tmp_path / "pkg"
    (package / "low").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "low" / "__init__.py").write_text("")
    (package / "low" / "_a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from pkg import _top\n"
        "def f():\n    from pkg.low import _b\n"
    )
    (package / "low" / "_b.py").write_text("from . import _a\nimport pkg._top\n")
    (package / "_top.py").write_text("from pkg.low._a import f\n")
    graph = import_graph(package)
    assert graph["pkg.low._a"] == {"pkg.low._b": 5}
    assert import_cycles(graph) == [["pkg._top", "pkg.low._a", "pkg.low._b"]]
    layers = (("pkg.low",), ("pkg._top", "pkg"))
    assert upward_imports(graph, layers) == [
        "pkg.low._b (line 2) imports pkg._top: pkg._top stands above pkg.low"
    ]
    assert upward_imports(graph, layers, allowed={("pkg.low._b", "pkg._top")}) == []


# -- documentation: every link stays inside the repository, and leads somewhere ------------


def test_documentation_links_lead_to_files_of_the_repository() -> None:
    import re

    pages = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+://|#|mailto:", target):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            if not path.is_relative_to(REPO) or not path.exists():
                broken.append(f"{page.relative_to(REPO)}: {target}")
    assert broken == []
    assert (REPO / "docs" / "architecture.md").exists()
    assert "docs/architecture.md" in (REPO / "README.md").read_text()
