"""A budget set by a callback: ``MaxTrialsCallback`` in ``study.optimize``.

Imitates the ``MaxTrialsCallback`` example of Optuna's reference: the optimize call asks for
more trials than the author wants, and the callback stops the study once ten trials have
completed (the pattern for several processes sharing one study).
"""

import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState


def objective(trial):
    x = trial.suggest_float("x", -1, 1)
    y = trial.suggest_int("y", -1, 1)
    return x**2 + y


if __name__ == "__main__":
    study = optuna.create_study()
    study.optimize(
        objective,
        n_trials=50,
        callbacks=[MaxTrialsCallback(10, states=(TrialState.COMPLETE,))],
    )
    print(f"{len(study.trials)} trials, best {study.best_value}")
