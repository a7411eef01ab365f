"""A budget given in seconds: ``study.optimize(objective, n_trials=500, timeout=1)``.

Imitates the many Optuna examples that cap a study by time as well as by count
(``study.optimize(objective, n_trials=100, timeout=600)``), shrunk to one second: under
plain Optuna the study stops after a second, long before its 500 trials.
"""

import time

import optuna


def objective(trial):
    x = trial.suggest_float("x", -10, 10)
    time.sleep(0.15)  # stands in for training a model
    return (x - 2) ** 2


if __name__ == "__main__":
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler())
    study.optimize(objective, n_trials=500, timeout=1)
    print(f"{len(study.trials)} trials in one second; best x = {study.best_params['x']:.3f}")
