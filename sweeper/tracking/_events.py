"""Tracking events: what the orchestrator sends to the one process that writes the Aim repo.

Runs are keyed by study and *root* trial number: a trial run again after an interruption
(a retry) has a new Optuna number but the root of the trial it repeats, so it continues the
same Aim run.

Most events describe a trial as it runs. :class:`Reconcile` and :class:`Rebuild` carry
finished trials as the study's storage has them (:class:`TrialRecord`), so that the writer
can make the repo agree with the storage: after a crash, or when it dropped events it could
not keep up with.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class StudyOpened:
    study: str
    directions: tuple[str, ...]
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TrialStarted:
    study: str
    root: int
    number: int
    started: float
    """Unix time."""
    attempt: int = 1
    """Above 1, a restart of the same trial (a new container took it over): the steps it
    reports replace the earlier attempt's, as they do in the storage."""


@dataclass(frozen=True, slots=True)
class ParamsSet:
    study: str
    root: int
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Reported:
    """An intermediate value from ``trial.report(value, step)``."""

    study: str
    root: int
    step: int
    value: float


@dataclass(frozen=True, slots=True)
class Logged:
    """Metrics from ``trial.log`` / ``sweeper.log``."""

    study: str
    root: int
    metrics: dict[str, float]
    step: int | None = None
    context: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class TrialFinished:
    study: str
    root: int
    number: int
    state: str
    values: tuple[float, ...] | None
    duration: float
    params: dict[str, Any]
    reason: str | None = None
    worker: dict[str, Any] = field(default_factory=dict)
    cost: dict[str, Any] | None = None
    """Its container seconds and estimated cost (the ``sweeper:cost`` system attribute)."""
    attempts: tuple[dict[str, Any], ...] = ()
    """A restarted trial's attempts: worker, start, why (``sweeper:attempts``)."""


@dataclass(frozen=True, slots=True)
class StudyProgress:
    """The study after a trial finished: counts, best so far or Pareto front."""

    study: str
    finished: int
    counts: dict[str, int]
    best_value: float | None = None
    best_number: int | None = None
    pareto_front: tuple[tuple[int, tuple[float, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class StudyDeleted:
    """The study was removed again (it was created by a sweep that turned out misconfigured);
    its runs go too."""

    study: str


@dataclass(frozen=True, slots=True)
class TrialRecord:
    """A finished trial as the storage has it: everything its Aim run is built from."""

    study: str
    root: int
    number: int
    state: str
    values: tuple[float, ...] | None
    params: dict[str, Any]
    curve: tuple[tuple[int, float], ...]
    """The intermediate values, ``(step, value)`` by step."""
    started: float | None = None
    """Unix time."""
    duration: float | None = None
    reason: str | None = None
    worker: dict[str, Any] = field(default_factory=dict)
    cost: dict[str, Any] | None = None
    attempts: tuple[dict[str, Any], ...] = ()

    @property
    def digest(self) -> str:
        return trial_digest(self.number, self.state, self.values, self.params, dict(self.curve))


@dataclass(frozen=True, slots=True)
class TrialSummary:
    """A finished trial, in brief: what the study's run is built from."""

    root: int
    number: int
    state: str
    values: tuple[float, ...] | None
    completed: float | None
    """Unix time."""
    digest: str
    feasible: bool = True
    """False when it broke its sampler's constraints: it never counts as the best."""


@dataclass(frozen=True, slots=True)
class Reconcile:
    """Make the study's runs agree with its storage (sent when tracking starts).

    ``finished`` lists every finished trial, in the order they finished (the last of each
    root is the one its run shows); ``records`` holds the full record of those the sender
    found missing or different in the repo (all of them when it cannot read the repo).
    """

    study: str
    directions: tuple[str, ...]
    finished: tuple[TrialSummary, ...]
    records: tuple[TrialRecord, ...]
    retries: tuple[int, ...] = ()
    """Trials that rerun another root: a run keyed by one of them is stale."""
    part: int = 0
    parts: int = 1
    """A reconcile too large to send at once comes in parts, ``finished`` cut in order;
    the writer acts on the last."""


@dataclass(frozen=True, slots=True)
class Rebuild:
    """Write these finished trials' runs from their records (events about them were
    dropped, or went to a writer that died)."""

    study: str
    records: tuple[TrialRecord, ...]


Event = (
    StudyOpened
    | TrialStarted
    | ParamsSet
    | Reported
    | Logged
    | TrialFinished
    | StudyProgress
    | StudyDeleted
    | Reconcile
    | Rebuild
)

REBUILDABLE = (TrialStarted, ParamsSet, Reported, TrialFinished, StudyProgress)
"""Events whose content the storage also has: they may be dropped, and rebuilt later."""


def trial_digest(
    number: int,
    state: str,
    values: tuple[float, ...] | None,
    params: Mapping[str, Any],
    curve: Mapping[int, float],
) -> str:
    """A fingerprint of what a trial's run must show: number, state, values, params and
    curve. The same trial gives the same digest whether it comes from events or storage."""

    def number_or_text(value: Any) -> Any:
        if isinstance(value, bool) or value is None or isinstance(value, str):
            return value
        if isinstance(value, (int, float)):
            value = float(value)
            return repr(value) if math.isnan(value) or math.isinf(value) else value
        return repr(value)

    payload = [
        number,
        state,
        None if values is None else [number_or_text(v) for v in values],
        sorted((str(k), number_or_text(v)) for k, v in params.items()),
        sorted((int(s), number_or_text(v)) for s, v in curve.items()),
    ]
    text = json.dumps(payload, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:20]
