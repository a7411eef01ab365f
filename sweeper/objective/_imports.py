"""What an objective imports, as pip requirements for a container image.

When the user names no packages (``--pip``, ``--requirements``), the container gets those the
objective imports, pinned to the versions installed here, so the objective runs there with
what it ran with here.
"""

from __future__ import annotations

import ast
import importlib.metadata
import sys
import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

# Import names whose distribution has another name, for packages not installed here.
_KNOWN = {
    "sklearn": "scikit-learn",
    "cv2": "opencv-python-headless",
    "PIL": "pillow",
    "yaml": "pyyaml",
    "skimage": "scikit-image",
    "bs4": "beautifulsoup4",
    "lightning": "lightning",
}
# Provided by sweeper's own image layer (pinned there).
_PROVIDED = {"sweeper", "optuna", "cloudpickle"}


def file_imports(path: Path) -> tuple[set[str], set[str]]:
    """Top-level modules ``path`` imports: (third-party or unknown, sibling files)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    siblings = {name for name in names if (path.parent / f"{name}.py").is_file()}
    siblings |= {name for name in names if (path.parent / name / "__init__.py").is_file()}
    return _third_party(names - siblings), siblings


def function_imports(function: Callable[..., Any]) -> set[str]:
    """Top-level modules a function (and the functions it calls) refers to through globals."""
    names: set[str] = set()
    seen: set[int] = set()

    def visit(fn: Any) -> None:
        code = getattr(fn, "__code__", None)
        if code is None or id(fn) in seen:
            return
        seen.add(id(fn))
        globals_ = getattr(fn, "__globals__", {})
        for name in _code_names(code):
            value = globals_.get(name)
            if isinstance(value, types.ModuleType):
                names.add(value.__name__.split(".")[0])
            elif callable(value):
                module = getattr(value, "__module__", None) or ""
                if module in ("__main__", getattr(fn, "__module__", None)):
                    visit(value)
                elif module:
                    names.add(module.split(".")[0])

    visit(function)
    return _third_party(names)


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names |= _code_names(constant)
    return names


def _third_party(names: Iterable[str]) -> set[str]:
    stdlib = set(sys.stdlib_module_names) | set(sys.builtin_module_names)
    return {n for n in names if n and n not in stdlib and not n.startswith("_")} - {"__main__"}


def requirements(modules: Iterable[str]) -> list[str]:
    """Pip requirement strings for ``modules``, pinned to the versions installed here."""
    distributions = importlib.metadata.packages_distributions()
    found: set[str] = set()
    for module in modules:
        if module in _PROVIDED:
            continue
        for name in distributions.get(module, []) or [_KNOWN.get(module, module)]:
            found.add(name)
    return sorted(pinned(name) for name in found)


def pinned(distribution: str) -> str:
    """``name==version`` as installed here (without a local build tag like ``+cpu``)."""
    try:
        version = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return distribution
    return f"{distribution}=={version.split('+')[0]}"
