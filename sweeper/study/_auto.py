"""The ``auto`` sampler: Gaussian-process Bayesian optimisation where it does best, TPE for
the rest, and TPE for the trials GP has no time for.

Measured by ``python -m bench``: Optuna's GPSampler chooses each new trial knowing the ones
still running (batch expected improvement, qLogEI) and needs far fewer trials than TPE to
reach a target on smooth numerical problems (Hartmann-6: 30-50 against 60-130). But a GP
suggestion costs tenths of a second, more as the study grows, and a TPE one milliseconds:
with many workers and short trials, GP alone cannot sample as fast as workers free up. So
in a sweep GP samples every trial it has time for, and a copy of this sampler that never
uses GP (:meth:`filler`) samples the others with TPE, on another thread or process: every
worker stays busy, and GP still sees, and conditions on, every trial. With few workers or
long trials GP has time for all of them; with 64 workers and one-second trials it samples a
few a second and TPE the rest, which reached the target sooner in the capacity benchmark
than either alone.

GP is used for a trial when:

- the study has one objective,
- every finished trial asked for the same parameters (no conditional ones), at most
  ``max_params`` of them,
- fewer than ``max_trials`` trials have finished (GP's cost grows with them),

and otherwise TPE (Optuna's default). Both start with random trials, and each trial is
sampled by one sampler from start to end. Each change of sampler is announced once, with
its reason (:meth:`take_notes`).
"""

from __future__ import annotations

import copy
import threading
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
        self._uses_gp = True
        self._tpe = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)
        self._gp: BaseSampler | None = None  # built on first use: it imports torch
        self._chosen: dict[int, BaseSampler] = {}
        self._current: str | None = None
        self._notes: list[str] = []
        self._lock = threading.Lock()

    @property
    def gp(self) -> BaseSampler:
        if self._gp is None:
            self._gp = optuna.samplers.GPSampler(
                seed=self._seed, n_startup_trials=self._n_startup_trials
            )
        return self._gp

    @property
    def uses_gp(self) -> bool:
        """False for a :meth:`filler`."""
        return self._uses_gp

    def filler(self) -> AutoSampler:
        """A copy that samples with TPE where this one would use GP: it samples, beside
        this one, the trials GP has no time for. Its random numbers are its own."""
        other = copy.deepcopy(self)
        other._uses_gp = False
        other._gp = None
        other._chosen = {}
        other._notes = []
        other.reseed_rng()
        return other

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_lock"]  # sent to a sampler process, or copied: locks do not pickle
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

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
        if not self._uses_gp:
            return "tpe", "filler"
        return "gp", (
            f"one objective and a fixed space of {n_params} parameters (TPE samples the "
            "trials GP has no time for)"
        )

    def _for(self, study: optuna.Study, trial: FrozenTrial) -> BaseSampler:
        sampler = self._chosen.get(trial.number)
        if sampler is None:
            choice, reason = self._decide(study)
            sampler = self.gp if choice == "gp" else self._tpe
            self._chosen[trial.number] = sampler
            if len(self._chosen) > 2000:  # a producer's copy asks but never tells: forget
                for number in list(self._chosen)[:1000]:
                    del self._chosen[number]
            if reason not in ("startup", "filler") and choice != self._current:
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
