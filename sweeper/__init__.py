"""sweeper: run an ordinary Optuna objective as a sweep on parallel workers.

    import sweeper
    study = sweeper.run("objectives/quadratic.py", n_trials=40, parallel=4)

``import sweeper`` is cheap and needs no credentials: the parts that pull in Optuna are
loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sweeper._current import log
from sweeper._errors import (
    BackendError,
    ConfigError,
    ObjectiveError,
    StorageError,
    SweeperError,
    SweepFailed,
    SweepInterrupted,
    UsageError,
)

if TYPE_CHECKING:
    from sweeper._api import run
    from sweeper._plots import plot
    from sweeper.trial import RemoteTrial

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "ConfigError",
    "ObjectiveError",
    "RemoteTrial",
    "StorageError",
    "SweepFailed",
    "SweepInterrupted",
    "SweeperError",
    "UsageError",
    "__version__",
    "log",
    "plot",
    "run",
]

_LAZY = {"run": "sweeper._api", "plot": "sweeper._plots", "RemoteTrial": "sweeper.trial"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sweeper' has no attribute {name!r}")
