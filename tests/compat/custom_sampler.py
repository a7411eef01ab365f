"""A sampler class written in the objective file itself.

Imitates the "User-Defined Sampler" tutorial of Optuna's documentation: a
``SimulatedAnnealingSampler`` subclasses ``BaseSampler``, samples the relative search space
around the current trial, and falls back to random sampling for parameters outside it. As
its author would for parallel trials, it anneals from the last *finished* trial (the
tutorial's ``study.trials[-2]`` may still be running when trials run side by side).
"""

import numpy as np
import optuna
from optuna.trial import TrialState


class SimulatedAnnealingSampler(optuna.samplers.BaseSampler):
    def __init__(self, temperature=100, seed=None):
        self._rng = np.random.RandomState(seed)
        self._temperature = temperature  # Current temperature.
        self._current_trial = None  # Current state.
        self._independent_sampler = optuna.samplers.RandomSampler(seed=seed)

    def sample_relative(self, study, trial, search_space):
        if search_space == {}:
            return {}

        # Simulated Annealing algorithm.
        # 1. Calculate transition probability.
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        prev_trial = finished[-1]
        if self._current_trial is None or prev_trial.value <= self._current_trial.value:
            probability = 1.0
        else:
            probability = np.exp(
                (self._current_trial.value - prev_trial.value) / self._temperature
            )
        self._temperature *= 0.9  # Decrease temperature.

        # 2. Transit the current state if the previous result is accepted.
        if self._rng.uniform(0, 1) < probability:
            self._current_trial = prev_trial

        # 3. Sample parameters from the neighborhood of the current point.
        # The sampled parameters will be used during the next execution of
        # the objective function passed to the study.
        params = {}
        for param_name, param_distribution in search_space.items():
            if (
                not isinstance(param_distribution, optuna.distributions.FloatDistribution)
                or (param_distribution.step is not None and param_distribution.step != 1)
                or param_distribution.log
            ):
                msg = (
                    "Only suggest_float() with `step` `None` or 1.0 and `log` `False` is supported"
                )
                raise NotImplementedError(msg)

            current_value = self._current_trial.params[param_name]
            width = (param_distribution.high - param_distribution.low) * 0.1
            neighbor_low = max(current_value - width, param_distribution.low)
            neighbor_high = min(current_value + width, param_distribution.high)
            params[param_name] = self._rng.uniform(neighbor_low, neighbor_high)

        return params

    # The rest are unrelated to SA algorithm: boilerplate
    def infer_relative_search_space(self, study, trial):
        return optuna.search_space.intersection_search_space(study.get_trials(deepcopy=False))

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._independent_sampler.sample_independent(
            study, trial, param_name, param_distribution
        )


def objective(trial):
    x = trial.suggest_float("x", -10, 10)
    y = trial.suggest_float("y", -5, 5)
    return x**2 + y


if __name__ == "__main__":
    sampler = SimulatedAnnealingSampler(seed=1)
    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=50)

    best_trial = study.best_trial
    print("Best value: ", best_trial.value)
    print("Parameters that achieve the best value: ", best_trial.params)
