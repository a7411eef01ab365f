"""The trial running in this worker process, for code that has no ``trial`` at hand."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class _Logs(Protocol):
    def log(
        self,
        metrics: Mapping[str, float],
        step: int | None = None,
        *,
        context: Mapping[str, Any] | None = None,
    ) -> None: ...


_current: _Logs | None = None


def set_current(trial: _Logs | None) -> None:
    global _current
    _current = trial


def log(
    metrics: Mapping[str, float],
    step: int | None = None,
    *,
    context: Mapping[str, Any] | None = None,
) -> None:
    """Track ``metrics`` (name -> number) for the trial running in this worker.

    The same as ``trial.log(...)``, for code the objective calls that has no ``trial`` (a
    training loop, a callback). Each metric is a series in the trial's Aim run; ``step``
    defaults to the next step of each series, and ``context`` (for example
    ``{"subset": "valid"}``) tells apart series of the same name. Outside a sweep, for
    example when the objective runs under plain Optuna, it does nothing.
    """
    if _current is not None:
        _current.log(metrics, step, context=context)
