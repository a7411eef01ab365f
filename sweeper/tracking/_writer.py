"""Write tracking events into an Aim repo. Only one process at a time does this for a repo.

Many writers corrupt Aim repos (on shared or network filesystems especially), so a writer
takes an exclusive lock on the repo folder and keeps it while it lives. It is the local
tracking hub's process, the Aim hub container on Modal, or ``sweeper track --repair``; the
orchestrator only sends it events.

What a trial's Aim run holds:

- experiment: the study name; name: ``trial <root>``; tags: its state;
- ``hparams``: the trial's parameters;
- ``sweeper``: study, root and trial number, state, start time, worker, the reason a trial
  failed;
- ``result``: state, value(s), duration, estimated cost and container seconds;
- metric ``objective``: every ``trial.report(value, step)``, at its step (the first value
  of a step, as Optuna keeps it; a restarted attempt's first value replaces the earlier
  attempt's, as it does in the storage);
- any metric the objective logs with ``trial.log`` / ``sweeper.log``.

The study's run (name ``study``) holds the sweep's settings, and the metrics ``best_value``
(single objective) or ``pareto_front_size``, plus ``complete``, ``pruned`` and ``failed``,
each against the number of finished trials.

Events are applied to runs in memory and written in batches by :meth:`AimWriter.flush`:
the runs a batch creates or closes are opened and closed on threads, their SQL rows and
index entries written once for the batch (see :mod:`sweeper.tracking._aimstore`). Aim 3.29
no longer indexes a run when it closes, and the SDK's queries read the index, so a finished
run is indexed here, unless ``sweeper ui`` is serving the repo (its indexer does it then,
and two indexers must not fight over the index).

:class:`~sweeper.tracking.Reconcile` and :class:`~sweeper.tracking.Rebuild` make runs agree
with finished trials as the storage has them (:mod:`sweeper.tracking._reconcile`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from sweeper._errors import SweeperError
from sweeper._logging import get_logger
from sweeper.tracking._events import (
    Event,
    Logged,
    ParamsSet,
    Rebuild,
    Reconcile,
    Reported,
    StudyDeleted,
    StudyOpened,
    StudyProgress,
    TrialFinished,
    TrialRecord,
    TrialStarted,
    TrialSummary,
    trial_digest,
)
from sweeper.tracking._reconcile import LEDGER_FILE, RUNS_FILE, Ledger, shown_values

logger = get_logger(__name__)

WRITER_LOCK = "sweeper-writer.lock"
UI_MARKER = "sweeper-ui.pid"
REPORT_METRIC = "objective"
PROGRESS_METRICS = ("complete", "pruned", "failed", "best_value", "pareto_front_size")
_THREADS = 8
"""Runs opened or closed at once: RocksDB's file syncs wait on the disk, not the CPU."""
_FLUSH_OPS = 20_000
"""Pending changes after which :meth:`AimWriter.apply` writes them without being asked."""

Key = tuple[str, int | None]
Op = Callable[[Any], None]


class TrackingError(SweeperError):
    """The Aim repo cannot be written (Aim missing, repo unusable, another writer)."""


@dataclass
class _Run:
    """A run this writer has open (or is about to open), and what it still has to write."""

    key: Key
    hash: str
    store: Any
    """Its :class:`~sweeper.tracking._aimstore.RunStore`."""
    ops: list[Op] = field(default_factory=list)
    number: int | None = None
    """The trial (attempt) being written: a new number on the same root starts over."""
    started: float | None = None
    curve: dict[int, float] = field(default_factory=dict)
    """This attempt's ``objective`` steps, as written."""
    tag: str | None = None
    row_dirty: bool = True
    finish: tuple[int, str] | None = None
    """(number, digest) once the trial finished: close, index and record the run."""
    rebuild: bool = False
    """Its databases may be unusable: start them afresh if they do not open."""
    listed: bool = True
    """Indexed when it closes (so that Aim's SDK and UI list it)."""
    opening: Future[BaseException | None] | None = None
    """Its databases being opened, on a thread, from when the run is first needed."""
    replaced: set[int] | None = None
    """Once the trial restarted: the steps its new attempt has reported (each replaces the
    earlier attempt's value); the curve is written afresh when it finishes."""


