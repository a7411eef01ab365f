"""An objective that reads its study and leaves notes on its trial.

Imitates the ``trial.study`` and ``set_user_attr`` recipes of Optuna's documentation ("User
Attributes"): each trial records the best value it had to beat (``trial.study.best_value``,
which raises ``ValueError`` until a trial has completed), whether it improved on it, and how
it compares with a baseline the author set on the study in the main block.
"""

import optuna


def objective(trial):
    x = trial.suggest_float("x", -5, 5)
    y = trial.suggest_float("y", -5, 5)
    value = (x - 1) ** 2 + (y - 2) ** 2

    try:
        best = trial.study.best_value
    except ValueError:  # no trial has completed yet
        best = None
    trial.set_user_attr("best_before", best)
    trial.set_user_attr("improved", best is None or value < best)

    baseline = trial.study.user_attrs.get("baseline")
    if baseline is not None:
        trial.set_user_attr("beats_baseline", value < baseline)
    return value


if __name__ == "__main__":
    study = optuna.create_study(study_name="study-reads")
    study.set_user_attr("baseline", 4.0)
    study.set_user_attr("author", "compat suite")
    study.optimize(objective, n_trials=20)

    improved = [t.number for t in study.trials if t.user_attrs.get("improved")]
    print("trials that improved on the best so far:", improved)
    print("best:", study.best_value, study.best_params)
