"""Settings from the command line, parsed in the main block.

Imitates the examples that take ``--n-trials``, ``--seed`` and the like with ``argparse``
(for instance ``examples/pytorch/pytorch_lightning_simple.py``'s ``--pruning``): the parsed
values build the sampler and the budget, so the sampler's arguments are variables, not
literals.
"""

import argparse

import optuna
import sklearn.datasets
import sklearn.linear_model
import sklearn.model_selection

X, y = sklearn.datasets.load_diabetes(return_X_y=True)


def objective(trial):
    alpha = trial.suggest_float("alpha", 1e-4, 10.0, log=True)
    l1_ratio = trial.suggest_float("l1_ratio", 0.0, 1.0)
    model = sklearn.linear_model.ElasticNet(alpha=alpha, l1_ratio=l1_ratio, max_iter=2000)
    return sklearn.model_selection.cross_val_score(model, X, y, cv=3).mean()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Tune an elastic net on the diabetes data.")
    parser.add_argument("--n-trials", type=int, default=20, help="number of trials")
    parser.add_argument("--seed", type=int, default=None, help="seed for the sampler")
    args = parser.parse_args()

    sampler = optuna.samplers.TPESampler(seed=args.seed, multivariate=True)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=args.n_trials)
    print("Best R^2:", study.best_value, "with", study.best_params)
