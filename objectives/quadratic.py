"""A fast numeric objective: the smallest example of an objective file.

Run it with

    python -m sweeper run objectives/quadratic.py

It finishes in seconds on any machine, so it is the one to try first. The function is
an ordinary Optuna objective: it asks the trial for parameters (define-by-run, so what it
asks may depend on earlier answers) and returns the value to minimize.
"""

import math

import optuna

# Settings for `python -m sweeper run`. Command-line flags override them; everything here is
# optional, and the file is read without being run, so keep it a literal dict.
SWEEP = {
    "direction": "minimize",
    "n_trials": 60,
    "parallel": 2,
    "sampler": "tpe",
}


def objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -10.0, 10.0)
    y = trial.suggest_float("y", -10.0, 10.0)
    # A conditional parameter: `shift` only exists in trials that chose the "shifted" surface.
    surface = trial.suggest_categorical("surface", ["plain", "shifted"])
    shift = trial.suggest_int("shift", 1, 3) if surface == "shifted" else 0
    return (x - 2.0) ** 2 + (y + 1.0) ** 2 + shift + 0.1 * math.sin(5 * x)


if __name__ == "__main__":
    # Plain Optuna still works on this file, in one process.
    study = optuna.create_study(direction="minimize")
    study.optimize(objective, n_trials=60)
    print(study.best_params)
