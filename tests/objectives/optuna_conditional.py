"""Written the way Optuna's examples are: a conditional search space, a settings block under
`if __name__ == "__main__":` that plain Optuna would run. The tests run it unmodified."""

import math

import optuna


def fit(classifier, params):
    # A stand-in for training: a smooth score with a known best region per classifier.
    if classifier == "svc":
        return 1.0 - abs(math.log10(params["svc_c"]) - 1.0) / 10.0
    return 0.9 - abs(params["rf_max_depth"] - 8) / 64.0


def objective(trial):
    classifier_name = trial.suggest_categorical("classifier", ["svc", "random_forest"])
    if classifier_name == "svc":
        svc_c = trial.suggest_float("svc_c", 1e-10, 1e10, log=True)
        params = {"svc_c": svc_c}
    else:
        rf_max_depth = trial.suggest_int("rf_max_depth", 2, 32, log=True)
        params = {"rf_max_depth": rf_max_depth}
    # The same name asked twice returns the same value.
    again = trial.suggest_categorical("classifier", ["svc", "random_forest"])
    assert again == classifier_name
    assert trial.params["classifier"] == classifier_name
    return fit(classifier_name, params)


if __name__ == "__main__":
    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=12)
    print(study.best_trial)
