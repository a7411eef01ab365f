"""Telling a finished trial: to the study (its state, and in its storage the failure's reason,
log and where it ran), to the tracker (the trial's run, the study's progress), and how its
values or its failure are judged (values the study cannot take, failures of one kind)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from sweeper.orchestrator._stats import FinishedTrial, SweepStats
from sweeper.study._recovery import FAIL_REASON_KEY, INTERRUPTED_KEY, LOG_KEY
from sweeper.tracking._events import StudyProgress, TrialFinished
from sweeper.tracking._reconcile import WORKER_KEY
from sweeper.tracking._tracker import Tracker


def tell(
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    live: optuna.Trial,
    state: str,
    values: tuple[float, ...] | None,
    reason: str | None,
    trace: str | None,
    interrupted: bool,
    log_path: Path,
    worker: dict[str, Any] | None = None,
) -> None:
    """Tell ``live`` to ``study``: COMPLETE with ``values``, PRUNED, or FAIL with its reason,
    traceback and log (and whether the sweep's stop cut it short) in the storage."""
    if worker:  # where it ran, for its Aim run when that is rebuilt from the storage
        storage.set_trial_system_attr(live._trial_id, WORKER_KEY, dict(worker))
    if state == "COMPLETE" and values is not None:
        study.tell(live, list(values))
    elif state == "PRUNED":
        study.tell(live, state=TrialState.PRUNED)
    else:
        text = reason or "failed"
        if trace:
            text = f"{text}\n\n{trace.rstrip()}"
        trial_id = live._trial_id
        storage.set_trial_system_attr(trial_id, FAIL_REASON_KEY, text)
        storage.set_trial_system_attr(trial_id, LOG_KEY, str(log_path))
        if interrupted:
            storage.set_trial_system_attr(trial_id, INTERRUPTED_KEY, True)
        study.tell(live, state=TrialState.FAIL)


def track_finished(
    tracker: Tracker,
    stats: SweepStats,
    finished: FinishedTrial,
    root: int,
    worker: dict[str, Any],
    cost: dict[str, Any] | None = None,
    attempts: tuple[dict[str, Any], ...] = (),
) -> None:
    """Record the end of a trial in its run (that of ``root``, the trial it continues), and
    the study's progress with it."""
    if not tracker.enabled:
        return
    study = stats.study
    tracker.emit(
        TrialFinished(
            study=study,
            root=root,
            number=finished.number,
            state=finished.state,
            values=finished.values,
            duration=finished.duration,
            params=finished.params,
            reason=finished.reason,
            worker=worker,
            cost=cost,
            attempts=attempts,
        )
    )
    s = stats
    tracker.emit(
        StudyProgress(
            study=study,
            finished=sum(s.counts.values()) + s.seeded,
            counts=dict(s.totals()),
            best_value=s.best_values[0] if s.best_values and len(s.directions) == 1 else None,
            best_number=s.best_number if len(s.directions) == 1 else None,
            pareto_front=tuple((n, v) for v, n in s.front),
        )
    )


def values_problem(values: tuple[float, ...], directions: tuple[str, ...]) -> str | None:
    """Why ``values`` cannot be told to a study of ``directions``, or None."""
    if len(values) != len(directions):
        n = len(directions)
        return (
            f"the objective returned {len(values)} value{'s' if len(values) != 1 else ''} "
            f"but the study has {n} direction{'s' if n != 1 else ''} "
            f"({', '.join(directions)})"
        )
    if any(math.isnan(v) for v in values):
        shown = ", ".join(str(v) for v in values)
        return f"the objective returned {shown}; NaN cannot be told to the study"
    return None


def failure_kind(reason: str | None, trace: str | None) -> str:
    """Failures of the same kind: the same exception type raised from the same line."""
    if trace:
        frames = [line.strip() for line in trace.splitlines() if line.startswith("  File ")]
        kind = (reason or "").split(":", 1)[0]
        return f"{kind} at {frames[-1] if frames else ''}"
    return reason or ""


def has_constraints(sampler: Any, depth: int = 0) -> bool:
    """Whether ``sampler`` (or a sampler it wraps) was given a ``constraints_func``, as
    Optuna's TPE, NSGA-II/III, GP and BoTorch samplers take; then a trial may be infeasible."""
    if getattr(sampler, "_constraints_func", None) is not None:
        return True
    if depth > 2:
        return False
    held = getattr(sampler, "__dict__", {}).values()
    inner = [v for v in held if isinstance(v, optuna.samplers.BaseSampler)]
    return any(has_constraints(s, depth + 1) for s in inner)
