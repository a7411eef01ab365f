"""Pruning the way Optuna's examples do it: report every step, ask should_prune, raise."""

import math

import optuna


def objective(trial):
    alpha = trial.suggest_float("alpha", 1e-5, 1e-1, log=True)
    # The larger alpha, the slower the learning: every trial has its own curve, so those
    # below the median curve get pruned.
    rate = 0.3 - 0.25 * (math.log10(alpha) + 5) / 4
    score = 0.0
    for step in range(20):
        score += (1.0 - score) * rate
        trial.report(score, step)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return score


if __name__ == "__main__":
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=3)
    )
    study.optimize(objective, n_trials=24)
