"""Cross-validated random forest, in the style of Optuna's scikit-learn examples.

Imitates ``examples/sklearn/sklearn_simple.py`` and the "Quick Start" of Optuna's
documentation: the objective builds a model from suggested hyperparameters and returns the
mean of ``cross_val_score``; the study maximizes it with a seeded TPE sampler.
"""

import optuna
import sklearn.datasets
import sklearn.ensemble
import sklearn.model_selection

X, y = sklearn.datasets.load_breast_cancer(return_X_y=True)


def objective(trial):
    n_estimators = trial.suggest_int("n_estimators", 5, 20)
    max_depth = trial.suggest_int("max_depth", 2, 32, log=True)
    min_samples_split = trial.suggest_float("min_samples_split", 0.01, 0.5)
    classifier = sklearn.ensemble.RandomForestClassifier(
        n_estimators=n_estimators,
        max_depth=max_depth,
        min_samples_split=min_samples_split,
        n_jobs=1,
        random_state=0,
    )
    score = sklearn.model_selection.cross_val_score(classifier, X, y, n_jobs=1, cv=3)
    return score.mean()


if __name__ == "__main__":
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=42))
    study.optimize(objective, n_trials=20)

    print("Number of finished trials:", len(study.trials))
    print("Best trial:")
    trial = study.best_trial
    print("  Value:", trial.value)
    print("  Params:")
    for key, value in trial.params.items():
        print(f"    {key}: {value}")
