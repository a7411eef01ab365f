"""Stopping a study automatically with Optuna's terminator.

Imitates the ``optuna.terminator`` example of Optuna's reference: each trial reports its
cross-validation scores with ``report_cross_validation_scores``, so that
``TerminatorCallback`` can weigh the room left for improvement against the statistical
error of the scores and stop the study when searching further is not worth it.
"""

import optuna
from optuna.terminator import TerminatorCallback, report_cross_validation_scores
from sklearn.datasets import load_wine
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import KFold, cross_val_score


def objective(trial):
    X, y = load_wine(return_X_y=True)

    clf = RandomForestClassifier(
        n_estimators=10,
        max_depth=trial.suggest_int("max_depth", 2, 32),
        min_samples_split=trial.suggest_float("min_samples_split", 0.01, 1),
        criterion=trial.suggest_categorical("criterion", ("gini", "entropy")),
    )

    scores = cross_val_score(clf, X, y, cv=KFold(n_splits=5, shuffle=True))
    report_cross_validation_scores(trial, scores)
    return scores.mean()


if __name__ == "__main__":
    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=30, callbacks=[TerminatorCallback()])

    print(f"The number of trials: {len(study.trials)}")
    print(f"Best value: {study.best_value} (params: {study.best_params})")
