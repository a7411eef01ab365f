"""An exhaustive grid, with the grid defined in the main block.

Imitates the ``GridSampler`` example of Optuna's reference: the search space is a dict of
candidate values held in a variable, the sampler is built from it, and ``optimize`` is
called without ``n_trials`` because the grid sampler stops the study once every point has
been tried.
"""

import optuna


def objective(trial):
    x = trial.suggest_float("x", -100, 100)
    y = trial.suggest_int("y", -100, 100)
    return x**2 + y**2


if __name__ == "__main__":
    search_space = {"x": [-50, 0, 50], "y": [-99, 0, 99]}
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(search_space))
    study.optimize(objective)
    print(f"{len(study.trials)} grid points; best {study.best_params}")
