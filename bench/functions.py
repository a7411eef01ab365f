"""Objectives the benchmarks run: test functions with known optima, and synthetic trials.

Importable by sweeper's workers (they load these by name), so keep them at module level.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import time

import optuna

import sweeper

# -- test functions (minimize), with their global minimum -----------------------------------


def branin(x: float, y: float) -> float:
    a, b, c, r, s, t = 1.0, 5.1 / (4 * math.pi**2), 5 / math.pi, 6.0, 10.0, 1 / (8 * math.pi)
    return a * (y - b * x**2 + c * x - r) ** 2 + s * (1 - t) * math.cos(x) + s


_HARTMANN_A = [
    [10, 3, 17, 3.5, 1.7, 8],
    [0.05, 10, 17, 0.1, 8, 14],
    [3, 3.5, 1.7, 10, 17, 8],
    [17, 8, 0.05, 10, 0.1, 14],
]
_HARTMANN_P = [
    [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
    [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
    [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
    [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
]
_HARTMANN_ALPHA = [1.0, 1.2, 3.0, 3.2]


def hartmann6(xs: list[float]) -> float:
    total = 0.0
    for alpha, row_a, row_p in zip(_HARTMANN_ALPHA, _HARTMANN_A, _HARTMANN_P, strict=True):
        inner = sum(a * (x - p) ** 2 for a, x, p in zip(row_a, xs, row_p, strict=True))
        total += alpha * math.exp(-inner)
    return -total


def rosenbrock(xs: list[float]) -> float:
    return sum(100 * (b - a * a) ** 2 + (1 - a) ** 2 for a, b in itertools.pairwise(xs))


def branin_objective(trial: optuna.trial.BaseTrial) -> float:
    return branin(trial.suggest_float("x", -5, 10), trial.suggest_float("y", 0, 15))


def hartmann6_objective(trial: optuna.trial.BaseTrial) -> float:
    return hartmann6([trial.suggest_float(f"x{i}", 0, 1) for i in range(6)])


def rosenbrock5_objective(trial: optuna.trial.BaseTrial) -> float:
    return rosenbrock([trial.suggest_float(f"x{i}", -2, 2) for i in range(5)])


FUNCTIONS = {
    "branin": (branin_objective, 0.397887),
    "hartmann6": (hartmann6_objective, -3.32237),
    "rosenbrock5": (rosenbrock5_objective, 0.0),
}


def slowed(name: str) -> object:
    """The test function as a trial that takes a little time (a random 20-80 ms, fixed per
    trial), so trials in flight finish in a realistic, shuffled order."""
    objective, _ = FUNCTIONS[name]

    def run(trial: optuna.trial.BaseTrial) -> float:
        value = objective(trial)
        time.sleep(random.Random(trial.number).uniform(0.02, 0.08))
        return value

    run.__name__ = f"slowed_{name}"
    return run


def slowed_branin(trial: optuna.trial.BaseTrial) -> float:
    return slowed("branin")(trial)  # type: ignore[operator,no-any-return]


def slowed_hartmann6(trial: optuna.trial.BaseTrial) -> float:
    return slowed("hartmann6")(trial)  # type: ignore[operator,no-any-return]


def slowed_rosenbrock5(trial: optuna.trial.BaseTrial) -> float:
    return slowed("rosenbrock5")(trial)  # type: ignore[operator,no-any-return]


# -- synthetic trials -----------------------------------------------------------------------


def noop(trial: optuna.trial.BaseTrial) -> float:
    """As cheap as an objective gets: two parameters, no work."""
    return trial.suggest_float("x", 0, 1) + trial.suggest_float("y", 0, 1)


def sleeper(trial: optuna.trial.BaseTrial) -> float:
    """Sleeps BENCH_SLEEP seconds."""
    x = trial.suggest_float("x", 0, 1)
    time.sleep(float(os.environ["BENCH_SLEEP"]))
    return x


def logger(trial: optuna.trial.BaseTrial) -> float:
    """Busy for BENCH_SECONDS, logging BENCH_RATE scalars per second (like a training loop
    that logs its loss)."""
    x = trial.suggest_float("x", 0, 1)
    rate, seconds = float(os.environ["BENCH_RATE"]), float(os.environ["BENCH_SECONDS"])
    steps = int(rate * seconds)
    for step in range(steps):
        end = time.perf_counter() + 1.0 / rate
        total = 0.0
        while time.perf_counter() < end:  # work, not sleep: the cores are busy
            total += 1.0
        sweeper.log({"loss": x / (step + 1)}, step=step)
    return x
