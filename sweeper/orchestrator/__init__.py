"""The orchestrator: keeps N trials in flight against an Optuna study."""

from __future__ import annotations

from sweeper.orchestrator._orchestrator import OpenStudy, Orchestrator
from sweeper.orchestrator._stats import FinishedTrial, Snapshot, SweepStats
from sweeper.orchestrator._sweep import SweepResult, log_dir_for, sweep

__all__ = [
    "FinishedTrial",
    "OpenStudy",
    "Orchestrator",
    "Snapshot",
    "SweepResult",
    "SweepStats",
    "log_dir_for",
    "sweep",
]
