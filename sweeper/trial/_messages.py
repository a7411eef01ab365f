"""What travels between the orchestrator and a worker about a trial (the channel's own
messages, calls and replies, are in :mod:`sweeper.channel`).

All of these are small, picklable values. A worker never raises across the wire: whatever
happens to a trial comes back as a :class:`TrialResult` that carries its trial number.
"""

from __future__ import annotations

import datetime
import pickle
from dataclasses import dataclass, field
from typing import Any, Literal

from optuna.distributions import BaseDistribution

ResultState = Literal["COMPLETE", "PRUNED", "FAIL"]


@dataclass(frozen=True, slots=True)
class TrialSpec:
    """Everything a worker needs to run one trial.

    ``fixed_params`` (from :meth:`optuna.Study.enqueue_trial` or a retry) and
    ``relative_params`` (sampled up front by the sampler over ``relative_search_space``)
    let :class:`~sweeper.trial.RemoteTrial` answer those ``suggest_*`` calls without a
    round trip; every other suggestion is asked of the orchestrator.
    """

    number: int
    study_name: str
    directions: tuple[str, ...]
    fixed_params: dict[str, Any] = field(default_factory=dict)
    relative_params: dict[str, Any] = field(default_factory=dict)
    relative_search_space: dict[str, BaseDistribution] = field(default_factory=dict)
    user_attrs: dict[str, Any] = field(default_factory=dict)
    datetime_start: datetime.datetime | None = None
    log_path: str | None = None
    attempt: int = 0
    checkpoint_dir: str | None = None
    """A folder for the trial's checkpoints, kept across restarts of the same trial."""
    root: int | None = None
    """The trial this one runs again (after an interruption), if it is a rerun."""
    proposals: dict[str, tuple[BaseDistribution, Any]] = field(default_factory=dict)
    """Values drawn ahead for parameters recent trials asked for, by name: used when the
    objective asks for the same distribution, without a round trip."""
    trial_id: int | None = None
    """The trial's id in the study's storage (what ``trial._trial_id`` is in Optuna)."""
    study_id: int | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        # Faster than dataclasses' generic slots pickling, on the hot path of every trial.
        return (self.__class__, tuple(getattr(self, name) for name in self.__slots__))


@dataclass(frozen=True, slots=True)
class TrialResult:
    """How a trial ended, as seen by the worker (or by the backend, for a lost worker)."""

    number: int
    state: ResultState
    values: tuple[float, ...] | None = None
    reason: str | None = None
    traceback: str | None = None
    duration: float = 0.0
    n_calls: int = 0
    attempt: int = 0
    params: dict[str, Any] | None = None
    """The trial's parameters as the objective saw them (None if the worker was lost)."""
    worker: dict[str, Any] = field(default_factory=dict)
    """Where it ran: host, pid, worker slot, GPU."""
    load_error: str | None = None
    """Set when the worker could not load the objective: every trial would fail the same."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Faster than dataclasses' generic slots pickling, on the hot path of every trial.
        return (self.__class__, tuple(getattr(self, name) for name in self.__slots__))


def picklable_error(error: BaseException) -> BaseException:
    """Return ``error`` if it survives a pickle round trip, else a RuntimeError with its text."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error
