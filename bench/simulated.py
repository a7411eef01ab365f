"""A simulated backend for the capacity benchmark: P workers whose trials take T seconds of
a simulated clock and no CPU, so that two cores can stand in for 256 GPUs.

What is simulated is only the GPU time. Everything else is sweeper's own code, in real time:
the orchestrator, the sampler (in its producers: a sampler process, or the asker's thread),
the study's storage, the trial channel (:class:`~sweeper.channel.TrialChannel` over an
in-process transport) and :func:`~sweeper.trial.run_trial` with a real
:class:`~sweeper.trial.RemoteTrial`, which gets its parameters as a local worker does:
carried with the trial, or asked of the orchestrator.

A trial's objective runs on one of a few threads (its suggestions and its value; every
worker's would run at once on a GPU machine, so these threads only stand in for the
workers' CPUs), and then the trial takes T more seconds of the clock: its result comes out
of :meth:`poll` when the clock reaches that time. No thread sleeps for a trial, so nothing
waits for its turn to run when results are due.

The clock is real time plus the time skipped: when nothing can happen until the next trial
ends (no event waits for the orchestrator, no objective is running, the sampler is idle),
the clock jumps to that end, or to when the orchestrator asked to be woken. While anything
computes, the clock runs with the wall clock, so a sampler that takes 0.3 s takes 0.3 s of
simulated time, and the workers that wait for it wait that long.
"""

from __future__ import annotations

import heapq
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sweeper.backends._base import Backend, Event
from sweeper.channel._base import Transport, TrialChannel
from sweeper.channel._messages import Reply
from sweeper.trial._messages import TrialResult, TrialSpec
from sweeper.trial._runner import run_trial

_COMPUTE_THREADS = 8


class Clock:
    """Wall-clock time plus the time skipped."""

    def __init__(self) -> None:
        self._offset = 0.0

    def now(self) -> float:
        return time.monotonic() + self._offset

    def skip_to(self, moment: float) -> None:
        ahead = moment - self.now()
        if ahead > 0:
            self._offset += ahead


@dataclass
class Record:
    """What the simulation saw of one trial, in simulated seconds from the start."""

    number: int
    submitted: float
    worker: int = 0
    computing: float = 0.0
    """How long it took to get its parameters and compute the value (round trips)."""
    finished: float = 0.0
    value: float | None = None


@dataclass(order=True)
class _Due:
    at: float
    number: int
    result: TrialResult = field(compare=False)


class _Transport(Transport):
    def __init__(self, backend: SimulatedBackend, replies: queue.SimpleQueue[Reply]) -> None:
        self._backend, self._replies = backend, replies

    def send(self, messages: Any) -> None:
        self._backend._put(list(messages))

    def receive(self, timeout: float | None = None) -> object:
        return self._replies.get(timeout=timeout)


