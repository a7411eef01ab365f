"""The ``auto`` sampler: Gaussian-process Bayesian optimisation where it does best, TPE
elsewhere.

Measured by ``python -m bench`` (sample efficiency with 8 trials in flight): TPE loses much
of its efficiency when several trials run at once (each running trial counts as a bad one,
Optuna's "constant liar"), while Optuna's GPSampler chooses each new trial knowing the ones
still running (batch expected improvement, qLogEI). GP works on a fixed set of numerical or
categorical parameters, and its cost grows with the number of trials, so it is used when:

- the study has one objective,
- every finished trial asked for the same parameters (no conditional ones), at most
  ``max_params`` of them,
- fewer than ``max_trials`` trials have finished.

Otherwise TPE (Optuna's default) samples. Both start with random trials, and each trial is
sampled by one sampler from start to end.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState


class AutoSampler(BaseSampler):
    """GP for small fixed search spaces with one objective, TPE otherwise (see module)."""

    def __init__(
        self,
        *,
        seed: int | None = None,
        n_startup_trials: int = 10,
        max_params: int = 16,
        max_trials: int = 400,
    ) -> None:
        self._seed = seed
        self._n_startup_trials = n_startup_trials
        self._max_params = max_params
        self._max_trials = max_trials
        self._tpe = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)
        self._gp: BaseSampler | None = None  # built on first use: it imports torch
        self._chosen: dict[int, BaseSampler] = {}

    @property
    def gp(self) -> BaseSampler:
        if self._gp is None:
            self._gp = optuna.samplers.GPSampler(
                seed=self._seed, n_startup_trials=self._n_startup_trials
            )
        return self._gp

    def choose(self, study: optuna.Study) -> str:
        """``"gp"`` or ``"tpe"``, from the study's finished trials (see the module)."""
        if len(study.directions) > 1:
            return "tpe"
        trials = study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=True)
        if len(trials) < self._n_startup_trials or len(trials) >= self._max_trials:
            return "tpe"
        names = {frozenset(t.distributions) for t in trials}
        if len(names) != 1 or len(next(iter(names))) > self._max_params:
            return "tpe"
        return "gp"

    def _for(self, study: optuna.Study, trial: FrozenTrial) -> BaseSampler:
        sampler = self._chosen.get(trial.number)
        if sampler is None:
            sampler = self.gp if self.choose(study) == "gp" else self._tpe
            self._chosen[trial.number] = sampler
        return sampler

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._for(study, trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._for(study, trial).sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._for(study, trial).sample_independent(
            study, trial, param_name, param_distribution
        )

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._for(study, trial).before_trial(study, trial)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        sampler = self._chosen.pop(trial.number, None) or self._tpe
        sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._tpe.reseed_rng()
        if self._gp is not None:
            self._gp.reseed_rng()
