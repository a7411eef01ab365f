"""Tracking events: what the orchestrator sends to the one process that writes the Aim repo.

Runs are keyed by study and *root* trial number: a trial run again after an interruption
(a retry) has a new Optuna number but the root of the trial it repeats, so it continues the
same Aim run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class StudyOpened:
    study: str
    directions: tuple[str, ...]
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TrialStarted:
    study: str
    root: int
    number: int
    started: float
    """Unix time."""


@dataclass(frozen=True, slots=True)
class ParamsSet:
    study: str
    root: int
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Reported:
    """An intermediate value from ``trial.report(value, step)``."""

    study: str
    root: int
    step: int
    value: float


@dataclass(frozen=True, slots=True)
class Logged:
    """Metrics from ``trial.log`` / ``sweeper.log``."""

    study: str
    root: int
    metrics: dict[str, float]
    step: int | None = None
    context: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class TrialFinished:
    study: str
    root: int
    number: int
    state: str
    values: tuple[float, ...] | None
    duration: float
    params: dict[str, Any]
    reason: str | None = None
    worker: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StudyProgress:
    """The study after a trial finished: counts, best so far or Pareto front."""

    study: str
    finished: int
    counts: dict[str, int]
    best_value: float | None = None
    best_number: int | None = None
    pareto_front: tuple[tuple[int, tuple[float, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class StudyDeleted:
    """The study was removed again (it was created by a sweep that turned out misconfigured);
    its runs go too."""

    study: str


Event = (
    StudyOpened
    | TrialStarted
    | ParamsSet
    | Reported
    | Logged
    | TrialFinished
    | StudyProgress
    | StudyDeleted
)
