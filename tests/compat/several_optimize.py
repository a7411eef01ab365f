"""One study, optimized in several calls.

Imitates the "Re-use the best values" / "Ask more trials" patterns of Optuna's
documentation: a first quick round, a look at the best value, more trials with a different
budget, and a last round capped by time. Under plain Optuna the three calls add up to one
study.
"""

import time

import optuna


def objective(trial):
    x = trial.suggest_float("x", -10, 10)
    y = trial.suggest_float("y", -10, 10)
    time.sleep(0.15)
    return (x - 2) ** 2 + (y + 1) ** 2


if __name__ == "__main__":
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(n_startup_trials=5))
    study.optimize(objective, n_trials=5)
    print("after a first round:", study.best_value)

    study.optimize(objective, n_trials=5)
    print("after a second round:", study.best_value)

    study.optimize(objective, timeout=1)
    print(f"after {len(study.trials)} trials in all:", study.best_value, study.best_params)
