"""The orchestrator's side of tracking: queue events and hand them to the repo's writer.

``emit`` only appends to a queue: a background thread sends what has queued up, in
batches, to the one writer of the Aim repo (a local process, or the Aim hub container on
Modal). Nothing the writer does can slow down or stop the sweep.

The storage is the source of truth, and the queue is bounded. When tracking starts, the
thread reads the study's finished trials from the storage and sends a
:class:`~sweeper.tracking.Reconcile`, so that whatever an earlier sweep could not write
(killed, or its writer killed) is written now. When the writer falls behind by more than it
can write in about a second, the events of new trials are dropped rather than queued, and
each such trial is rebuilt from the storage once it has finished and the writer has caught
up; the writer is restarted if it dies, and reconciled again. Only what the storage does
not have (metrics the objective logs) can be lost, and only when it is over the bound:
that is reported, as is any other problem (``take_problem``).

Closing waits for the writer for at most :data:`CLOSE_SECONDS` once it is ready: a local
writer that needs longer finishes in the background (it holds the repo's lock until then),
and what it did not get is rebuilt when the study runs again.

In an interactive session the local writer is kept between sweeps (``HubTracker(keep=True)``):
closing leaves it idle, holding no lock, and the next sweep's tracker of the same repo takes
it up instead of starting a process and importing Aim again.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import os
import select
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from subprocess import Popen, TimeoutExpired
from typing import TYPE_CHECKING, Any

from sweeper._logging import get_logger
from sweeper._process import spawn_python
from sweeper.tracking._events import (
    REBUILDABLE,
    Event,
    Logged,
    ParamsSet,
    Rebuild,
    Reconcile,
    Reported,
    StudyOpened,
    StudyProgress,
    TrialFinished,
    TrialRecord,
    TrialStarted,
)

if TYPE_CHECKING:
    import optuna

logger = get_logger(__name__)

_BATCH = 2000
"""Events sent to the writer at once."""
MAX_EVENTS = 100_000
"""Events the queue holds at most (a few tens of MB)."""
MAX_TRIALS = 300
"""Finished trials the queue holds at most: about what the writer writes in a second and a
half, so that a sweep whose trials are done is not held up by Aim."""
CLOSE_SECONDS = 1.5
"""How long closing waits for a local writer, from when it was asked to or the writer was
ready, whichever is later."""
_REBUILD_BATCH = 200
_RESTARTS = 3


class TrackingUnavailable(Exception):
    """The writer cannot be reached; the message says why."""


class WriterRefused(TrackingUnavailable):
    """The writer started and said it cannot write the repo (unusable, another writer)."""


@dataclass
class StudySource:
    """Where the truth about a study is: its storage (and the repo, where readable here)."""

    storage: optuna.storages.BaseStorage
    study: str
    repo: Path | None = None
    """The Aim repo's folder, when this process can read it (then only what the repo lacks
    is sent); None: send every finished trial and let the writer sort them out."""

    def reconcile(self) -> Reconcile:
        from sweeper.tracking._reconcile import plan

        return plan(self.storage, self.study, self.repo)

    def records(self, numbers: Sequence[int]) -> list[TrialRecord]:
        from sweeper.tracking._reconcile import record_of

        study_id = self.storage.get_study_id_from_name(self.study)
        records = []
        for number in numbers:
            trial_id = self.storage.get_trial_id_from_study_id_trial_number(study_id, number)
            trial = self.storage.get_trial(trial_id)
            if trial.state.is_finished():
                records.append(record_of(self.study, trial))
        return records


class Tracker:
    """Sends tracking events; the base class drops them (tracking off)."""

    enabled = False

    def start(self, source: StudySource | None = None) -> None:
        """Start the writer and reconcile the repo with ``source``; returns at once."""

    def emit(self, event: Event) -> None:
        """Queue ``event``; never blocks."""

    def take_problem(self) -> str | None:
        """What went wrong with tracking since the last call, if anything (each told once)."""
        return None

    def close(self, timeout: float = 600.0) -> None:
        """Send what is queued, let the writer finish every run, and stop it."""

    @property
    def backlog(self) -> int:
        """Events not sent to the writer yet."""
        return 0


def _key(event: Event) -> tuple[str, int] | None:
    if isinstance(event, (TrialStarted, ParamsSet, Reported, Logged, TrialFinished)):
        return (event.study, event.root)
    return None


class BatchingTracker(Tracker):
    """Queues events and sends them in batches from a thread of its own.

    Subclasses connect to a writer: ``_open`` (raise :class:`TrackingUnavailable`),
    ``_send(batch)``, ``_finish()`` (the writer has written everything when it returns);
    ``_restartable`` says whether a writer that went away is started again.
    """

    enabled = True
    _restartable = False
    _close_budget: float | None = None
    """How long closing waits for the writer once it is ready (None: until it is done)."""
    _acknowledged = False
    """Whether the writer says what it has written (then what is in flight is bounded)."""
    check_seconds = 2.0
    """How often the thread looks whether the writer is still there."""

    def __init__(self) -> None:
        self._queue: collections.deque[Event] = collections.deque()
        self._wake = threading.Event()
        self._closing = False
        self._problems: list[str] = []
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._source: StudySource | None = None
        self._queued_finishes = 0
        self._running: dict[tuple[str, int], int] = {}
        """Trials started and not finished yet, by key: their number."""
        self._dirty: set[tuple[str, int]] = set()
        """Trials whose events are dropped: rebuilt from the storage once finished."""
        self._to_rebuild: list[int] = []
        self._progress_dropped = False
        self._opened: StudyOpened | None = None
        self._in_flight = 0
        """Finished trials sent to the writer and not written yet (where it says so)."""
        self._ready_at: float | None = None
        self._close_at: float | None = None
        self.dropped = 0
        self.lost_metrics = 0
        self.restarts = 0
        self.sent = 0

    def start(self, source: StudySource | None = None) -> None:
        self._source = source
        self._thread = threading.Thread(target=self._run, name="sweeper-tracking", daemon=True)
        self._thread.start()

    def emit(self, event: Event) -> None:
        if not self.enabled:
            return
        key = _key(event)
        with self._lock:
            if isinstance(event, StudyOpened):
                self._opened = event  # a writer started again is told it again
            if key is not None:
                if isinstance(event, TrialStarted):
                    self._running[key] = event.number
                elif isinstance(event, TrialFinished):
                    self._running.pop(key, None)
                if key in self._dirty and not isinstance(event, Logged):
                    if isinstance(event, TrialFinished):
                        self._dirty.discard(key)
                        self._to_rebuild.append(event.number)
                    self.dropped += 1
                    return
            if self._over_bound(event):
                self._drop(event, key)
                return
            if isinstance(event, TrialFinished):
                self._queued_finishes += 1
            self._queue.append(event)
        if len(self._queue) >= _BATCH:
            self._wake.set()

    def _over_bound(self, event: Event) -> bool:
        if len(self._queue) >= MAX_EVENTS:
            return True
        if self._queued_finishes + self._in_flight < MAX_TRIALS or not isinstance(
            event, REBUILDABLE
        ):
            return False
        # Over the trial bound: drop what is new, keep what completes a queued trial.
        key = _key(event)
        return key is None or key in self._dirty or isinstance(event, TrialStarted)

    def _drop(self, event: Event, key: tuple[str, int] | None) -> None:
        self.dropped += 1
        if isinstance(event, Logged):
            self.lost_metrics += len(event.metrics)
        elif isinstance(event, StudyProgress):
            self._progress_dropped = True
        elif isinstance(event, TrialFinished):
            self._to_rebuild.append(event.number)
        elif key is not None:
            self._dirty.add(key)

    @property
    def backlog(self) -> int:
        return len(self._queue)

    def take_problem(self) -> str | None:
        with self._lock:
            return self._problems.pop(0) if self._problems else None

    def close(self, timeout: float = 600.0) -> None:
        self._close_at = time.monotonic()
        self._closing = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _deadline(self, seconds: float) -> float:
        """``seconds`` after closing was asked for or the writer was ready, whichever is later."""
        start = max(self._close_at or time.monotonic(), self._ready_at or time.monotonic())
        return start + seconds

    def _problem(self, text: str) -> None:
        with self._lock:
            self._problems.append(text)

    def _fail(self, problem: str) -> None:
        self.enabled = False
        self._queue.clear()
        self._problem(f"tracking is off for this sweep: {problem}")

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        why: str | None = None  # why the last writer went away
        try:
            while True:
                try:
                    if why is None:
                        self._connect()
                    else:
                        self._restart(why)
                    self._work()
                    return
                except WriterRefused as error:  # it will not write this repo: no retry
                    self._fail(str(error))
                    return
                except TrackingUnavailable as error:
                    if not self._restartable or self.restarts >= _RESTARTS:
                        self._fail(str(error))
                        return
                    why = str(error)
        finally:
            self._cleanup()

    def _connect(self) -> None:
        self._open()
        self._ready_at = time.monotonic()
        self._reconcile()

    def _work(self) -> None:
        checked = time.monotonic()
        while True:
            self._wake.wait(0.2)
            self._wake.clear()
            closing = self._closing
            if time.monotonic() - checked > self.check_seconds:
                checked = time.monotonic()
                self._check()
            self._send_queued()
            if not self._queue:
                self._send_rebuilds(everything=closing)
            if closing and not self._queue:
                if self._progress_dropped:
                    self._progress_dropped = False
                    self._reconcile()
                self._finish()
                self._report_losses()
                return

    def _send_queued(self) -> None:
        while self._queue:
            with self._lock:
                batch = [self._queue.popleft() for _ in range(min(_BATCH, len(self._queue)))]
                finishes = sum(isinstance(e, TrialFinished) for e in batch)
                self._queued_finishes -= finishes
            self._send(batch)
            if self._acknowledged:
                self._in_flight += finishes
            self.sent += len(batch)

    def _send_rebuilds(self, *, everything: bool) -> None:
        """Send the records of dropped trials, a batch at a time while the writer keeps up
        (when the sweep is closing, as many as there is time for)."""
        while self._to_rebuild and self._source is not None:
            if everything and self._close_budget is not None:
                if time.monotonic() > self._deadline(self._close_budget):
                    return  # the next start reconciles the rest
            elif self._in_flight >= MAX_TRIALS:
                return
            with self._lock:
                numbers, self._to_rebuild = (
                    self._to_rebuild[:_REBUILD_BATCH],
                    self._to_rebuild[_REBUILD_BATCH:],
                )
            try:
                records = self._source.records(numbers)
            except Exception as error:  # the storage went away: the next start reconciles
                logger.debug("tracking: cannot read trials to rebuild: %s", error)
                return
            if records:
                self._send([Rebuild(self._source.study, tuple(records))])
            if not everything:
                return

    def _reconcile(self) -> None:
        if self._source is None:
            return
        try:
            plan = self._source.reconcile()
        except KeyError:  # the study is gone: a misconfigured sweep removed it again
            logger.debug("tracking: the study to reconcile Aim with is gone")
            return
        except Exception as error:
            logger.warning("tracking: cannot read the study to reconcile Aim with it: %s", error)
            return
        self._send([plan])

    def _restart(self, why: str) -> None:
        """The writer went away: start another, rebuild what the dead one may have lost."""
        self.restarts += 1
        logger.warning("tracking: the writer stopped (%s); starting it again", why)
        self._cleanup()
        with self._lock:
            self._dirty.update(self._running)  # their runs are rebuilt when they finish
            kept = [e for e in self._queue if not isinstance(e, REBUILDABLE)]
            if self._opened is not None and self._opened not in kept:
                kept.insert(0, self._opened)
            self._queue.clear()
            self._queue.extend(kept)
            self._queued_finishes = 0
        self._in_flight = 0
        self._connect()  # and reconcile: what was finished, as the storage has it

    def _report_losses(self) -> None:
        if self.lost_metrics:
            self._problem(
                f"tracking fell behind and dropped {self.lost_metrics} logged metric values "
                "(trial.log / sweeper.log); reports and results were rebuilt from the storage"
            )

    # -- hooks -----------------------------------------------------------------------------

    def _open(self) -> None:
        raise NotImplementedError

    def _send(self, batch: list[Event]) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError

    def _check(self) -> None:
        """Raise :class:`TrackingUnavailable` if the writer is gone."""

    def _cleanup(self) -> None:
        """Release what ``_open`` took, on every exit path."""


_kept: tuple[Path, Popen[bytes], Connection] | None = None
"""The hub kept idle since the last sweep (``keep``), with its repo."""


def _take_kept(repo: Path) -> tuple[Popen[bytes], Connection] | None:
    """The kept hub, if it is alive and writes ``repo`` (one of another repo stops)."""
    global _kept
    kept, _kept = _kept, None
    if kept is None:
        return None
    path, process, connection = kept
    if path == repo and process.poll() is None:
        return process, connection
    _stop_hub(process, connection)
    return None


def stop_kept_hub() -> None:
    """Stop the hub kept between sweeps, if any (at exit)."""
    global _kept
    kept, _kept = _kept, None
    if kept is not None:
        _stop_hub(kept[1], kept[2])


def _stop_hub(process: Popen[bytes], connection: Connection) -> None:
    connection.close()  # an idle hub exits when its sweep's end of the socket goes
    try:
        process.wait(5)
    except TimeoutExpired:
        process.kill()
        process.wait()


class HubTracker(BatchingTracker):
    """Tracking into the Aim repo at ``repo``, written by a local hub process.

    With ``keep``, closing leaves the hub idle (every run finished and indexed, the repo's
    lock released) for the next tracker of the same repo with ``keep`` to take up.
    """

    _restartable = True
    _close_budget = CLOSE_SECONDS
    _acknowledged = True

    def __init__(
        self,
        repo: str | os.PathLike[str],
        *,
        log_path: str | os.PathLike[str],
        keep: bool = False,
    ):
        super().__init__()
        self.repo = Path(repo)
        self._log_path = Path(log_path)
        self._process: Popen[bytes] | None = None
        self._connection: Connection | None = None
        self._keep = keep

    @property
    def hub_pid(self) -> int | None:
        """The writer process (tests kill it)."""
        return self._process.pid if self._process is not None else None

    def start(self, source: StudySource | None = None) -> None:
        if source is not None and source.repo is None:
            source.repo = self.repo  # the ledger is readable here: send only what it lacks
        super().start(source)

    def _open(self) -> None:
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        kept = _take_kept(self.repo) if self._keep else None
        if kept is not None:
            self._process, self._connection = kept
            with contextlib.suppress(OSError):
                self._connection.send("open")  # if it is gone, receiving says so
        else:
            try:
                with open(self._log_path, "ab") as log:
                    self._process, self._connection = spawn_python(
                        "sweeper.tracking._hub", [str(self.repo)], env=os.environ, output=log
                    )
            except OSError as error:
                raise TrackingUnavailable(f"cannot start the tracking process ({error})") from None
        status = self._receive()
        if status[0] != "ready":
            raise WriterRefused(status[1])

    def _receive(self) -> Any:
        assert self._connection is not None
        try:
            return self._connection.recv()
        except (EOFError, OSError):
            raise TrackingUnavailable(
                f"the tracking process stopped; see {self._log_path}"
            ) from None

    def _send(self, batch: list[Event]) -> None:
        self._send_message(batch)

    def _send_message(self, message: Any) -> None:
        connection = self._connection
        assert connection is not None
        try:
            self._take_acks()
            while not _writable(connection):  # a writer that died is noticed while waiting
                if self._process is not None and self._process.poll() is not None:
                    raise OSError("exited")
                self._take_acks()
            connection.send(message)
        except (EOFError, OSError) as error:
            raise TrackingUnavailable(
                f"the tracking process stopped ({error}); see {self._log_path}"
            ) from None

    def _take_acks(self) -> None:
        connection = self._connection
        assert connection is not None
        while connection.poll(0):
            message = connection.recv()
            if message[0] == "written":
                self._in_flight = max(0, self._in_flight - int(message[1]))

    def _finish(self) -> None:
        global _kept
        self._send_message("idle" if self._keep else "close")
        connection = self._connection
        assert connection is not None
        deadline = self._deadline(CLOSE_SECONDS)
        try:
            while connection.poll(max(0.0, deadline - time.monotonic())):
                message = connection.recv()
                if message[0] == "closed" and self._keep and self._process is not None:
                    stop_kept_hub()  # one kept at a time
                    _kept = (self.repo, self._process, connection)  # idle, for the next sweep
                    self._process = self._connection = None
                    atexit.unregister(stop_kept_hub)
                    atexit.register(stop_kept_hub)
                    return
                if message[0] == "closed":  # every run is finished and indexed
                    self._process = None if self._exited(10.0) else self._process
                    return
                if message[0] == "written":
                    self._in_flight = max(0, self._in_flight - int(message[1]))
        except (EOFError, OSError):
            raise TrackingUnavailable(
                f"the tracking process stopped; see {self._log_path}"
            ) from None
        pid = self._process.pid if self._process is not None else "?"
        self._problem(
            f"Aim has not caught up with the sweep yet: the tracking process (pid {pid}) "
            "finishes writing in the background, then exits"
        )
        self._process = None  # left to finish: not waited for, not killed

    def _exited(self, seconds: float) -> bool:
        process = self._process
        deadline = time.monotonic() + seconds
        while process is not None and process.poll() is None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def _check(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            raise TrackingUnavailable(
                f"the tracking process exited ({self._process.returncode}); see {self._log_path}"
            )

    def _cleanup(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        process, self._process = self._process, None
        if process is None:
            return
        deadline = time.monotonic() + 10
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if process.poll() is None:
            process.kill()
            process.wait()


def _writable(connection: Connection, timeout: float = 1.0) -> bool:
    _, ready, _ = select.select([], [connection.fileno()], [], timeout)
    return bool(ready)
