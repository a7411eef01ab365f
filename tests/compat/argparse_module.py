"""A training script that parses its command line at import time.

Imitates the many PyTorch-style scripts (and Optuna examples adapted from them) whose
``args = parser.parse_args()`` sits at module level, next to the data loading, so that the
objective can read ``args.epochs``; run without arguments, the defaults apply.
"""

import argparse

import numpy as np
import optuna

parser = argparse.ArgumentParser(description="Fit a noisy line by gradient descent.")
parser.add_argument("--epochs", type=int, default=30)
parser.add_argument("--n-trials", type=int, default=20)
args = parser.parse_args()

rng = np.random.default_rng(0)
X = rng.uniform(-1, 1, size=200)
Y = 3 * X + 0.5 + rng.normal(0, 0.1, size=200)


def objective(trial):
    lr = trial.suggest_float("lr", 1e-3, 1.0, log=True)
    w, b = 0.0, 0.0
    for epoch in range(args.epochs):
        error = w * X + b - Y
        w -= lr * 2 * np.mean(error * X)
        b -= lr * 2 * np.mean(error)
        trial.report(float(np.mean(error**2)), epoch)
    return float(np.mean((w * X + b - Y) ** 2))


if __name__ == "__main__":
    study = optuna.create_study()
    study.optimize(objective, n_trials=args.n_trials)
    print("Best lr:", study.best_params["lr"], "mse:", study.best_value)
