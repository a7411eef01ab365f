"""Storage is the source of truth for Aim: what the repo should hold, read from the storage.

The writer keeps two files in the repo folder, both append-only, one JSON object a line:

- ``sweeper-runs.jsonl``: which Aim run belongs to which study and root trial, written
  before the run's databases are created (so a crash never leaves a run nobody knows of);
- ``sweeper-ledger.jsonl``: for a trial's run, the trial number and :func:`trial_digest`
  it was last finished from, written once the run is closed and indexed.

A finished trial is *tracked* when its root has a run, the run's database exists and the
ledger's last digest for it is the digest of the trial as the storage has it now.
:func:`plan` lists the rest (with their records, for the writer to rebuild), and
:func:`lag` counts them for ``status``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweeper._cost import COST_KEY
from sweeper.tracking._events import Reconcile, TrialRecord, TrialSummary

if TYPE_CHECKING:  # the writer's process reads the files here and never imports Optuna
    import optuna
    from optuna.trial import FrozenTrial

RUNS_FILE = "sweeper-runs.jsonl"
"""Which Aim run belongs to which study and trial (one JSON object per line)."""
LEDGER_FILE = "sweeper-ledger.jsonl"
"""Which trial each run was last finished from, and its digest."""
WORKER_KEY = "sweeper:worker"
"""The trial system attribute with the worker it ran on (host, pid, GPU)."""
ATTEMPTS_KEY = "sweeper:attempts"
"""The system attribute listing a restarted trial's attempts: worker, start, why."""
_TRACEBACK = "\n\nTraceback (most recent call last)"


@dataclass
class Ledger:
    """The runs file and the ledger of a repo, read back."""

    runs: dict[tuple[str, int | None], str] = field(default_factory=dict)
    written: dict[str, tuple[int, str]] = field(default_factory=dict)
    """Run hash -> (trial number, digest) it was last finished from."""

    @classmethod
    def read(cls, folder: str | os.PathLike[str]) -> Ledger:
        ledger = cls()
        for entry in _lines(Path(folder) / RUNS_FILE):
            with contextlib.suppress(KeyError, TypeError):
                ledger.runs[(str(entry["study"]), entry["trial"])] = str(entry["run"])
        for entry in _lines(Path(folder) / LEDGER_FILE):
            with contextlib.suppress(KeyError, TypeError, ValueError):
                ledger.written[str(entry["run"])] = (int(entry["number"]), str(entry["digest"]))
        return ledger

    def is_tracked(self, record: TrialRecord | TrialSummary, study: str, chunks: set[str]) -> bool:
        run = self.runs.get((study, record.root))
        if run is None or run not in chunks:
            return False
        return self.written.get(run) == (record.number, record.digest)


def _lines(path: Path) -> Iterable[dict[str, Any]]:
    try:
        text = path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict):
                yield entry


def chunk_hashes(folder: str | os.PathLike[str]) -> set[str]:
    """The runs of the Aim repo at ``folder`` that have a meta database."""
    try:
        return set(os.listdir(Path(folder) / ".aim" / "meta" / "chunks"))
    except (FileNotFoundError, NotADirectoryError):
        return set()


# -- from the storage ---------------------------------------------------------------------


def root_of(trial: FrozenTrial) -> int:
    from sweeper.study._recovery import RETRY_OF_KEY

    root = trial.system_attrs.get(RETRY_OF_KEY)
    return int(root) if root is not None else trial.number


def all_finished(storage: optuna.storages.BaseStorage, study: str) -> list[FrozenTrial]:
    """Every finished trial, in the order they finished."""
    from optuna.trial import TrialState

    finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    study_id = storage.get_study_id_from_name(study)
    trials = storage.get_all_trials(study_id, deepcopy=False, states=finished)
    return sorted(trials, key=lambda t: (_completed(t) or 0.0, t.number))


def finished_trials(storage: optuna.storages.BaseStorage, study: str) -> list[FrozenTrial]:
    """The latest finished trial of each root (the one that finished last: a rerun may have
    a lower number than its root, when it took a number asked ahead and put back), in the
    order they finished."""
    latest: dict[int, FrozenTrial] = {}
    for trial in all_finished(storage, study):
        latest[root_of(trial)] = trial
    return sorted(latest.values(), key=lambda t: (_completed(t) or 0.0, t.number))


