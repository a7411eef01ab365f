"""Ask the study for trials ahead of demand, off the orchestrator's loop.

A sampler call can take a long time (a Gaussian-process fit: tenths of a second, more as the
study grows; TPE: milliseconds that grow with the study). If the orchestrator's loop made
that call when a worker freed, the worker would wait for it, and so would every report,
pruning decision and tell queued behind it. So ``study.ask()``, and the sampling that can be
done up front (:mod:`sweeper.orchestrator._spec`), run in *producers* into a small pool of
trials ready to run; a worker that frees takes the next one at once.

Producers are a thread of this process, or sampler processes (:mod:`._sampler_process`) that
open the same storage with a copy of the study's sampler: they sample on cores of their own,
which a thread cannot (Python runs one thread at a time), so a sweep of many workers gets as
many trials a second as the machine's cores can sample.

The pool is kept just deep enough: from when each running trial is expected to end and how
fast the producers make trials, as many as will be needed before they could be made one by
one; at least one. Trials in the pool are RUNNING in the study, so the sampler sees them as it
sees the trials in flight (GP and TPE condition on them through the parameters they share in
the trial's system attributes). A trial left in the pool when the sweep stops goes back to the
study's queue (WAITING), so the next ``study.ask()`` (this sweep's or a later one's) runs it.
"""

from __future__ import annotations

import abc
import collections
import contextlib
import math
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from subprocess import Popen
from typing import Any

import optuna
from optuna.distributions import BaseDistribution

from sweeper._logging import get_logger
from sweeper.orchestrator._spec import SpecPlan, prepare_for
from sweeper.study._recovery import return_to_queue
from sweeper.study._storage import adopt_trial
from sweeper.trial._messages import TrialSpec

logger = get_logger(__name__)

CHEAP_SAMPLERS = frozenset({"RandomSampler", "GridSampler", "BruteForceSampler", "QMCSampler"})
"""Samplers whose ask costs next to nothing: they ask inline, with no sampler process (whose
round trips would cost more than the sampling)."""
_STOP_SECONDS = 30.0
"""How long closing waits for a sampler process to finish the ask it is making."""


@dataclass(frozen=True)
class Asked:
    """A trial asked of the study, with what was sampled for it up front."""

    live: optuna.Trial
    spec: TrialSpec
    seconds: float
    """How long asking and sampling it took."""


