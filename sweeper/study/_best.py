"""The best trial (or Pareto front) of a study, by Optuna's own rule for constraints."""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial


def feasible(trial: FrozenTrial) -> bool:
    """Whether ``trial`` meets the constraints its sampler stored for it (each value <= 0),
    the rule ``study.best_trial`` applies; a trial without constraints is feasible."""
    return all(value <= 0.0 for value in trial.constraints.values())


def best_of(study: optuna.Study) -> list[FrozenTrial]:
    """The best trial, or the Pareto front, among the feasible completed trials; empty when
    there is none (Optuna raises instead)."""
    try:
        if len(study.directions) == 1:
            return [study.best_trial]
        return list(study.best_trials)
    except ValueError:  # no completed trial, or none that meets the constraints
        return []
