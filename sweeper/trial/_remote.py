"""The trial object an objective receives in a worker."""

from __future__ import annotations

import copy
import datetime
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalChoiceType,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    check_distribution_compatibility,
)

from sweeper.channel._base import TrialChannel
from sweeper.trial._messages import TrialSpec

# Attributes of the study that an objective may read through ``trial.study``.
STUDY_ATTRIBUTES = frozenset(
    {
        "best_params",
        "best_trial",
        "best_trials",
        "best_value",
        "metric_names",
        "study_name",
        "system_attrs",
        "trials",
        "user_attrs",
    }
)
# Storage methods an objective (or Optuna's helpers, given the trial) may call through
# ``trial.storage`` / ``trial.study._storage``: reads, and writes to this trial or its study.
STORAGE_READS = frozenset(
    {
        "get_all_trials",
        "get_best_trial",
        "get_n_trials",
        "get_study_directions",
        "get_study_system_attrs",
        "get_study_user_attrs",
        "get_trial",
        "get_trial_id_from_study_id_trial_number",
        "get_trial_number_from_id",
        "get_trial_params",
        "get_trial_system_attrs",
        "get_trial_user_attrs",
    }
)
TRIAL_WRITES = frozenset(
    {"set_trial_intermediate_value", "set_trial_system_attr", "set_trial_user_attr"}
)
STUDY_WRITES = frozenset({"set_study_system_attr", "set_study_user_attr"})


