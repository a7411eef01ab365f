"""A callback of the author's own, passed to ``study.optimize(callbacks=[...])``.

Imitates the callbacks of Optuna's FAQ and recipes: a small class with
``__call__(self, study, trial)`` that is called after every finished trial; this one
appends each trial to a CSV file and keeps the number of trials seen in a study user
attribute, as people do to follow a long study from outside.
"""

import csv
import math

import optuna

LOG_FILE = "trials.csv"


class CsvLogger:
    def __init__(self, path):
        self.path = path

    def __call__(self, study, trial):
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([trial.number, trial.state.name, trial.value])
        study.set_user_attr("trials_logged", study.user_attrs.get("trials_logged", 0) + 1)


def objective(trial):
    x = trial.suggest_float("x", -4, 4)
    return math.sin(x) + 0.1 * x**2


if __name__ == "__main__":
    study = optuna.create_study()
    study.optimize(objective, n_trials=20, callbacks=[CsvLogger(LOG_FILE)])
    print("logged", study.user_attrs["trials_logged"], "trials to", LOG_FILE)