class SamplingFailed(Exception):
    """A producer could not ask for a trial; ``error`` is what the sampler raised."""

    def __init__(self, error: BaseException, trace: str | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.trace = trace


class Asker:
    """Keeps a pool of asked trials; :meth:`take` never waits for a sampler call.

    ``wake`` is called, from a producer's thread, whenever a trial is ready, so that a loop
    blocked waiting for worker events can take it.

    Thread-safety: :meth:`take`, :meth:`want`, :meth:`update_space`, :meth:`stop` and
    :meth:`close` are called from the orchestrator's thread; producers deliver from theirs.
    Optuna's storages and samplers support asking on one thread while another tells
    (``optimize(n_jobs=...)`` does the same), and other processes asking on the same storage
    (distributed optimization).
    """

    def __init__(
        self,
        producers: Sequence[Producer],
        wake: Callable[[], None],
        *,
        limit: int | None = None,
    ) -> None:
        self._producers = list(producers)
        self._wake = wake
        self._limit = limit
        self._pool: collections.deque[Asked] = collections.deque()
        self._lock = threading.Lock()
        self._wanted = 1
        self._free = 1
        self._patience = 0.0
        self._asked = 0
        self._pending = 0
        self._stopped = False
        self._error: SamplingFailed | None = None
        self._seconds: float | None = None
        for producer in self._producers:
            producer.attach(self)

    # -- the orchestrator's side ---------------------------------------------------------

    def start(self) -> None:
        for producer in self._producers:
            producer.start()
        with self._lock:
            self._refill()

    def take(self) -> Asked | None:
        """The next ready trial, or None if none is ready yet. Raises
        :class:`SamplingFailed` if asking failed.

        With nothing ready, an inline producer asks for one here and now, on the caller's
        thread: the sampler that costs next to nothing, or the filler, when it may.
        """
        with self._lock:
            if self._pool:
                asked = self._pool.popleft()
                self._refill()
                return asked
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            inline = self._inline_now()
            if inline is None:
                return None
            self._pending += 1
        try:
            asked = inline.make()
        finally:
            with self._lock:
                self._pending -= 1
        with self._lock:
            self._asked += 1
            self._refill()
        return asked

    def want(
        self, free: int, ends: Sequence[float], now: float, patience: float = 0.0
    ) -> float | None:
        """Keep trials ready for the ``free`` slots, and for the running trials expected to
        end at ``ends`` (times on the clock that ``now`` reads), as soon as each ends.
        Returns when (on that clock) to call again, if something is due later than now.

        The producers that ask ahead make a trial every ``ask_seconds / producers``; the
        j-th trial to end needs one ready by its end, so ``j - (end_j - now) / step`` of
        them must be asked ahead of time. Trials that end together (equal lengths) make
        this deep just before they end, and only then; at least one is always ready.

        A free slot waits up to ``patience`` seconds for the ask in progress (the auto
        sampler's GP) before a filler asks for it (its TPE).
        """
        main, _ = self._roles()
        ahead, later = 1, None
        known = [p.seconds for p in main if p.seconds is not None]
        if known and ends:
            step = max(sum(known) / len(known) / len(main), 1e-6)
            ordered = sorted(ends)
            for j, end in enumerate(ordered, 1):
                ahead = max(ahead, j - math.floor(max(0.0, end - now) / step))
            for j, end in enumerate(ordered, 1):
                if j > ahead:  # the time this one will need asking ahead
                    when = end - (j - ahead) * step
                    if when > now:
                        later = when if later is None else min(later, when)
        with self._lock:
            self._patience = patience
            if free + ahead != self._wanted or free != self._free:
                self._wanted, self._free = free + ahead, free
                self._refill()
            held = self._held_until()
        if held is not None:  # the fillers wait for the ask in progress until then
            when = now + (held - time.monotonic())
            later = when if later is None else min(later, when)
        return later

    def update_space(self, space: dict[str, BaseDistribution]) -> None:
        """Parameters recent trials asked for (values for them are drawn ahead)."""
        for producer in self._producers:
            producer.update_space(space)

    def take_notes(self) -> list[str]:
        """What the sampler had to say (the ``auto`` sampler's choices), each said once."""
        notes: list[str] = []
        for producer in self._producers:
            notes.extend(producer.take_notes())
        return notes

    @property
    def busy(self) -> bool:
        """Whether a sampler call is in progress, or a sampler process is starting."""
        return any(producer.busy or producer.starting for producer in self._producers)

    @property
    def ask_seconds(self) -> float | None:
        """A running average of how long one ask (and its sampling) takes."""
        return self._seconds

    def stop(self) -> None:
        """Ask for no more trials (asks in progress still complete)."""
        with self._lock:
            self._stopped = True

    def close(self, storage: optuna.storages.BaseStorage) -> int:
        """Stop, wait for asks in progress, and put the trials that were never taken back in
        the study's queue (WAITING). Returns how many went back."""
        self.stop()
        for producer in self._producers:
            producer.close()
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

    # -- the producers' side -------------------------------------------------------------

    def deliver(self, producer: Producer, asked: Asked) -> None:
        with self._lock:
            self._pool.append(asked)
            self._asked += 1
            self._pending -= 1
            seconds = asked.seconds
            self._seconds = (
                seconds if self._seconds is None else 0.7 * self._seconds + 0.3 * seconds
            )
            producer.seconds = (
                seconds if producer.seconds is None else 0.7 * producer.seconds + 0.3 * seconds
            )
        self._wake()  # before the producer stops being busy: a watcher never sees it idle first
        with self._lock:
            producer.busy = False
            self._refill()

    def ready(self, producer: Producer) -> None:
        """A producer that was starting can make trials now."""
        with self._lock:
            producer.alive, producer.starting = True, False
            self._refill()

    def fail(self, producer: Producer, error: SamplingFailed) -> None:
        with self._lock:
            self._error = error
            if producer.busy:
                self._pending -= 1
        self._wake()
        producer.busy = False

    def _refill(self) -> None:
        """Start asks on idle producers while the pool (with asks in progress) is short.
        Called with the lock held.

        Fillers (the auto sampler's TPE copies, beside its GP) ask only for slots free now
        that nothing ready can serve: the trials asked ahead are the GP's, and a worker
        waits for a GP suggestion only when TPE could not have been quicker.
        """
        while not self._stopped and self._error is None:
            if self._limit is not None and self._asked + self._pending >= self._limit:
                return  # never more than the budget: nothing is left over when it is spent
            main, fillers = self._roles()
            producer = None
            if len(self._pool) + self._pending < self._wanted:
                producer = next((p for p in main if not p.busy and not p.inline), None)
            if producer is None and fillers and self._held_until() is None:
                waiting = self._free - len(self._pool) - sum(p.busy for p in fillers)
                if waiting > 0:
                    producer = next((p for p in fillers if not p.busy and not p.inline), None)
            if producer is None:
                return
            producer.busy = True
            producer.started = time.monotonic()
            self._pending += 1
            producer.request()

    def _inline_now(self) -> Producer | None:
        """An inline producer that may ask now, for a slot nothing ready can serve (called
        with the lock held): one that asks ahead is free or will be soon otherwise."""
        if self._stopped or (
            self._limit is not None and self._asked + self._pending >= self._limit
        ):
            return None
        main, fillers = self._roles()
        if main and all(p.inline for p in main):
            candidates = main
        elif self._held_until() is None:
            candidates = fillers
        else:
            return None
        return next((p for p in candidates if p.inline and not p.busy), None)

    def _held_until(self) -> float | None:
        """Until when (``time.monotonic``) the fillers hold off: an ask in progress that
        should end within the patience a free slot has for it."""
        main, fillers = self._roles()
        if not fillers:
            return None
        ends = [p.started + (p.seconds if p.seconds is not None else 0.0) for p in main if p.busy]
        soonest = min(ends, default=None)
        if soonest is None or not 0.0 <= soonest - time.monotonic() <= self._patience:
            return None  # none, too far off, or already later than usual: no telling when
        return soonest

    def _roles(self) -> tuple[list[Producer], list[Producer]]:
        """The producers that ask ahead, and the fillers. A sampler process comes before the
        thread, which asks ahead only while no process is up (it shares this process's one
        running thread with the orchestrator's loop). Until some producer that asks ahead
        is up, the fillers do."""
        alive = [p for p in self._producers if p.alive]
        main = [p for p in alive if not p.filler and p.separate]
        main = main or [p for p in alive if not p.filler]
        fillers = sorted((p for p in alive if p.filler), key=lambda p: not p.separate)
        if not main:
            return fillers, []
        return main, fillers


class Producer(abc.ABC):
    """Makes trials for an :class:`Asker`, one at a time, when asked to."""

    busy = False
    alive = True
    starting = False
    """Whether it is getting ready (a sampler process loading the study)."""
    seconds: float | None = None
    """A running average of how long its asks take."""
    started = 0.0
    """When (``time.monotonic``) its ask in progress began."""
    separate = False
    """Whether it samples in a process of its own."""
    inline = False
    """Whether it asks on the caller's thread, when :meth:`Asker.take` finds nothing ready
    (:meth:`make`), instead of ahead of time."""
    filler = False
    """Whether it only fills in for the others when they are busy (see
    :meth:`~sweeper.study.AutoSampler.filler`)."""

    def attach(self, asker: Asker) -> None:
        self.asker = asker

    def start(self) -> None:  # noqa: B027 - optional
        """Get ready to make trials."""

    def make(self) -> Asked:
        """Ask for a trial now, on this thread (inline producers only)."""
        raise NotImplementedError

    @abc.abstractmethod
    def request(self) -> None:
        """Make one trial; deliver it (or the failure) to the asker. Called with the asker's
        lock held: must not block."""

    @abc.abstractmethod
    def update_space(self, space: dict[str, BaseDistribution]) -> None: ...

    @abc.abstractmethod
    def take_notes(self) -> list[str]: ...

    @abc.abstractmethod
    def close(self) -> None:
        """Stop; a trial being made is delivered first."""


class InlineProducer(Producer):
    """Asks on the orchestrator's own thread, at the moment a slot needs a trial: for a
    sampler that costs next to nothing (random, grid), and as the filler while sampler
    processes start or are all busy. Nothing is asked ahead, so nothing is left over."""

    inline = True

    def __init__(self, study: optuna.Study, plan: SpecPlan, *, filler: bool = False) -> None:
        self._study = study
        self._plan = plan
        self.filler = filler

    def make(self) -> Asked:
        started = time.perf_counter()
        try:
            live = self._study.ask()
            spec = prepare_for(live, self._plan)
        except BaseException as error:
            raise SamplingFailed(error, traceback.format_exc()) from None
        return Asked(live, spec, time.perf_counter() - started)

    def request(self) -> None:
        raise RuntimeError("an inline producer is asked through make()")

    def update_space(self, space: dict[str, BaseDistribution]) -> None:
        self._plan = replace(self._plan, recent_space=space)

    def take_notes(self) -> list[str]:
        take = getattr(self._study.sampler, "take_notes", None)
        return list(take()) if take is not None else []

    def close(self) -> None:
        pass


class ThreadProducer(Producer):
    """Asks on a thread of this process, with the study's own sampler."""

    def __init__(self, study: optuna.Study, plan: SpecPlan, *, filler: bool = False) -> None:
        self._study = study
        self._plan = plan
        self.filler = filler
        self._wanted = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="sweeper-asker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def request(self) -> None:
        self._wanted.set()

    def update_space(self, space: dict[str, BaseDistribution]) -> None:
        self._plan = replace(self._plan, recent_space=space)

    def take_notes(self) -> list[str]:
        take = getattr(self._study.sampler, "take_notes", None)
        return list(take()) if take is not None else []

    def close(self) -> None:
        self._closing = True
        self._wanted.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._closing and not self.busy:
                return
            try:
                started = time.perf_counter()
                live = self._study.ask()
                spec = prepare_for(live, self._plan)
                seconds = time.perf_counter() - started
            except BaseException as error:  # handed to the orchestrator's thread by take()
                self.alive = False
                self.asker.fail(self, SamplingFailed(error, traceback.format_exc()))
                return
            self.asker.deliver(self, Asked(live, spec, seconds))
            if self._closing:
                return


class ProcessProducer(Producer):
    """Asks in a sampler process of its own (:mod:`sweeper.orchestrator._sampler_process`),
    on the same storage, with a copy of the study's sampler. Not :attr:`alive` until the
    process has started and loaded the study.

    The process sends back the asked trial's id, its spec and what it sampled jointly; the
    trial is then an ordinary ``optuna.Trial`` here, whose jointly sampled parameters are
    known, so the objective's suggestions are recorded here without sampling again.
    """

    separate = True

    def __init__(
        self,
        study: optuna.Study,
        process: Popen[bytes],
        connection: Connection,
        init: Any,
        log: str,
        *,
        filler: bool = False,
    ) -> None:
        self.alive = False
        self.starting = True
        self.filler = filler
        self._study = study
        self._log = log
        self._process = process
        self._connection = connection
        self._init = init
        self._send_lock = threading.Lock()
        self._notes: list[str] = []
        self._notes_lock = threading.Lock()
        self._closing = False
        self._reader = threading.Thread(
            target=self._read, name="sweeper-sampler-reader", daemon=True
        )

    def start(self) -> None:
        self._send(self._init)
        self._reader.start()

    def request(self) -> None:
        self._send(("ask",))

    def update_space(self, space: dict[str, BaseDistribution]) -> None:
        self._send(("space", space))

    def take_notes(self) -> list[str]:
        with self._notes_lock:
            notes, self._notes = self._notes, []
        return notes

    def close(self) -> None:
        self._closing = True
        if self.starting and not self.busy:  # it has asked nothing: no need to wait for it
            with contextlib.suppress(OSError):
                self._process.kill()
        self._send(("stop",))
        self._reader.join(_STOP_SECONDS)
        if self._process.poll() is None:
            with contextlib.suppress(Exception):
                self._process.wait(5)
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        with contextlib.suppress(OSError):
            self._connection.close()

    def _send(self, message: Any) -> None:
        with self._send_lock, contextlib.suppress(OSError, ValueError):  # the reader sees
            self._connection.send(message)  # the process gone, and says so

    def _read(self) -> None:
        while True:
            try:
                message = self._connection.recv()
            except (EOFError, OSError):  # it died (it says "stopped" when told to stop)
                self.alive = self.starting = False
                if self._closing:
                    return
                if not self.busy:  # the others go on; what it was asking is lost with it
                    logger.warning("a sampler process exited; see %s", self._log)
                    return
                with contextlib.suppress(Exception):
                    self._process.wait(5)
                died = RuntimeError(
                    f"the sampler process exited (status {self._process.poll()}); see {self._log}"
                )
                self.asker.fail(self, SamplingFailed(died))
                return
            kind = message[0]
            if kind == "asked":
                _, trial_id, spec, relative, space, seconds, notes = message
                if notes:
                    with self._notes_lock:
                        self._notes.extend(notes)
                try:
                    adopt_trial(self._study._storage, self._study._study_id, trial_id)
                    live = optuna.Trial(self._study, trial_id)
                    live._relative_params = relative
                    live.relative_search_space = space
                except BaseException as error:
                    self.asker.fail(self, SamplingFailed(error))
                    continue
                self.asker.deliver(self, Asked(live, spec, seconds))
            elif kind == "failed" and not self.alive:  # it could not start: the rest go on
                self.starting = False
                _, raised, trace = message
                logger.warning("a sampler process could not start (%s); see %s", raised, self._log)
                logger.debug("%s", trace)
                return
            elif kind == "failed":
                _, raised, trace = message
                self.asker.fail(self, SamplingFailed(raised, trace))
            elif kind == "ready":
                self.asker.ready(self)
            elif kind == "stopped":
                self.alive = False
                return