@dataclass
class WriterStats:
    """What a writer did, for ``track --repair`` and the benchmark."""

    finished: int = 0
    rebuilt: int = 0
    indexed: int = 0
    lagging: int = 0
    """Finished trials a reconcile found untracked but got no record for."""
    duplicates: int = 0
    """Runs removed because another run shows their trial (repair)."""


class AimWriter:
    """Applies :mod:`sweeper.tracking` events to the Aim repo at ``path``.

    Not thread-safe; one instance per repo per machine, enforced by a file lock (waited
    for up to ``lock_wait`` seconds: a sweep that just ended may still be writing).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        index_runs: bool = True,
        lock_wait: float = 0.0,
        threads: int = _THREADS,
        verify: bool = False,
    ) -> None:
        self.path = Path(path)
        self._index_runs = index_runs
        self._verify = verify
        """Check each run's content when reconciling, not only the ledger (a repair)."""
        self._indexed: set[str] | None = None
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock_file = open(self.path / WRITER_LOCK, "a+")  # noqa: SIM115 - held open
        except OSError as error:
            raise TrackingError(
                f"cannot use {self.path} for the Aim repo: {error.strerror or error}"
            ) from None
        if not _lock(self._lock_file, lock_wait):
            self._lock_file.close()
            raise TrackingError(
                f"another sweep is writing to the Aim repo {self.path}; only one may at a time"
            )
        try:
            from aim.sdk.repo import Repo, RepoStatus

            from sweeper.tracking import _aimstore
        except ImportError as error:
            self._release()
            raise TrackingError(f"Aim cannot be imported ({error})") from None
        self._store = _aimstore
        self._repo_cls = Repo
        try:
            status = Repo.check_repo_status(str(self.path))
            if status != RepoStatus.UPDATED and _half_made(self.path):
                shutil.rmtree(self.path / ".aim")  # a repo whose creation was cut short
                status = RepoStatus.MISSING
            if status == RepoStatus.MISSING:
                _create_repo(Repo, self.path)
                self._repo = Repo.from_path(str(self.path))
            elif status == RepoStatus.UPDATED:
                self._repo = Repo.from_path(str(self.path))
            else:
                self._repo = _init_repo(Repo, str(self.path))
        except Exception as error:
            self._release()
            raise TrackingError(f"the Aim repo {self.path} is unusable ({error})") from None
        self._root = Path(self._repo.path)
        ledger = Ledger.read(self.path)
        self._hashes: dict[Key, str] = ledger.runs
        self._written: dict[str, tuple[int, str]] = ledger.written
        self._runs: dict[Key, _Run] = {}
        self._new_lines: list[dict[str, Any]] = []
        self._unindexed: dict[str, tuple[list[tuple[bytes, bytes]], str]] = {}
        """Runs closed while a UI was indexing: what their index entry is, once it stops."""
        self._pending = 0
        self._parts: dict[str, list[Reconcile]] = {}
        self._closing: dict[str, Future[Any]] = {}
        """Runs whose databases are being closed, on threads, by hash."""
        self._closed: list[tuple[_Run, tuple[int, str] | None, Future[Any]]] = []
        """Closing runs not yet indexed and recorded, in the order they were closed."""
        self._pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="sweeper-aim")
        self.stats = WriterStats()

    # -- public ----------------------------------------------------------------------------

    def apply(self, events: Iterable[Event]) -> None:
        """Take ``events`` in order; they are written by the next :meth:`flush` (or now, if
        many are pending). An event Aim cannot write is logged and skipped."""
        for event in events:
            try:
                self._apply(event)
            except Exception as error:
                logger.warning("tracking: could not write %s: %s", type(event).__name__, error)
        if self._pending >= _FLUSH_OPS:
            self.flush()

    def flush(self) -> None:
        """Write everything applied so far: open new runs, write changes, close finished
        runs; index and record the runs whose closing has ended.

        Opening starts on a thread as soon as a run is needed, and closing ends on one after
        this returns, so the next batch's runs open while this one's close."""
        runs = [run for run in self._runs.values() if run.ops or run.finish]
        if runs:
            self._pending = 0
            self._write_lines()
            self._write_rows(runs)
            self._await_open([r for r in runs if r.opening is not None or not r.store.is_open])
            for run in runs:
                ops, run.ops = run.ops, []
                if not run.store.is_open:
                    continue  # it could not be opened: said already
                for op in ops:
                    try:
                        op(run.store)
                    except Exception as error:
                        logger.warning("tracking: could not write run %s: %s", run.hash, error)
                try:
                    run.store.commit()  # readable now, and kept if this process dies
                except Exception as error:
                    logger.warning("tracking: could not write run %s: %s", run.hash, error)
            self._start_closing([run for run in runs if run.finish and run.store.is_open])
            for run in runs:
                if not run.store.is_open and not run.ops and self._runs.get(run.key) is run:
                    del self._runs[run.key]
        self._collect(wait=False)

    def close(self, *, index_pending: bool = False) -> None:
        """Finish every open run (a sweep that stops leaves none running) and unlock; with
        ``index_pending``, first index the runs closed while a UI was indexing (it has
        stopped)."""
        if self._lock_file.closed:
            return
        try:
            for run in self._runs.values():
                if run.finish is None:
                    # Closed, not recorded as any trial's; a trial's run is not listed
                    # either until its trial has finished (a reconcile rebuilds it then).
                    run.finish = (-1, "")
                    run.listed = run.key[1] is None
            self.flush()
            self._collect(wait=True)
            if index_pending:
                self.index_pending()
        finally:
            self._pool.shutdown(wait=True)
            self._release()

    @property
    def repo_path(self) -> Path:
        return self.path

    def index_pending(self) -> None:
        """Index the runs closed while someone else was indexing (a UI that has stopped)."""
        pending, self._unindexed = self._unindexed, {}
        if not pending:
            return
        index = self._store.Index(self._root)
        try:
            for run_hash, (items, checksum) in pending.items():
                index.add(run_hash, items, checksum)
                self.stats.indexed += 1
        finally:
            index.close()

    # -- events ----------------------------------------------------------------------------

    def _apply(self, event: Event) -> None:
        if isinstance(event, TrialStarted):
            self._started(event)
        elif isinstance(event, ParamsSet):
            run = self._run(event.study, event.root)
            params = dict(event.params)
            self._op(run, partial(_set_params, params))
        elif isinstance(event, Reported):
            run = self._run(event.study, event.root)
            replaced = run.replaced
            # Optuna keeps a step's first value (of the attempt, once a trial restarted).
            if event.step not in run.curve or (
                replaced is not None and event.step not in replaced
            ):
                run.curve[event.step] = event.value
                if replaced is not None:
                    replaced.add(event.step)
                self._op(
                    run,
                    partial(_track, REPORT_METRIC, event.value, event.step, time.time(), None),
                )
        elif isinstance(event, Logged):
            run = self._run(event.study, event.root)
            when = time.time()
            for name, value in event.metrics.items():
                self._op(
                    run,
                    partial(_track, name, float(value), event.step, when, event.context),
                )
        elif isinstance(event, TrialFinished):
            self._finished(event)
        elif isinstance(event, StudyOpened):
            run = self._run(event.study, None)
            settings = dict(event.settings)
            directions = list(event.directions)

            def opened(store: Any) -> None:
                store.set_attr(("sweeper", "kind"), "study")
                store.set_attr(("sweeper", "directions"), directions)
                store.set_attr(("settings",), settings)

            self._op(run, opened)
        elif isinstance(event, StudyProgress):
            self._progress(event)
        elif isinstance(event, StudyDeleted):
            self._delete_study(event.study)
        elif isinstance(event, Rebuild):
            self._collect(wait=True)  # what is being closed is recorded before it is judged
            chunks = self._chunk_hashes()
            for record in event.records:
                if not self._is_tracked(event.study, record, chunks):
                    self._rebuild(record)
        elif isinstance(event, Reconcile):
            parts = self._parts.setdefault(event.study, [])
            parts.append(event)
            if event.part + 1 >= event.parts:
                del self._parts[event.study]
                self._reconcile(
                    Reconcile(
                        event.study,
                        event.directions,
                        tuple(s for part in parts for s in part.finished),
                        tuple(r for part in parts for r in part.records),
                        retries=tuple(n for part in parts for n in part.retries),
                    )
                )

    def _started(self, event: TrialStarted) -> None:
        run = self._run(event.study, event.root)
        if event.attempt > 1 and run.number == event.number and run.finish is None:
            run.replaced = set()  # a restart: the same run, its steps reported again
            return
        if (run.number is not None and run.number != event.number) or run.finish is not None:
            # The root runs again (a retry): its curve starts over, its old steps go.
            run.curve = {}
            run.finish = None
            self._op(run, lambda s: s.drop_sequence(REPORT_METRIC))
        run.replaced = None
        run.number, run.started = event.number, event.started
        self._set_tag(run, "running")
        number, started = event.number, event.started

        def start(store: Any) -> None:
            store.set_attr(("sweeper", "trial"), number)
            store.set_attr(("sweeper", "state"), "RUNNING")
            store.set_attr(("sweeper", "started"), started)

        self._op(run, start)

    def _finished(self, event: TrialFinished) -> None:
        run = self._run(event.study, event.root)
        run.number = event.number
        if run.replaced:  # steps written over in place: write the curve afresh, in order
            self._op(run, partial(_write_curve, sorted(run.curve.items()), time.time()))
        run.replaced = None
        values = shown_values(event.state, event.values, run.curve)
        digest = trial_digest(event.number, event.state, values, event.params, run.curve)
        self._write_result(
            run,
            number=event.number,
            state=event.state,
            values=values,
            params=dict(event.params),
            duration=event.duration,
            reason=event.reason,
            worker=dict(event.worker),
            started=run.started,
            cost=event.cost,
            attempts=event.attempts,
        )
        run.finish = (event.number, digest)
        self.stats.finished += 1

    def _write_result(
        self,
        run: _Run,
        *,
        number: int,
        state: str,
        values: tuple[float, ...] | None,
        params: dict[str, Any],
        duration: float | None,
        reason: str | None,
        worker: dict[str, Any],
        started: float | None,
        cost: dict[str, Any] | None = None,
        attempts: tuple[dict[str, Any], ...] = (),
    ) -> None:
        result: dict[str, Any] = {"state": state, "duration": duration}
        if cost is not None:
            result["cost"] = cost.get("usd")
            result["container_seconds"] = cost.get("container_seconds")
        if values is not None:
            result["values"] = list(values)
            if len(values) == 1:
                result["value"] = values[0]
        study, root = run.key
        sweeper = {
            "study": study,
            "root": root,
            "kind": "trial",
            "trial": number,
            "state": state,
            "started": started,
            "worker": worker,
            "fail_reason": reason if state == "FAIL" else None,
            "cost": dict(cost) if cost is not None else None,
            "attempts": [dict(a) for a in attempts],
        }

        def write(store: Any) -> None:
            store.set_attr(("hparams",), params)
            store.set_attr(("result",), result)
            store.set_attr(("sweeper",), sweeper)

        self._op(run, write)
        self._set_tag(run, {"FAIL": "failed"}.get(state, state.lower()))

    def _rebuild(self, record: TrialRecord) -> None:
        """Write a finished trial's run from its record: params, result and the whole
        curve replaced, the metrics the objective logged kept."""
        run = self._run(record.study, record.root)
        run.rebuild = True
        run.number, run.started = record.number, record.started
        run.curve = dict(record.curve)
        curve = list(record.curve)
        when = (
            record.started + record.duration
            if record.started is not None and record.duration is not None
            else time.time()
        )

        def write_curve(store: Any) -> None:
            store.drop_sequence(REPORT_METRIC)
            for step, value in curve:
                store.track(REPORT_METRIC, float(value), int(step), when)

        self._op(run, write_curve)
        self._write_result(
            run,
            number=record.number,
            state=record.state,
            values=record.values,
            params=dict(record.params),
            duration=record.duration,
            reason=record.reason,
            worker=dict(record.worker),
            started=record.started,
            cost=record.cost,
            attempts=record.attempts,
        )
        run.finish = (record.number, record.digest)
        self.stats.rebuilt += 1

    def _is_tracked(
        self, study: str, record: TrialRecord | TrialSummary, chunks: set[str]
    ) -> bool:
        """Whether the repo shows ``record`` already (or will, once flushed)."""
        run = self._runs.get((study, record.root))
        if run is not None and run.finish == (record.number, record.digest):
            return True
        if not Ledger(runs=self._hashes, written=self._written).is_tracked(record, study, chunks):
            return False
        return not self._verify or self._shows(study, record)

    def _shows(self, study: str, record: TrialRecord | TrialSummary) -> bool:
        """Whether the run itself (not the ledger) shows ``record``: indexed, its state,
        trial number and curve."""
        run_hash = self._hashes[(study, record.root)]
        if self._indexed is None:
            index = self._store.Index(self._root)
            try:
                self._indexed = index.indexed()
            finally:
                index.close()
        if self._index_runs and run_hash not in self._indexed:
            return False
        if not isinstance(record, TrialRecord):
            return True
        try:
            attrs, curve = self._store.RunStore(self._root, run_hash).read(REPORT_METRIC)
        except Exception as error:
            logger.debug("tracking: cannot read run %s: %s", run_hash, error)
            return False
        sweeper = (attrs or {}).get("sweeper") or {}
        return (
            sweeper.get("trial") == record.number
            and sweeper.get("state") == record.state
            and curve == dict(record.curve)
        )

    def remove_duplicates(self, study: str) -> None:
        """Delete the runs of ``study`` that claim a trial (or the study) whose run is
        another (left by old versions, or copied in by hand)."""
        self.flush()
        duplicates = []
        for run in self._repo.iter_runs():
            try:
                sweeper = run.get("sweeper") or {}
            except Exception:
                continue
            if not isinstance(sweeper, dict) or sweeper.get("study") != study:
                continue
            key = (study, sweeper.get("root"))
            if key in self._hashes and self._hashes[key] != run.hash:
                duplicates.append(run.hash)
        if duplicates:
            with contextlib.suppress(AttributeError):
                self._repo_cls._all_run_hashes.cache_clear()
            self._repo.delete_runs(duplicates)
            self._repo.container_pool.clear()
            self.stats.duplicates += len(duplicates)

    def _reconcile(self, event: Reconcile) -> None:
        """Rebuild what the repo lacks of ``event.study``, and its study run's series; remove
        runs of trials that turned out to rerun another (a trial asked ahead, started and
        killed before it recorded anything, goes back to the queue and may carry a rerun)."""
        self._collect(wait=True)  # what is being closed is recorded before it is judged
        stale = [
            self._hashes[(event.study, number)]
            for number in event.retries
            if (event.study, number) in self._hashes
        ]
        if stale:
            self._delete_runs(stale)
        chunks = self._chunk_hashes()
        latest = {summary.root: summary for summary in event.finished}  # the last to finish
        records = {record.root: record for record in event.records}
        for root, summary in latest.items():
            if self._is_tracked(event.study, records.get(root, summary), chunks):
                continue
            record = records.get(root)
            if record is None:
                self.stats.lagging += 1
                logger.warning(
                    "tracking: trial %d is not in Aim and no record came for it; run "
                    "`python -m sweeper track --repair`",
                    summary.number,
                )
                continue
            self._rebuild(record)
        self._reconcile_study_run(event)

    def _reconcile_study_run(self, event: Reconcile) -> None:
        finished = list(event.finished)
        run = self._run(event.study, None)
        counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0}
        for summary in finished:
            counts[summary.state] = counts.get(summary.state, 0) + 1
        directions = list(event.directions)

        def check_and_rebuild(store: Any) -> None:
            written = store.sequence("complete")
            attrs = store.attrs() or {}
            if max(written, default=0) == len(finished) and attrs.get("counts") == counts:
                return
            for name in PROGRESS_METRICS:
                store.drop_sequence(name)
            _write_progress(store, finished, directions)

        self._op(run, check_and_rebuild)

    def _progress(self, event: StudyProgress) -> None:
        run = self._run(event.study, None)

        def write(store: Any) -> None:
            step = event.finished
            now = time.time()
            for name, label in (
                ("COMPLETE", "complete"),
                ("PRUNED", "pruned"),
                ("FAIL", "failed"),
            ):
                store.track(label, float(event.counts.get(name, 0)), step, now)
            if event.best_value is not None:
                store.track("best_value", event.best_value, step, now)
                store.set_attr(("best",), {"value": event.best_value, "trial": event.best_number})
            if event.pareto_front:
                store.track("pareto_front_size", float(len(event.pareto_front)), step, now)
                store.set_attr(
                    ("pareto_front",),
                    [{"trial": n, "values": list(v)} for n, v in event.pareto_front],
                )
            store.set_attr(("counts",), dict(event.counts))

        self._op(run, write)

    def _delete_study(self, study: str) -> None:
        self._delete_runs([run_hash for key, run_hash in self._hashes.items() if key[0] == study])

    def _delete_runs(self, hashes: list[str]) -> None:
        self._collect(wait=True)
        doomed = set(hashes)
        for key in [key for key, run in self._runs.items() if run.hash in doomed]:
            run = self._runs.pop(key)
            if run.opening is not None:
                run.opening.result()
            if run.store.is_open:
                run.store.close()
        for key in [key for key, run_hash in self._hashes.items() if run_hash in doomed]:
            del self._hashes[key]
        for run_hash in doomed:
            self._written.pop(run_hash, None)
        self._rewrite_files()
        with contextlib.suppress(AttributeError):
            self._repo_cls._all_run_hashes.cache_clear()
        present = doomed & self._chunk_hashes()
        if present:
            self._repo.delete_runs(sorted(present))
            self._repo.container_pool.clear()

    # -- runs ------------------------------------------------------------------------------

    def _run(self, study: str, root: int | None) -> _Run:
        key = (study, root)
        run = self._runs.get(key)
        if run is not None:
            return run
        run_hash = self._hashes.get(key)
        if run_hash is None:
            from aim.sdk.utils import generate_run_hash

            run_hash = generate_run_hash()
            self._hashes[key] = run_hash
            # Before the run's databases exist: a crash never leaves a run nobody knows of.
            self._new_lines.append({"study": study, "trial": root, "run": run_hash})
        if run_hash in self._closing:
            self._collect(wait=True)  # what its last close recorded (a retry starts over)
        run = _Run(key=key, hash=run_hash, store=self._store.RunStore(self._root, run_hash))
        run.opening = self._pool.submit(_open, run)
        if run_hash in self._written:
            run.number = self._written[run_hash][0]  # a different one starts over
        base = {"study": study, "root": root, "kind": "study" if root is None else "trial"}
        run.ops.append(partial(_set_base, base))
        self._runs[key] = run
        return run

    def _op(self, run: _Run, op: Op) -> None:
        run.ops.append(op)
        self._pending += 1

    def _set_tag(self, run: _Run, tag: str) -> None:
        if run.tag != tag:
            run.tag = tag
            run.row_dirty = True

    def _write_lines(self) -> None:
        lines, self._new_lines = self._new_lines, []
        if lines:
            with open(self.path / RUNS_FILE, "a") as file:
                file.write("".join(json.dumps(line) + "\n" for line in lines))

    def _write_rows(self, runs: list[_Run]) -> None:
        rows = []
        for run in runs:
            if not run.row_dirty:
                continue
            run.row_dirty = False
            study, root = run.key
            rows.append(
                self._store.RunRow(
                    hash=run.hash,
                    name="study" if root is None else f"trial {root}",
                    experiment=study,
                    tag=run.tag,
                    created=run.started,
                )
            )
        try:
            self._store.write_rows(self._repo, rows)
        except Exception as error:
            logger.warning("tracking: could not write the runs' names and tags: %s", error)
            for run in runs:
                run.row_dirty = True

    def _await_open(self, runs: list[_Run]) -> None:
        for run in runs:
            opening, run.opening = run.opening, None
            error = opening.result() if opening is not None else _open(run)
            if error is not None and run.rebuild:
                logger.warning(
                    "tracking: run %s is unreadable (%s); writing it anew", run.hash, error
                )
                self._store.remove_chunks(self._root, run.hash)
                error = _open(run)
            if error is not None:
                logger.warning("tracking: cannot open run %s: %s", run.hash, error)
                run.ops = []
                run.finish = None

    def _start_closing(self, runs: list[_Run]) -> None:
        end = time.time()
        for run in runs:
            run.store.set_end_time(end)
            finish, run.finish = run.finish, None
            if self._runs.get(run.key) is run:
                del self._runs[run.key]
            future = self._pool.submit(_close, run.store)
            self._closing[run.hash] = future
            self._closed.append((run, finish, future))

    def _collect(self, *, wait: bool) -> None:
        """Index and record the runs whose closing has ended (all of them, with ``wait``)."""
        done = 0
        for _, _, future in self._closed:
            if not (wait or future.done()):
                break
            done += 1
        if not done:
            return
        finished, self._closed = self._closed[:done], self._closed[done:]
        index_now = self._index_runs and not self._ui_is_serving()
        ledger: list[dict[str, Any]] = []
        index = self._store.Index(self._root) if index_now else None
        try:
            for run, finish, future in finished:
                result = future.result()
                if self._closing.get(run.hash) is future:
                    del self._closing[run.hash]
                if result is None or not run.listed:
                    continue
                if index is not None:
                    index.add(run.hash, *result)
                    self.stats.indexed += 1
                else:
                    self._unindexed[run.hash] = result
                if finish is not None and finish[0] >= 0 and run.key[1] is not None:
                    self._written[run.hash] = finish
                    ledger.append({"run": run.hash, "number": finish[0], "digest": finish[1]})
        finally:
            if index is not None:
                index.close()
                self._repo.container_pool.clear()  # let go of the index for other readers
        if ledger:
            with open(self.path / LEDGER_FILE, "a") as file:
                file.write("".join(json.dumps(line) + "\n" for line in ledger))

    def _chunk_hashes(self) -> set[str]:
        try:
            return set(os.listdir(self._root / "meta" / "chunks"))
        except FileNotFoundError:
            return set()

    def _ui_is_serving(self) -> bool:
        marker = self.path / UI_MARKER
        try:
            pid = int(marker.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return False
        return True

    # -- the runs file ---------------------------------------------------------------------

    def _rewrite_files(self) -> None:
        lines = [
            json.dumps({"study": study, "trial": trial, "run": run_hash}) + "\n"
            for (study, trial), run_hash in self._hashes.items()
        ]
        (self.path / RUNS_FILE).write_text("".join(lines))
        ledger = [
            json.dumps({"run": run_hash, "number": number, "digest": digest}) + "\n"
            for run_hash, (number, digest) in self._written.items()
        ]
        (self.path / LEDGER_FILE).write_text("".join(ledger))

    def _release(self) -> None:
        if not self._lock_file.closed:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()


def _set_base(base: dict[str, Any], store: Any) -> None:
    """What every run says it is: a new one, or one whose creation was cut short."""
    if not store.existed or not store.has_attr(("sweeper", "kind")):
        store.set_attr(("sweeper",), base)


def _set_params(params: dict[str, Any], store: Any) -> None:
    for name, value in params.items():
        store.set_attr(("hparams", name), value)


def _track(
    name: str,
    value: float,
    step: int | None,
    when: float,
    context: dict[str, Any] | None,
    store: Any,
) -> None:
    store.track(name, value, step, when, context)


def _write_curve(curve: list[tuple[int, float]], when: float, store: Any) -> None:
    """The ``objective`` metric afresh, step by step."""
    store.drop_sequence(REPORT_METRIC)
    for step, value in curve:
        store.track(REPORT_METRIC, float(value), int(step), when)


def _open(run: _Run) -> BaseException | None:
    try:
        run.store.open()
    except Exception as error:
        return error
    return None


def _close(store: Any) -> tuple[list[tuple[bytes, bytes]], str] | None:
    """Close a finished run's databases; what the index needs of it."""
    try:
        items = store.meta_items()
        store.close()
        return items, store.checksum()
    except Exception as error:
        logger.warning("tracking: could not close run %s: %s", store.hash, error)
        return None


def _write_progress(store: Any, finished: list[TrialSummary], directions: list[str]) -> None:
    """The study run's series, computed from every finished trial in the order they
    finished (what the sweeps' progress events wrote, had none been lost)."""
    counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0}
    signs = [1.0 if d == "minimize" else -1.0 for d in directions]
    best: tuple[float, int] | None = None
    front: list[tuple[tuple[float, ...], int]] = []
    now = time.time()
    for step, summary in enumerate(finished, start=1):
        counts[summary.state] = counts.get(summary.state, 0) + 1
        values = summary.values
        if (
            summary.state == "COMPLETE"
            and summary.feasible
            and values is not None
            and len(values) == len(signs)
        ):
            if len(signs) == 1:
                if best is None or signs[0] * values[0] < signs[0] * best[0]:
                    best = (values[0], summary.number)
            else:
                front = _join_front(front, values, summary.number, signs)
        for name, label in (("COMPLETE", "complete"), ("PRUNED", "pruned"), ("FAIL", "failed")):
            store.track(label, float(counts[name]), step, now)
        if best is not None:
            store.track("best_value", best[0], step, now)
        if front:
            store.track("pareto_front_size", float(len(front)), step, now)
    if best is not None:
        store.set_attr(("best",), {"value": best[0], "trial": best[1]})
    if front:
        store.set_attr(
            ("pareto_front",), [{"trial": n, "values": list(v)} for v, n in sorted(front)]
        )
    store.set_attr(("counts",), dict(counts))


