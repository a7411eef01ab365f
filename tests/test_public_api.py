"""The public surface: sorted __all__ in every package, and a cheap `import sweeper`."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

PACKAGES = [
    "sweeper",
    "sweeper.backends",
    "sweeper.channel",
    "sweeper.cli",
    "sweeper.objective",
    "sweeper.orchestrator",
    "sweeper.progress",
    "sweeper.study",
    "sweeper.trial",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_importable(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__all__ == sorted(module.__all__)
    for attribute in module.__all__:
        assert getattr(module, attribute) is not None


def test_import_is_cheap() -> None:
    heavy = ("optuna", "torch", "modal", "aim")
    code = f"import sys, sweeper; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_errors_form_one_tree() -> None:
    import sweeper

    for name in ("ConfigError", "ObjectiveError", "StorageError"):
        assert issubclass(getattr(sweeper, name), sweeper.UsageError)
    assert issubclass(sweeper.UsageError, sweeper.SweeperError)
    assert issubclass(sweeper.BackendError, sweeper.SweeperError)
