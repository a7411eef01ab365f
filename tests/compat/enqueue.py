"""Hyperparameters the author knows are good, enqueued before the search starts.

Imitates the "Specify Hyperparameters Manually" tutorial of Optuna's documentation:
LightGBM's default parameters and one hand-picked set are given to
``study.enqueue_trial`` in the main block, so the first two trials evaluate them before
the sampler proposes anything.
"""

import logging
import sys

import lightgbm as lgb
import numpy as np
import optuna
import sklearn.datasets
import sklearn.metrics
from sklearn.model_selection import train_test_split


def objective(trial):
    data, target = sklearn.datasets.load_breast_cancer(return_X_y=True)
    train_x, valid_x, train_y, valid_y = train_test_split(data, target, test_size=0.25)
    dtrain = lgb.Dataset(train_x, label=train_y)

    param = {
        "objective": "binary",
        "metric": "auc",
        "verbosity": -1,
        "boosting_type": "gbdt",
        "bagging_fraction": min(trial.suggest_float("bagging_fraction", 0.4, 1.0 + 1e-12), 1),
        "bagging_freq": trial.suggest_int("bagging_freq", 0, 7),
        "min_child_samples": trial.suggest_int("min_child_samples", 5, 100),
    }
    gbm = lgb.train(param, dtrain, num_boost_round=30)
    preds = gbm.predict(valid_x)
    pred_labels = np.rint(preds)
    accuracy = sklearn.metrics.accuracy_score(valid_y, pred_labels)
    return accuracy


if __name__ == "__main__":
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner())
    study.enqueue_trial(
        {
            "bagging_fraction": 1.0,
            "bagging_freq": 0,
            "min_child_samples": 20,
        }
    )
    study.enqueue_trial(
        {
            "bagging_fraction": 0.75,
            "bagging_freq": 5,
        }
    )

    optuna.logging.get_logger("optuna").addHandler(logging.StreamHandler(sys.stdout))
    study.optimize(objective, n_trials=20, timeout=600)
    print("Best params:", study.best_params)