class RemoteTrial(optuna.trial.Trial):
    """Behaves like :class:`optuna.Trial`, inside a worker (and is one, for Optuna's helpers
    that take a trial: ``optuna.artifacts.upload_artifact``, the terminator's
    ``report_cross_validation_scores``, integration callbacks).

    Suggestions that the orchestrator could decide up front (enqueued or retried
    parameters, and those the sampler samples jointly) travel with the trial and are answered
    here; the orchestrator is told about them without waiting. Every other suggestion,
    ``should_prune`` and ``trial.study`` are answered by the orchestrator, against the real
    ``optuna.Trial`` and the study's sampler and pruner. Asking for the same name twice
    returns the first value, as in Optuna. ``trial.storage`` reads the study's storage and
    writes this trial's attributes, through the orchestrator (workers never open storage).

    Not thread-safe, like :class:`optuna.Trial`: use it from the objective's thread.
    """

    def __init__(self, spec: TrialSpec, channel: TrialChannel) -> None:
        # optuna.Trial.__init__ is not called: it would open the study's storage.
        self._spec = spec
        self._channel = channel
        self._params: dict[str, Any] = {}
        self._distributions: dict[str, BaseDistribution] = {}
        self._user_attrs: dict[str, Any] = dict(spec.user_attrs)
        self._constraints: dict[str, float] = {}
        self._steps: set[int] = set()
        self._trial_id = spec.trial_id if spec.trial_id is not None else -1
        storage = _StorageProxy(spec, channel)
        # Stand-ins with the parts of optuna.Study and BaseStorage an objective uses.
        self.storage = storage  # type: ignore[assignment]
        self.study = _StudyProxy(spec, channel, storage)  # type: ignore[assignment]

    # -- identity -----------------------------------------------------------------------

    @property
    def number(self) -> int:
        """The trial's number in its study."""
        return self._spec.number

    @property
    def datetime_start(self) -> datetime.datetime | None:
        return self._spec.datetime_start

    @property
    def params(self) -> dict[str, Any]:
        return copy.deepcopy(self._params)

    def params_view(self) -> dict[str, Any]:
        """The parameters so far, without a deep copy (for the trial's result)."""
        return dict(self._params)

    @property
    def distributions(self) -> dict[str, BaseDistribution]:
        return copy.deepcopy(self._distributions)

    @property
    def user_attrs(self) -> dict[str, Any]:
        return copy.deepcopy(self._user_attrs)

    @property
    def relative_params(self) -> dict[str, Any]:
        return dict(self._spec.relative_params)

    @property
    def constraints(self) -> dict[str, float]:
        return dict(self._constraints)

    @property
    def checkpoint_dir(self) -> Path:
        """A folder for this trial's checkpoints (created on first use).

        It is the same folder every time this trial runs: after a Modal container was
        preempted and the trial restarted, or when an interrupted sweep reruns the trial.
        On Modal it is on the sweep's Volume; call :meth:`commit_checkpoint` after writing.
        Also in the environment variable ``SWEEPER_CHECKPOINT_DIR``.
        """
        if self._spec.checkpoint_dir is None:
            raise RuntimeError("this trial has no checkpoint folder (run it with sweeper)")
        path = Path(self._spec.checkpoint_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def commit_checkpoint(self) -> None:
        """Make what was written to :attr:`checkpoint_dir` survive this container.

        On Modal this commits the Volume, so a restarted trial finds the files; on local
        workers the files are on disk already and this does nothing.
        """
        volume = os.environ.get("SWEEPER_VOLUME")
        if volume:
            import modal

            modal.Volume.from_name(volume).commit()

    # -- suggestions --------------------------------------------------------------------

    def suggest_float(
        self,
        name: str,
        low: float,
        high: float,
        *,
        step: float | None = None,
        log: bool = False,
    ) -> float:
        distribution = FloatDistribution(low, high, log=log, step=step)
        kwargs = {"step": step, "log": log}
        return float(self._ask_for("suggest_float", name, distribution, (low, high), kwargs))

    def suggest_uniform(self, name: str, low: float, high: float) -> float:
        _warn_deprecated("suggest_uniform", "suggest_float(..., low, high)")
        return self.suggest_float(name, low, high)

    def suggest_loguniform(self, name: str, low: float, high: float) -> float:
        _warn_deprecated("suggest_loguniform", "suggest_float(..., log=True)")
        return self.suggest_float(name, low, high, log=True)

    def suggest_discrete_uniform(self, name: str, low: float, high: float, q: float) -> float:
        _warn_deprecated("suggest_discrete_uniform", "suggest_float(..., step=...)")
        return self.suggest_float(name, low, high, step=q)

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        distribution = IntDistribution(low=low, high=high, log=log, step=step)
        kwargs = {"step": step, "log": log}
        return int(self._ask_for("suggest_int", name, distribution, (low, high), kwargs))

    def suggest_categorical(  # type: ignore[override]
        self, name: str, choices: Sequence[CategoricalChoiceType]
    ) -> CategoricalChoiceType:
        distribution = CategoricalDistribution(choices=choices)
        value: CategoricalChoiceType = self._ask_for(
            "suggest_categorical", name, distribution, (tuple(choices),), {}
        )
        return value

    def _ask_for(
        self,
        method: str,
        name: str,
        distribution: BaseDistribution,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        if name in self._distributions:
            check_distribution_compatibility(self._distributions[name], distribution)
            if self._distributions[name] != distribution:
                warnings.warn(
                    f'Inconsistent parameter values for distribution with name "{name}"! '
                    "Optuna uses the values of the first call and ignores the rest: "
                    f"{self._distributions[name]._asdict()}",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return self._params[name]
        # A value the trial carries is recorded without a round trip. Where sending is cheap
        # (local workers) it goes at once, so that a trial that crashes a moment later still
        # shows its parameters; where a send is a network round trip (Modal) it goes with the
        # trial's next message, or within a batch delay: the orchestrator decided the value,
        # and a rerun of the trial carries it again.
        spec = self._spec
        urgent = self._channel.cheap_sends
        if name in spec.fixed_params:
            value = spec.fixed_params[name]
            self._channel.notify(method, name, *args, urgent=urgent, **kwargs)
        elif self._is_relative(name, distribution):
            value = spec.relative_params[name]
            self._channel.notify(method, name, *args, urgent=urgent, **kwargs)
        elif name in spec.proposals and spec.proposals[name][0] == distribution:
            value = spec.proposals[name][1]
            self._channel.notify(method, name, *args, urgent=urgent, **kwargs)
        else:
            value = self._channel.request(method, name, *args, **kwargs)
        self._params[name] = value
        self._distributions[name] = distribution
        return value

    def _is_relative(self, name: str, distribution: BaseDistribution) -> bool:
        # Mirrors optuna.Trial._is_relative_param, so the orchestrator's replay of this call
        # lands on the same value.
        spec = self._spec
        if name not in spec.relative_params or name not in spec.relative_search_space:
            return False
        check_distribution_compatibility(spec.relative_search_space[name], distribution)
        try:
            internal = distribution.to_internal_repr(spec.relative_params[name])
            return bool(distribution._contains(internal))
        except Exception:
            return False

    # -- pruning and attributes ---------------------------------------------------------

    def report(self, value: float, step: int) -> None:
        if len(self._spec.directions) > 1:
            raise NotImplementedError(
                "Trial.report is not supported for multi-objective optimization."
            )
        value = _as_float(value)
        try:
            step = int(step)
        except (TypeError, ValueError):
            raise TypeError(
                f"The `step` argument is of type '{type(step)}' but supposed to be an int."
            ) from None
        if step < 0:
            raise ValueError(f"`{step=}` must be non-negative.")
        if step in self._steps:
            warnings.warn(
                f"The reported value is ignored because this `{step=}` is already reported.",
                UserWarning,
                stacklevel=2,
            )
            return
        self._steps.add(step)
        self._channel.notify("report", value, step)

    def should_prune(self) -> bool:
        if len(self._spec.directions) > 1:
            raise NotImplementedError(
                "Trial.should_prune is not supported for multi-objective optimization."
            )
        return bool(self._channel.request("should_prune"))

    def set_user_attr(self, key: str, value: Any) -> None:
        value = _plain(value)  # numpy values, as Optuna's in-memory study keeps them
        _check_json("set_user_attr", key, value)
        self._user_attrs[key] = copy.deepcopy(value)
        self._channel.notify("set_user_attr", key, value, urgent=True)

    def set_constraint(self, key: str, value: float) -> None:
        value = _as_float(value)
        if math.isnan(value):
            raise ValueError(f"Attempted to set a constraint for {key!r}, but NaN is not allowed.")
        if key in self._constraints:
            warnings.warn(
                "The constraint value is ignored because this constraint "
                f"`{key=}` is already set.",
                UserWarning,
                stacklevel=2,
            )
            return
        self._constraints[key] = value
        self._channel.notify("set_constraint", key, value, urgent=True)

    def log(
        self,
        metrics: Mapping[str, float],
        step: int | None = None,
        *,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        """Track ``metrics`` (name -> number) in this trial's Aim run; see :func:`sweeper.log`.

        Sent to the orchestrator in batches with the trial's other calls, so logging often
        is cheap.
        """
        if not isinstance(metrics, Mapping):
            raise TypeError(f"trial.log takes a dict of name -> number; got {metrics!r}")
        values: dict[str, float] = {}
        for name, value in metrics.items():
            if not isinstance(name, str) or not name:
                raise TypeError(f"trial.log: metric names must be non-empty strings; got {name!r}")
            try:
                values[name] = float(value)
            except (TypeError, ValueError):
                raise TypeError(
                    f"trial.log: the value of {name!r} must be a number; got {value!r}"
                ) from None
        if step is not None:
            try:
                step = int(step)
            except (TypeError, ValueError):
                raise TypeError(f"trial.log: step must be an int; got {step!r}") from None
            if step < 0:
                raise ValueError(f"trial.log: `{step=}` must be non-negative.")
        if context is not None:
            _check_json("log", "context", dict(context))
            context = dict(context)
        self._channel.notify("log", values, step, context)

    def __repr__(self) -> str:
        return f"RemoteTrial(number={self.number}, params={self._params!r})"


class _StudyProxy:
    """``trial.study`` inside a worker: the study's name and directions here, and what else
    an objective reads (trials, the best trial, attributes) from the orchestrator, when it is
    read."""

    def __init__(self, spec: TrialSpec, channel: TrialChannel, storage: _StorageProxy) -> None:
        self._spec = spec
        self._channel = channel
        self._storage = storage
        self._study_id = spec.study_id if spec.study_id is not None else -1

    @property
    def study_name(self) -> str:
        return self._spec.study_name

    @property
    def directions(self) -> list[optuna.study.StudyDirection]:
        return [optuna.study.StudyDirection[d.upper()] for d in self._spec.directions]

    @property
    def direction(self) -> optuna.study.StudyDirection:
        if len(self._spec.directions) > 1:
            raise RuntimeError(
                "A single direction cannot be retrieved from a multi-objective study. Consider "
                "using Study.directions to retrieve a list containing all directions."
            )
        return self.directions[0]

    def _is_multi_objective(self) -> bool:
        return len(self._spec.directions) > 1

    def get_trials(
        self, deepcopy: bool = True, states: Sequence[optuna.trial.TrialState] | None = None
    ) -> list[optuna.trial.FrozenTrial]:
        trials: list[optuna.trial.FrozenTrial] = self._storage.get_all_trials(
            self._study_id, states=tuple(states) if states is not None else None
        )
        return trials

    def __getattr__(self, name: str) -> Any:
        if name not in STUDY_ATTRIBUTES:
            raise AttributeError(
                f"`trial.study.{name}` is not available inside a sweeper worker; "
                f"readable attributes: {', '.join(sorted(STUDY_ATTRIBUTES | {'directions'}))}, "
                "get_trials()."
            )
        return self._channel.request("study_attribute", name)


class _StorageProxy:
    """``trial.storage`` inside a worker: reads of the study's storage, and writes to this
    trial's (or its study's) attributes and intermediate values, done by the orchestrator.
    Writes do not wait; a write to another trial is refused here, as it would race."""

    def __init__(self, spec: TrialSpec, channel: TrialChannel) -> None:
        self._spec = spec
        self._channel = channel

    def __getattr__(self, name: str) -> Any:
        if name in STORAGE_READS:
            return lambda *args, **kwargs: self._channel.request("storage", name, *args, **kwargs)
        if name in TRIAL_WRITES:

            def write(trial_id: int, *args: Any) -> None:
                if trial_id != self._spec.trial_id:
                    raise ValueError(
                        f"a trial in a sweeper worker writes only its own attributes (trial id "
                        f"{self._spec.trial_id}), not trial id {trial_id}'s."
                    )
                key, value = args if len(args) == 2 else (None, None)
                if name != "set_trial_intermediate_value":
                    value = _plain(value)  # numpy scores, as Optuna's in-memory study keeps
                    _check_json(name, str(key), value)
                    args = (key, value)
                self._channel.notify("storage", name, trial_id, *args, urgent=True)

            return write
        if name in STUDY_WRITES:

            def write_study(study_id: int, *args: Any) -> None:
                self._channel.notify("storage", name, study_id, *args, urgent=True)

            return write_study
        raise AttributeError(
            f"`trial.storage.{name}` is not available inside a sweeper worker: it reads the "
            "study's storage and writes this trial's attributes (set_trial_system_attr, "
            "set_trial_user_attr, set_trial_intermediate_value) through the orchestrator."
        )


def _as_float(value: Any) -> float:
    """``float(value)``, with Optuna's message when it is not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"The `value` argument is of type '{type(value)}' but supposed to be a float."
        ) from None


def _plain(value: Any) -> Any:
    """``value`` with numpy arrays and scalars as lists and numbers (what JSON can store)."""
    if hasattr(value, "tolist") and type(value).__module__ == "numpy":
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _check_json(method: str, key: str, value: Any) -> None:
    try:
        json.dumps(value)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"trial.{method}({key!r}, ...): the value must be JSON serializable ({error})."
        ) from None


def _warn_deprecated(old: str, new: str) -> None:
    warnings.warn(
        f"{old} has been deprecated in Optuna v3.0.0; use {new} instead.",
        FutureWarning,
        stacklevel=3,
    )
