"""Counts and best values of a sweep, kept up to date as trials finish (O(1) per trial for
one objective, O(front) for several) so progress never rescans the study."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from sweeper._cost import COST_KEY, CostMeter, Spend, study_cost
from sweeper.study._best import feasible


@dataclass(frozen=True)
class FinishedTrial:
    """A trial of this sweep that has just been told to the study."""

    number: int
    state: str
    values: tuple[float, ...] | None
    params: dict[str, Any]
    duration: float
    reason: str | None = None
    traceback: str | None = None
    log_path: str | None = None
    cost: float = 0.0
    """Its estimated cost in US dollars (0 on local workers)."""
    container_seconds: float = 0.0
    """How long it held its worker (container), restarts included."""
    attempts: int = 1
    """How many times it was started (a restarted trial continues as the same trial)."""
    feasible: bool = True
    """False when the sampler's ``constraints_func`` found a constraint above 0: such a
    trial never counts as the best (as in Optuna's ``study.best_trial``)."""


@dataclass(frozen=True)
class Snapshot:
    """The state of a sweep at one moment, for progress displays."""

    study: str
    directions: tuple[str, ...]
    complete: int
    pruned: int
    failed: int
    running: int
    n_trials: int | None
    timeout: float | None
    elapsed: float
    best_values: tuple[float, ...] | None = None
    best_number: int | None = None
    pareto_size: int = 0
    stopping: str | None = None
    waiting: str | None = None
    spend: Spend | None = None
    """What the sweep has cost so far, when its trials cost anything (not on local workers)."""

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.failed


@dataclass
class SweepStats:
    """Counts for this sweep, and the study's best trial (or Pareto front) so far."""

    study: str
    directions: tuple[str, ...]
    n_trials: int | None
    timeout: float | None
    started: float = field(default_factory=time.monotonic)
    counts: dict[str, int] = field(default_factory=lambda: {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0})
    prior: dict[str, int] = field(default_factory=dict)
    running: int = 0
    stopping: str | None = None
    waiting: str | None = None
    best_values: tuple[float, ...] | None = None
    best_number: int | None = None
    front: list[tuple[tuple[float, ...], int]] = field(default_factory=list)
    meter: CostMeter | None = None
    """What the trials cost (shown when they cost anything)."""

    def seed(self, trials: Iterable[FrozenTrial]) -> None:
        """Take the counts, the best (or front) and the cost of trials finished before this
        sweep."""
        trials = list(trials)
        for trial in trials:
            if trial.state.is_finished():
                self.prior[trial.state.name] = self.prior.get(trial.state.name, 0) + 1
            complete = trial.state == TrialState.COMPLETE and trial.values is not None
            if complete and feasible(trial):
                self._consider(tuple(trial.values), trial.number)
        if self.meter is not None:
            found = study_cost(trial.system_attrs.get(COST_KEY) for trial in trials)
            self.meter.prior = found[0] if found is not None else 0.0

    @property
    def seeded(self) -> int:
        """How many trials had finished before this sweep."""
        return sum(self.prior.values())

    def totals(self) -> dict[str, int]:
        """Finished trials of the whole study, by state."""
        return {
            state: self.prior.get(state, 0) + self.counts.get(state, 0)
            for state in ("COMPLETE", "PRUNED", "FAIL")
        }

    def record(self, trial: FinishedTrial) -> bool:
        """Count ``trial``; return True if it is a new best (or joins the front)."""
        self.counts[trial.state] = self.counts.get(trial.state, 0) + 1
        if trial.state == "COMPLETE" and trial.values is not None and trial.feasible:
            return self._consider(trial.values, trial.number)
        return False

    def _consider(self, values: tuple[float, ...], number: int) -> bool:
        signs = [1.0 if d == "minimize" else -1.0 for d in self.directions]
        if len(values) != len(signs):
            return False
        if len(signs) == 1:
            if self.best_values is None or signs[0] * values[0] < signs[0] * self.best_values[0]:
                self.best_values, self.best_number = values, number
                return True
            return False
        point = [s * v for s, v in zip(signs, values, strict=True)]
        if any(
            _dominates([s * v for s, v in zip(signs, other, strict=True)], point)
            for other, _ in self.front
        ):
            return False
        self.front = [
            (other, n)
            for other, n in self.front
            if not _dominates(point, [s * v for s, v in zip(signs, other, strict=True)])
        ]
        self.front.append((values, number))
        return True

    def snapshot(self) -> Snapshot:
        return Snapshot(
            study=self.study,
            directions=self.directions,
            complete=self.counts.get("COMPLETE", 0),
            pruned=self.counts.get("PRUNED", 0),
            failed=self.counts.get("FAIL", 0),
            running=self.running,
            n_trials=self.n_trials,
            timeout=self.timeout,
            elapsed=time.monotonic() - self.started,
            best_values=self.best_values,
            best_number=self.best_number,
            pareto_size=len(self.front),
            stopping=self.stopping,
            waiting=self.waiting,
            spend=self.meter.spend() if self.meter is not None and self.meter.priced else None,
        )


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether ``a`` Pareto-dominates ``b`` (both already signed for minimization)."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(
        x < y for x, y in zip(a, b, strict=True)
    )
