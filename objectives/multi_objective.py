"""Two objectives at once: the trade-off between error and cost.

    python -m sweeper run objectives/multi_objective.py

When an objective returns several values, there is usually no single best trial but a
Pareto front: the trials that no other trial beats on every value at once. This file
returns two values (the Binh and Korn test problem, with its constraint folded in as a
penalty) and says which way each one should go with one direction per value. At the end,
sweeper prints the front; `python -m sweeper best objectives/multi_objective.py` prints it
again later.

Pruning is for one objective only (as in Optuna), so this objective does not report.
"""

import optuna

SWEEP = {
    "directions": ["minimize", "minimize"],
    "n_trials": 80,
    "sampler": "nsga2",
    "sampler_args": {"population_size": 20},
}


def objective(trial: optuna.Trial) -> tuple[float, float]:
    x = trial.suggest_float("x", 0.0, 5.0)
    y = trial.suggest_float("y", 0.0, 3.0)
    cost = 4 * x**2 + 4 * y**2
    error = (x - 5) ** 2 + (y - 5) ** 2
    # Points outside the feasible region are pushed away from the front.
    violation = max(0.0, (x - 5) ** 2 + y**2 - 25) + max(0.0, 7.7 - (x - 8) ** 2 - (y + 3) ** 2)
    trial.set_user_attr("feasible", violation == 0.0)
    return cost + 100 * violation, error + 100 * violation


if __name__ == "__main__":
    study = optuna.create_study(directions=["minimize", "minimize"])
    study.optimize(objective, n_trials=80)
    print(f"{len(study.best_trials)} trials on the Pareto front")
