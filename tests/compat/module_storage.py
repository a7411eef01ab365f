"""A storage built at import time, as scripts that share one database do.

Imitates the "Saving/Resuming Study with RDB Backend" tutorial of Optuna's documentation,
written the way many scripts write it: ``optuna.storages.RDBStorage("sqlite:///...")`` at
module level, and ``create_study(storage=storage, study_name=..., load_if_exists=True)`` in
the main block, so running the script again continues the study.
"""

import optuna
import sklearn.datasets
import sklearn.linear_model
import sklearn.model_selection

storage = optuna.storages.RDBStorage("sqlite:///example.db")

X, y = sklearn.datasets.load_diabetes(return_X_y=True)


def objective(trial):
    alpha = trial.suggest_float("alpha", 1e-4, 10.0, log=True)
    model = sklearn.linear_model.Ridge(alpha=alpha)
    return sklearn.model_selection.cross_val_score(model, X, y, cv=3).mean()


if __name__ == "__main__":
    study = optuna.create_study(
        study_name="ridge-diabetes",
        storage=storage,
        direction="maximize",
        load_if_exists=True,
    )
    study.optimize(objective, n_trials=20)
    print(f"{len(study.trials)} trials stored in example.db; best alpha {study.best_params}")
