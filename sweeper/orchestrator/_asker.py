"""Ask the study for trials ahead of demand, on a thread of its own.

A sampler call can take a long time (a Gaussian-process fit: tenths of a second, more as the
study grows). If the orchestrator's loop made that call when a worker freed, the worker would
wait for it, and so would every report, pruning decision and tell queued behind it. So
``study.ask()``, and the sampling that can be done up front (the parameters the sampler
decides jointly, and values drawn ahead for parameters the objective will probably ask
for), run here, on the asker's thread, into a small pool of trials ready to run. A worker
that frees takes the next one at once.

The pool is kept just deep enough: from when each running trial is expected to end and how
long an ask takes, as many as will be needed before the asker could make them one by one;
at least one. Trials in the
pool are RUNNING in the study, so the sampler sees them as it sees the trials in flight (GP
conditions on them; its jointly sampled parameters are shared through the trial's system
attributes). A trial left in the pool when the sweep stops goes back to the study's queue
(WAITING), so the next ``study.ask()`` (this sweep's or a later one's) runs it.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import optuna

from sweeper._logging import get_logger
from sweeper.study._recovery import return_to_queue
from sweeper.trial._messages import TrialSpec

logger = get_logger(__name__)


@dataclass(frozen=True)
class Asked:
    """A trial asked of the study, with what was sampled for it up front."""

    live: optuna.Trial
    spec: TrialSpec
    seconds: float
    """How long asking and sampling it took."""


class Asker:
    """Keeps a pool of asked trials; ``take`` never waits for a sampler call.

    ``prepare(live)`` turns an asked trial into its spec (it samples, so it runs on the
    asker's thread too). ``wake`` is called, from the asker's thread, whenever a
    trial is ready, so a loop blocked waiting for worker events can take it.

    Thread-safety: ``take``, ``want``, ``stop`` and ``close`` are called from the
    orchestrator's thread; everything else runs on the asker's. Optuna's storages and
    samplers support asking on one thread while another tells (``optimize(n_jobs=...)``
    does the same).
    """

    def __init__(
        self,
        study: optuna.Study,
        prepare: Callable[[optuna.Trial], TrialSpec],
        wake: Callable[[], None],
        *,
        limit: int | None = None,
    ) -> None:
        self._study = study
        self._prepare = prepare
        self._wake = wake
        self._limit = limit
        self._pool: collections.deque[Asked] = collections.deque()
        self._condition = threading.Condition()
        self._wanted = 1
        self._asked = 0
        self._busy = False
        self._stopped = False
        self._error: BaseException | None = None
        self._seconds: float | None = None
        self._thread = threading.Thread(target=self._run, name="sweeper-asker", daemon=True)

    # -- the orchestrator's side ---------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def take(self) -> Asked | None:
        """The next ready trial, or None if none is ready yet. Raises what the sampler
        raised, if asking failed."""
        with self._condition:
            if self._pool:
                asked = self._pool.popleft()
                self._condition.notify()
                return asked
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            return None

    def want(self, free: int, ends: Sequence[float], now: float) -> None:
        """Keep trials ready for the ``free`` slots, and for the running trials expected to
        end at ``ends`` (times on the clock that ``now`` reads), as soon as each ends.

        The asker makes one trial every ``ask_seconds``; the j-th trial to end needs one
        ready by its end, so ``j - (end_j - now) / ask_seconds`` of them must be asked
        ahead of time. Trials that end together (equal lengths) make this deep just before
        they end, and only then; at least one is always ready.
        """
        ahead = 1
        if self._seconds is not None and ends:
            step = max(self._seconds, 1e-6)
            for j, end in enumerate(sorted(ends), 1):
                ahead = max(ahead, j - math.floor(max(0.0, end - now) / step))
        wanted = free + ahead
        with self._condition:
            if wanted != self._wanted:
                self._wanted = wanted
                self._condition.notify()

    @property
    def busy(self) -> bool:
        """Whether a sampler call is in progress."""
        return self._busy

    @property
    def ask_seconds(self) -> float | None:
        """A running average of how long one ask (and its sampling) takes."""
        return self._seconds

    def stop(self) -> None:
        """Ask for no more trials (an ask in progress still completes)."""
        with self._condition:
            self._stopped = True
            self._condition.notify()

    def close(self, storage: optuna.storages.BaseStorage) -> int:
        """Stop, wait for an ask in progress, and put the trials that were never taken back
        in the study's queue (WAITING). Returns how many went back."""
        self.stop()
        if self._thread.is_alive():
            self._thread.join()
        returned = 0
        while self._pool:
            asked = self._pool.popleft()
            try:
                return_to_queue(storage, asked.live._trial_id)
                returned += 1
            except Exception as error:  # the next sweep's recovery will see it RUNNING
                logger.warning(
                    "could not return trial %d to the queue: %s", asked.spec.number, error
                )
        return returned

    # -- the asker's thread --------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._stopped and not self._should_ask():
                    self._condition.wait()
                if self._stopped:
                    return
                self._busy = True
            try:
                started = time.perf_counter()
                live = self._study.ask()
                spec = self._prepare(live)
                seconds = time.perf_counter() - started
            except BaseException as error:  # handed to the orchestrator's thread by take()
                with self._condition:
                    self._error = error
                    self._busy = False
                self._wake()
                return
            with self._condition:
                self._pool.append(Asked(live, spec, seconds))
                self._asked += 1
                self._seconds = (
                    seconds if self._seconds is None else 0.7 * self._seconds + 0.3 * seconds
                )
            self._wake()  # before it stops being busy: a watcher never sees it idle first
            self._busy = False

    def _should_ask(self) -> bool:
        if self._error is not None:
            return False
        if self._limit is not None and self._asked >= self._limit:
            return False
        return len(self._pool) < self._wanted