def record_of(study: str, trial: FrozenTrial) -> TrialRecord:
    """What ``trial``'s Aim run must hold, from the storage."""
    from sweeper.study._recovery import FAIL_REASON_KEY

    reason = None
    if trial.state.name == "FAIL":
        text = trial.system_attrs.get(FAIL_REASON_KEY)
        reason = str(text).split(_TRACEBACK, 1)[0] if text is not None else "failed"
    started = trial.datetime_start.timestamp() if trial.datetime_start else None
    completed = _completed(trial)
    worker = trial.system_attrs.get(WORKER_KEY)
    cost = trial.system_attrs.get(COST_KEY)
    attempts = trial.system_attrs.get(ATTEMPTS_KEY) or []
    return TrialRecord(
        study=study,
        root=root_of(trial),
        number=trial.number,
        state=trial.state.name,
        values=tuple(trial.values) if trial.values is not None else None,
        params=dict(trial.params),
        curve=tuple(sorted(trial.intermediate_values.items())),
        started=started,
        duration=completed - started if completed is not None and started is not None else None,
        reason=reason,
        worker=dict(worker) if isinstance(worker, dict) else {},
        cost=dict(cost) if isinstance(cost, dict) else None,
        attempts=tuple(dict(a) for a in attempts if isinstance(a, dict))
        if len(attempts) > 1
        else (),
    )


def summary_of(record: TrialRecord, trial: FrozenTrial) -> TrialSummary:
    from sweeper.study._best import feasible

    return TrialSummary(
        root=record.root,
        number=record.number,
        state=record.state,
        values=record.values,
        completed=_completed(trial),
        digest=record.digest,
        feasible=feasible(trial),
    )


def _completed(trial: FrozenTrial) -> float | None:
    return trial.datetime_complete.timestamp() if trial.datetime_complete else None


def plan(
    storage: optuna.storages.BaseStorage,
    study: str,
    repo: str | os.PathLike[str] | None = None,
) -> Reconcile:
    """The :class:`Reconcile` that makes the repo agree with the storage about ``study``.

    With ``repo`` (a folder this process can read), only the trials it does not track yet
    carry their full record; without, all do and the writer sorts them out.
    """
    study_id = storage.get_study_id_from_name(study)
    directions = tuple(d.name.lower() for d in storage.get_study_directions(study_id))
    ledger = Ledger.read(repo) if repo is not None else None
    chunks = chunk_hashes(repo) if repo is not None else set()
    summaries, latest = [], {}
    for trial in all_finished(storage, study):
        record = record_of(study, trial)
        summaries.append(summary_of(record, trial))
        latest[record.root] = record
    records = [
        record
        for record in latest.values()
        if ledger is None or not ledger.is_tracked(record, study, chunks)
    ]
    retries = tuple(
        trial.number
        for trial in storage.get_all_trials(study_id, deepcopy=False)
        if root_of(trial) != trial.number
    )
    return Reconcile(study, directions, tuple(summaries), tuple(records), retries=retries)


def lag(
    storage: optuna.storages.BaseStorage, study: str, repo: str | os.PathLike[str]
) -> list[int]:
    """The finished trials (latest of each root) whose Aim run does not show them yet."""
    ledger = Ledger.read(repo)
    chunks = chunk_hashes(repo)
    return [
        trial.number
        for trial in finished_trials(storage, study)
        if not ledger.is_tracked(record_of(study, trial), study, chunks)
    ]


def shown_values(
    state: str, values: tuple[float, ...] | None, curve: dict[int, float]
) -> tuple[float, ...] | None:
    """The values storage records for a trial told with ``values``: Optuna gives a pruned
    trial its last intermediate value (``optuna/study/_tell.py``)."""
    if state == "PRUNED" and values is None and curve:
        last = curve[max(curve)]
        if not math.isnan(last):
            return (last,)
    return values
