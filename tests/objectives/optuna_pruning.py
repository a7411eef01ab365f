"""Pruning the way Optuna's examples do it: report every step, ask should_prune, raise."""

import optuna


def objective(trial):
    alpha = trial.suggest_float("alpha", 1e-5, 1e-1, log=True)
    score = 0.0
    for step in range(20):
        # Trials with a large alpha learn slowly: the pruner should stop some of them.
        score += (1.0 - score) * (0.3 if alpha < 1e-3 else 0.02)
        trial.report(score, step)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return score


if __name__ == "__main__":
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=3)
    )
    study.optimize(objective, n_trials=24)