class SimulatedBackend(Backend):
    """``parallel`` workers; each trial runs ``objective`` (which suggests, through the
    channel) and then takes ``seconds`` of the simulated clock."""

    def __init__(self, objective: Callable[[Any], float], parallel: int, seconds: float) -> None:
        super().__init__()
        self.clock = Clock()
        self.records: dict[int, Record] = {}
        self.started_at = 0.0
        self._objective = objective
        self._parallel = parallel
        self._seconds = seconds
        self._free_workers = list(range(parallel))
        self._worker_of: dict[int, int] = {}
        self._replies: dict[int, queue.SimpleQueue[Reply]] = {}
        self._inbox: queue.SimpleQueue[TrialSpec | None] = queue.SimpleQueue()
        self._computing = 0
        self._due: list[_Due] = []
        self._events: list[Event] = []
        self._condition = threading.Condition()
        self._woken = False
        self._sampler_busy: Callable[[], bool] = lambda: False
        self._threads: list[threading.Thread] = []

    # -- hooks -----------------------------------------------------------------------------

    def _start(self) -> None:
        self.started_at = self.clock.now()
        for _ in range(min(self._parallel, _COMPUTE_THREADS)):
            thread = threading.Thread(target=self._compute, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _free_slots(self) -> int:
        return len(self._free_workers)

    def _submit(self, spec: TrialSpec) -> None:
        worker = self._free_workers.pop()
        self._worker_of[spec.number] = worker
        self._replies[spec.number] = queue.SimpleQueue()
        self.records[spec.number] = Record(
            spec.number, self.clock.now() - self.started_at, worker=worker
        )
        with self._condition:
            self._computing += 1
        self._inbox.put(spec)

    def _reply(self, reply: Reply) -> None:
        replies = self._replies.get(reply.number)
        if replies is not None:
            replies.put(reply)

    def _cancel(self, number: int, reason: str) -> None:
        pass  # the trial runs out its time; Backend reports it as FAIL with the reason

    def _poll(self, timeout: float | None) -> list[Event]:
        deadline = self.clock.now() + (timeout or 0.0)  # the poll's time is simulated too
        with self._condition:
            while True:
                self._release_due()
                if self._events or self._woken:
                    events, self._events, self._woken = self._events, [], False
                    return events
                if self._idle() and self._due:
                    self.clock.skip_to(min(self._due[0].at, deadline))
                    self._release_due()
                    if self._events:
                        continue
                left = deadline - self.clock.now()
                if left <= 0:
                    return []
                wait = left if not self._due else min(left, self._due[0].at - self.clock.now())
                # Objectives and the asker say when they have something; the short wait
                # covers the sampler going idle.
                self._condition.wait(max(0.0, min(wait, 0.01)))

    def _wake(self) -> None:
        with self._condition:
            self._woken = True
            self._condition.notify_all()

    def watch_sampler(self, busy: Callable[[], bool]) -> None:
        self._sampler_busy = busy

    def now(self) -> float:
        return self.clock.now()

    def _close(self) -> None:
        for _ in self._threads:
            self._inbox.put(None)

    # -- the simulation --------------------------------------------------------------------

    def _idle(self) -> bool:
        """Nothing can happen before the next trial end: skipping to it loses nothing."""
        return self._computing == 0 and not self._sampler_busy()

    def _release_due(self) -> None:
        """Results whose trial's time is up (called with the condition held)."""
        now = self.clock.now()
        while self._due and self._due[0].at <= now:
            due = heapq.heappop(self._due)
            record = self.records[due.number]
            record.finished = due.at - self.started_at
            self._free_workers.append(self._worker_of.pop(due.number))
            self._replies.pop(due.number, None)
            self._events.append(due.result)

    def _put(self, messages: list[Any]) -> None:
        with self._condition:
            self._events.extend(messages)
            self._condition.notify_all()

    def _compute(self) -> None:
        while True:
            spec = self._inbox.get()
            if spec is None:
                return
            record = self.records[spec.number]
            channel = TrialChannel(_Transport(self, self._replies[spec.number]), spec.number)
            result = run_trial(self._objective, spec, channel)
            now = self.clock.now()
            record.computing = now - self.started_at - record.submitted
            record.value = result.values[0] if result.values else None
            with self._condition:
                heapq.heappush(self._due, _Due(now + self._seconds, spec.number, result))
                self._computing -= 1
                self._condition.notify_all()

    # -- what it measured ------------------------------------------------------------------

    def summary(self, target: float | None) -> dict[str, Any]:
        """Utilisation, throughput and time to ``target`` (simulated seconds)."""
        done = [r for r in self.records.values() if r.finished > 0]
        wall = max((r.finished for r in done), default=0.0)
        reached = sorted(
            r.finished
            for r in done
            if r.value is not None and target is not None and r.value <= target
        )
        # Where the workers' time went: waiting for a trial (from the end of the previous
        # one, or the start, to this one's submission), and getting parameters.
        waited, last_end = 0.0, {}
        for record in sorted(done, key=lambda r: r.submitted):
            waited += record.submitted - last_end.get(record.worker, 0.0)
            last_end[record.worker] = record.finished
        count = len(done) or 1
        return {
            "trials": len(done),
            "waiting_per_trial": waited / count,
            "suggesting_per_trial": sum(r.computing for r in done) / count,
            "wall": wall,
            "busy": len(done) * self._seconds,
            "utilisation": len(done) * self._seconds / (self._parallel * wall) if wall else 0.0,
            "trials_per_second": len(done) / wall if wall else 0.0,
            "time_to_target": reached[0] if reached else None,
            "best": min((r.value for r in done if r.value is not None), default=None),
        }
