"""Uses the rest of the trial API: user attributes, number, params, the study, constraints."""

import os

import optuna

LOADED_BY = os.getpid()  # module-level code: runs once per worker


def objective(trial):
    x = trial.suggest_int("x", 0, 10)
    trial.set_user_attr("worker_pid", LOADED_BY)
    trial.set_user_attr("number_seen", trial.number)
    trial.set_user_attr("params_seen", trial.params)
    trial.set_user_attr("study_name", trial.study.study_name)
    trial.set_constraint("x_small", x - 8)
    assert isinstance(trial, optuna.trial.BaseTrial)
    return float(x)
