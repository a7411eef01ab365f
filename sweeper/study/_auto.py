"""The ``auto`` sampler: Gaussian-process Bayesian optimisation where it does best and can
keep up, TPE elsewhere.

Measured by ``python -m bench`` (sample efficiency with 8 trials in flight): TPE samples each
trial as if the ones still running did not exist, while Optuna's GPSampler chooses each new
trial knowing them (batch expected improvement, qLogEI), and needs fewer trials to reach a
target. But a GP suggestion costs tenths of a second (more as the study grows), a TPE one
milliseconds: with many workers and short trials, GP cannot sample as fast as the workers
need trials, and the sweep would wait for it. So GP is used when:

- the study has one objective,
- every finished trial asked for the same parameters (no conditional ones), at most
  ``max_params`` of them,
- fewer than ``max_trials`` trials have finished,
- and GP keeps up: the time one GP suggestion takes (measured as the sweep goes; at first
  ``gp_seconds``) times the rate at which workers need trials (told by the orchestrator,
  :meth:`observe_demand`) is at most ``max_load``. With no rate told (plain
  ``study.optimize``), this condition holds.

Otherwise TPE (Optuna's default) samples. Both start with random trials, and each trial is
sampled by one sampler from start to end. Each change of sampler is announced once, with
its reason (:meth:`take_notes`).
"""

from __future__ import annotations

import threading
import time
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
        max_load: float = 0.5,
        gp_seconds: float = 0.2,
    ) -> None:
        self._seed = seed
        self._n_startup_trials = n_startup_trials
        self._max_params = max_params
        self._max_trials = max_trials
        self._max_load = max_load
        self._tpe = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)
        self._gp: BaseSampler | None = None  # built on first use: it imports torch
        self._chosen: dict[int, BaseSampler] = {}
        self._gp_seconds = gp_seconds
        self._demand: float | None = None
        self._current: str | None = None
        self._too_slow = False
        self._notes: list[str] = []
        self._lock = threading.Lock()

    @property
    def gp(self) -> BaseSampler:
        if self._gp is None:
            self._gp = optuna.samplers.GPSampler(
                seed=self._seed, n_startup_trials=self._n_startup_trials
            )
        return self._gp

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_lock"]  # sent to a sampler process: locks do not pickle
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def observe_demand(self, trials_per_second: float) -> None:
        """How many trials a second the workers need (the orchestrator says so as it goes)."""
        self._demand = trials_per_second

    def take_notes(self) -> list[str]:
        """What changed in the choice of sampler since the last call, and why."""
        with self._lock:
            notes, self._notes = self._notes, []
        return notes

    def choose(self, study: optuna.Study) -> str:
        """``"gp"`` or ``"tpe"``, from the study's finished trials (see the module)."""
        return self._decide(study)[0]

    def _decide(self, study: optuna.Study) -> tuple[str, str]:
        """The sampler for the next trial, and why (for the note when it changes)."""
        if len(study.directions) > 1:
            return "tpe", "the study has several objectives"
        trials = study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=True)
        if len(trials) < self._n_startup_trials:
            return "tpe", "startup"
        if len(trials) >= self._max_trials:
            return "tpe", f"{self._max_trials} trials have finished, where GP grows slow"
        names = {frozenset(t.distributions) for t in trials}
        if len(names) != 1:
            return "tpe", "trials ask for different parameters (a conditional search space)"
        n_params = len(next(iter(names)))
        if n_params > self._max_params:
            return "tpe", f"there are {n_params} parameters, more than GP handles well"
        space = f"one objective and a fixed space of {n_params} parameters"
        demand = self._demand
        if demand is None:
            return "gp", space
        wording = (
            f"a GP suggestion takes {self._gp_seconds:.2g} s and the workers need "
            f"{demand:.3g} trials/s"
        )
        # Once GP proved too slow, it comes back only well below the limit.
        limit = self._max_load / 2 if self._too_slow else self._max_load
        self._too_slow = demand * self._gp_seconds > limit
        if self._too_slow:
            return "tpe", f"{wording}, so GP would keep them waiting"
        return "gp", f"{space}, and {wording}"

    def _for(self, study: optuna.Study, trial: FrozenTrial) -> BaseSampler:
        sampler = self._chosen.get(trial.number)
        if sampler is None:
            choice, reason = self._decide(study)
            sampler = self.gp if choice == "gp" else self._tpe
            self._chosen[trial.number] = sampler
            if reason != "startup" and choice != self._current:
                self._current = choice
                name = "Gaussian process (GP)" if choice == "gp" else "TPE"
                with self._lock:
                    self._notes.append(
                        f"auto sampler: {name} from trial {trial.number}: {reason}."
                    )
        return sampler

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._for(study, trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        sampler = self._for(study, trial)
        if sampler is not self._gp or not search_space:
            return sampler.sample_relative(study, trial, search_space)
        started = time.perf_counter()
        params = sampler.sample_relative(study, trial, search_space)
        seconds = time.perf_counter() - started
        self._gp_seconds = 0.7 * self._gp_seconds + 0.3 * seconds
        return params

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
