"""Constrained optimization with TPE, as in Optuna's FAQ.

Imitates the FAQ entry "How can I optimize a model with some constraints?": the objective
stores its constraint values in a user attribute, ``constraints_func`` hands them to the
sampler (a value <= 0 is feasible), and the sampler is built in the main block, then given
to ``create_study``.
"""

import optuna


def objective(trial):
    x = trial.suggest_float("x", -15, 30)
    y = trial.suggest_float("y", -15, 30)

    # Constraints which are considered feasible if less than or equal to zero.
    c0 = (x - 5) ** 2 + y**2 - 25
    c1 = -((x - 8) ** 2) - (y + 3) ** 2 + 7.7

    # Store the constraints as user attributes so that they can be restored after optimization.
    trial.set_user_attr("constraint", (c0, c1))

    return 4 * x**2 + 4 * y**2


def constraints(trial):
    return trial.user_attrs["constraint"]


if __name__ == "__main__":
    sampler = optuna.samplers.TPESampler(constraints_func=constraints, n_startup_trials=5)
    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=30)

    feasible = [
        t
        for t in study.trials
        if t.value is not None and all(c <= 0 for c in t.user_attrs["constraint"])
    ]
    print(f"{len(feasible)} of {len(study.trials)} trials are feasible")
    if feasible:
        best = min(feasible, key=lambda t: t.value)
        print("Best feasible trial:", best.number, best.value, best.params)