def _join_front(
    front: list[tuple[tuple[float, ...], int]],
    values: tuple[float, ...],
    number: int,
    signs: list[float],
) -> list[tuple[tuple[float, ...], int]]:
    def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
        pairs = [(s * x, s * y) for s, x, y in zip(signs, a, b, strict=True)]
        return all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)

    if any(dominates(other, values) for other, _ in front):
        return front
    return [(v, n) for v, n in front if not dominates(values, v)] + [(values, number)]


def _lock(file: Any, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def _half_made(path: Path) -> bool:
    """Whether ``path`` holds the start of an Aim repo and no run: created by a process that
    was killed before it finished (Aim writes ``VERSION`` last)."""
    aim = path / ".aim"
    if not aim.is_dir() or (aim / "VERSION").exists():
        return False
    return not any(any((aim / kind / "chunks").glob("*")) for kind in ("meta", "seqs"))


def _create_repo(repo_cls: Any, path: Path) -> None:
    """Create the Aim repo at ``path`` whole or not at all: in a folder of its own, moved in
    when done, so that a process killed meanwhile leaves no half-made repo behind."""
    for stale in path.glob(".aim-new-*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = path / f".aim-new-{os.getpid()}"
    try:
        made = _init_repo(repo_cls, str(staging))
        with contextlib.suppress(Exception):
            made.close()
        os.rename(staging / ".aim", path / ".aim")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


_DB_URL_VARIABLE = "AIM_RUN_META_DATA_DB_URL"  # what Aim's migrations read


def _init_repo(repo_cls: Any, path: str) -> Any:
    """Create (or upgrade) the Aim repo at ``path``, running Aim's database migrations here.

    Aim runs them with ``python -m alembic`` in a new interpreter that imports Aim again:
    over a second of CPU, taken from the trials when the machine is busy. The same alembic
    upgrade in this process, where Aim is imported already, costs a tenth of that. Where
    Aim's internals are not as expected, or the upgrade fails here, Aim's own way runs.
    """
    try:
        from aim.storage.migrations.utils import create_migration_cmd
        from aim.storage.structured import db as aim_db
        from alembic import command
        from alembic.config import Config

        aims_upgrade = getattr(aim_db, "upgrade_database")  # noqa: B009 - not exported
        migration: list[str] = create_migration_cmd()  # type: ignore[no-untyped-call]
        ini = migration[migration.index("-c") + 1]
    except (ImportError, AttributeError, ValueError, IndexError):
        return repo_cls.from_path(path, init=True)

    def upgrade(db_url: str) -> None:
        # The migrations' env.py reads the URL from the environment and reconfigures
        # logging (disabling every other logger); put both back afterwards.
        previous_url = os.environ.get(_DB_URL_VARIABLE)
        path_before = list(sys.path)
        root = logging.getLogger()
        root_state = (root.level, list(root.handlers))
        disabled = {
            name: log.disabled
            for name, log in logging.Logger.manager.loggerDict.items()
            if isinstance(log, logging.Logger)
        }
        os.environ[_DB_URL_VARIABLE] = db_url
        try:
            with warnings.catch_warnings():  # alembic's about Aim's ini file, not for users
                warnings.simplefilter("ignore", DeprecationWarning)
                command.upgrade(Config(ini), "head")
        except Exception as error:
            logger.debug("tracking: in-process Aim migration failed (%s); using Aim's", error)
            aims_upgrade(db_url)
        finally:
            if previous_url is None:
                os.environ.pop(_DB_URL_VARIABLE, None)
            else:
                os.environ[_DB_URL_VARIABLE] = previous_url
            sys.path[:] = path_before
            root.setLevel(root_state[0])
            root.handlers[:] = root_state[1]
            for name, was in disabled.items():
                log = logging.Logger.manager.loggerDict.get(name)
                if isinstance(log, logging.Logger):
                    log.disabled = was

    setattr(aim_db, "upgrade_database", upgrade)  # noqa: B010
    try:
        return repo_cls.from_path(path, init=True)
    finally:
        setattr(aim_db, "upgrade_database", aims_upgrade)  # noqa: B010
