"""Who is running a study, and what to do with trials a dead sweep left behind.

Each sweep registers itself in the study's system attributes (``sweeper:sweep:<id>``: host,
pid, process start time, start and end times): one write per sweep, none per trial. A
trial left ``RUNNING`` belongs to a sweep that was killed (``kill -9``, power loss) when no
sweep that is still alive, or that sweeper cannot check because it runs on another host,
started before the trial did. Such trials are marked FAIL with the reason, and their
parameters are enqueued again; so are trials a sweep recorded as interrupted (a second
Ctrl-C) that were not run again yet.

A trial that was asked but never started (asked ahead of demand, nothing recorded yet) is
not a failure: it goes back to the study's queue (WAITING) and keeps its number. A sweep
that stops puts the trials it asked ahead back the same way; either way they are marked
``sweeper:returned``, and the parameters of interrupted trials are given to those first,
so that interrupted trials still run again before anything new.
"""

from __future__ import annotations

import datetime
import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any

import optuna
import psutil
from optuna.trial import TrialState

SWEEP_KEY = "sweeper:sweep:"
INTERRUPTED_KEY = "sweeper:interrupted"
RETRY_OF_KEY = "sweeper:retry_of"
RETURNED_KEY = "sweeper:returned"
"""On a WAITING trial: it was asked ahead and put back unused; it may carry a rerun."""
FAIL_REASON_KEY = "fail_reason"  # the key Optuna's tools (optuna-dashboard) show
LOG_KEY = "sweeper:log"


def _now() -> datetime.datetime:
    return datetime.datetime.now()


@dataclass(frozen=True)
class SweepRecord:
    """One sweep of a study, as registered in the study's system attributes."""

    id: str
    host: str
    pid: int
    create_time: float
    started: str
    ended: str | None = None

    @classmethod
    def for_this_process(cls) -> SweepRecord:
        pid = os.getpid()
        return cls(
            id=uuid.uuid4().hex[:12],
            host=socket.gethostname(),
            pid=pid,
            create_time=psutil.Process(pid).create_time(),
            started=_now().isoformat(),
        )

    def as_attr(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "pid": self.pid,
            "create_time": self.create_time,
            "started": self.started,
            "ended": self.ended,
        }

    def status(self) -> str:
        """``ended``, ``alive``, ``dead`` or ``unknown`` (another host)."""
        if self.ended:
            return "ended"
        if self.host != socket.gethostname():
            return "unknown"
        try:
            process = psutil.Process(self.pid)
            alive = abs(process.create_time() - self.create_time) < 1.0
        except psutil.Error:
            alive = False
        return "alive" if alive else "dead"


def sweeps(storage: optuna.storages.BaseStorage, study_id: int) -> list[SweepRecord]:
    records = []
    for key, value in storage.get_study_system_attrs(study_id).items():
        if key.startswith(SWEEP_KEY) and isinstance(value, dict):
            try:
                records.append(SweepRecord(id=key[len(SWEEP_KEY) :], **value))
            except TypeError:
                continue
    return records


def register(storage: optuna.storages.BaseStorage, study_id: int, record: SweepRecord) -> None:
    storage.set_study_system_attr(study_id, SWEEP_KEY + record.id, record.as_attr())


def unregister(storage: optuna.storages.BaseStorage, study_id: int, record: SweepRecord) -> None:
    ended = SweepRecord(**{**record.__dict__, "ended": _now().isoformat()})
    storage.set_study_system_attr(study_id, SWEEP_KEY + record.id, ended.as_attr())


@dataclass
class Recovery:
    """What :func:`recover` found and did."""

    failed: list[int] = field(default_factory=list)
    """Trials left RUNNING by a dead sweep, now marked FAIL."""
    returned: list[int] = field(default_factory=list)
    """Trials a dead sweep asked but never started, back in the queue (WAITING)."""
    requeued: list[int] = field(default_factory=list)
    """Trials whose parameters were enqueued again."""
    left_running: list[int] = field(default_factory=list)
    """RUNNING trials that may belong to a sweep still alive; left alone."""
    active: list[SweepRecord] = field(default_factory=list)
    """Other sweeps of this study that are alive or cannot be checked."""


def recover(study: optuna.Study, storage: optuna.storages.BaseStorage, study_id: int) -> Recovery:
    """Mark trials of dead sweeps FAIL and enqueue their parameters again."""
    result = Recovery()
    records = sweeps(storage, study_id)
    result.active = [r for r in records if r.status() in ("alive", "unknown")]
    earliest_active = min((r.started for r in result.active), default=None)
    trials = study.get_trials(deepcopy=False)
    if records:
        for trial in trials:
            if trial.state != TrialState.RUNNING:
                continue
            started = trial.datetime_start.isoformat() if trial.datetime_start else ""
            if earliest_active is not None and started >= earliest_active:
                result.left_running.append(trial.number)
                continue
            trial_id = trial._trial_id
            if not (trial.params or trial.intermediate_values or trial.user_attrs):
                return_to_queue(storage, trial_id)
                result.returned.append(trial.number)
                continue
            storage.set_trial_system_attr(
                trial_id,
                FAIL_REASON_KEY,
                "interrupted: the sweep running this trial stopped before it finished",
            )
            storage.set_trial_system_attr(trial_id, INTERRUPTED_KEY, True)
            study.tell(trial.number, state=TrialState.FAIL)
            result.failed.append(trial.number)
        trials = study.get_trials(deepcopy=False)
    # The latest trial that ran each root's parameters again.
    latest_retry: dict[int, float] = {}
    for trial in trials:
        root = trial.system_attrs.get(RETRY_OF_KEY)
        if root is not None:
            latest_retry[root] = max(latest_retry.get(root, -1), trial.number)
    # Trials put back unused, free to carry a rerun: they come first in the queue.
    carriers = [
        t
        for t in trials
        if t.state == TrialState.WAITING
        and t.system_attrs.get(RETURNED_KEY)
        and "fixed_params" not in t.system_attrs  # not enqueued by the user, nor a rerun
    ]
    for trial in trials:
        if trial.state != TrialState.FAIL or not trial.system_attrs.get(INTERRUPTED_KEY):
            continue
        root = trial.system_attrs.get(RETRY_OF_KEY, trial.number)
        if latest_retry.get(root, -1) > trial.number:
            continue
        if carriers:
            carrier = carriers.pop(0)._trial_id
            storage.set_trial_system_attr(carrier, "fixed_params", dict(trial.params))
            storage.set_trial_system_attr(carrier, RETRY_OF_KEY, root)
        else:
            study.add_trial(
                optuna.trial.create_trial(
                    state=TrialState.WAITING,
                    system_attrs={"fixed_params": dict(trial.params), RETRY_OF_KEY: root},
                )
            )
        latest_retry[root] = float("inf")
        result.requeued.append(trial.number)
    return result


def return_to_queue(storage: optuna.storages.BaseStorage, trial_id: int) -> None:
    """Put a RUNNING trial that never started back in the study's queue (WAITING)."""
    storage.set_trial_system_attr(trial_id, RETURNED_KEY, True)
    storage.set_trial_state_values(trial_id, TrialState.WAITING)
