"""What reading an objective file's syntax tree needs in more than one place: the name a
call is made by, and the ``if __name__ == "__main__":`` test."""

from __future__ import annotations

import ast


def call_name(node: ast.Call) -> str | None:
    """``f`` for ``f(...)`` and for ``a.b.f(...)``; None for a call of anything else."""
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    if isinstance(node.func, ast.Name):
        return node.func.id
    return None


def is_main_guard(test: ast.expr) -> bool:
    """Whether ``test`` is ``__name__ == "__main__"``."""
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators)
    )
