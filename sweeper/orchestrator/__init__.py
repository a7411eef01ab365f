"""The orchestrator: keeps N trials in flight against an Optuna study."""

from __future__ import annotations

from sweeper.orchestrator._orchestrator import OpenStudy, Orchestrator
from sweeper.orchestrator._report import BestTrial, Reporter, SweepInfo, SweepSummary
from sweeper.orchestrator._stats import FinishedTrial, Snapshot, SweepStats
from sweeper.orchestrator._sweep import SweepResult, log_dir_for, sweep

__all__ = [
    "BestTrial",
    "FinishedTrial",
    "OpenStudy",
    "Orchestrator",
    "Reporter",
    "Snapshot",
    "SweepInfo",
    "SweepResult",
    "SweepStats",
    "SweepSummary",
    "log_dir_for",
    "sweep",
]
