"""When a sweep stops asking for trials, and why: its budget (``n_trials``, ``timeout``,
``--budget``), Ctrl-C and SIGTERM, ``study.stop()`` in a callback, and the errors that end it
once its running trials are recorded (wrong input, a sampler or a callback that raised)."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import optuna

from sweeper._cost import CostMeter
from sweeper._errors import SweeperError, UsageError
from sweeper.backends._base import Backend
from sweeper.orchestrator._asker import SamplingFailed
from sweeper.orchestrator._report import Reporter
from sweeper.orchestrator._stats import SweepStats

INTERRUPTED = "interrupted: the sweep was stopped before this trial finished"
"""The reason of a trial cancelled by a second Ctrl-C (or SIGTERM)."""


class _Abort(SweeperError):
    """Stop the sweep now: cancel running trials, record them, then raise ``error``."""

    def __init__(self, error: UsageError) -> None:
        super().__init__(str(error))
        self.error = error


class Stopping:
    """Decides when the sweep stops asking for trials, and keeps why.

    The first Ctrl-C stops asking and lets running trials finish; a second one (or SIGTERM)
    cancels them. The reason goes to the summary (:attr:`reason`), and while running trials
    finish, what the sweep waits for goes to the display (``stats.stopping``). An error that
    ends the sweep is raised by :meth:`raise_error` once the loop is over, as
    ``study.optimize`` raises what its sampler or a callback raised.

    Used from the orchestrator's thread; the signal handlers only count.
    """

    def __init__(
        self,
        *,
        backend: Backend,
        reporter: Reporter,
        stats: SweepStats,
        cost: CostMeter,
        n_trials: int | None,
        timeout: float | None,
    ) -> None:
        self._backend = backend
        self._reporter = reporter
        self._stats = stats
        self._cost = cost
        self._n_trials = n_trials
        self._timeout = timeout
        self.started = time.monotonic()
        self.reason: str | None = None
        """Why the sweep stopped before its budget, if it did."""
        self.interrupts = 0
        self._hard_stop = False
        self._abort: _Abort | None = None
        self._sampling_failed: SamplingFailed | None = None
        self._callback_failed: Exception | None = None

    @property
    def aborting(self) -> bool:
        """Whether the sweep stops because its input is wrong (:meth:`stop_with`)."""
        return self._abort is not None

    def stopping(self, asked: int, study: optuna.Study) -> bool:
        """Whether no more trials are asked for, ``asked`` having been."""
        return (
            self.interrupts > 0
            or self._abort is not None
            or self._sampling_failed is not None
            or self._callback_failed is not None
            or self.budget_spent(asked)
            or self._stopped_by_callback(study)
        )

    def _stopped_by_callback(self, study: optuna.Study) -> bool:
        if not study._stop_flag:
            return False
        if self.reason is None:
            self.reason = "study.stop() was called"
        return True

    def budget_spent(self, asked: int) -> bool:
        """Whether ``n_trials``, the timeout or ``--budget`` (spent and expected cost) is
        reached, ``asked`` trials having been asked for."""
        if self._n_trials is not None and asked >= self._n_trials:
            return True
        if self._timeout is not None and time.monotonic() - self.started >= self._timeout:
            if self.reason is None and self._backend.running:
                self._stats.stopping = "timeout reached: waiting for running trials to finish"
            if self.reason is None and self._n_trials is not None:
                self.reason = f"the timeout of {self._timeout:g}s was reached"
            return True
        reached = self._cost.exhausted()
        if reached is not None:
            if self.reason is None:
                self.reason = reached
                if self._backend.running:
                    self._stats.stopping = "budget reached: waiting for running trials to finish"
            return True
        return False

    def time_left(self, now: float) -> float | None:
        """Seconds until the timeout (None without one)."""
        if self._timeout is None:
            return None
        return max(0.0, self.started + self._timeout - now)

    def interrupted_while_starting(self) -> bool:
        if self.interrupts:
            self.reason = "interrupted while starting"
            return True
        return False

    def sampler_failed(self, failure: SamplingFailed) -> None:
        """No trial can be asked for: the running ones finish, then its error is raised."""
        self._sampling_failed = failure
        self.reason = f"the sampler failed ({type(failure.error).__name__}: {failure.error})"

    def callback_raised(self, name: str, error: Exception) -> None:
        """A callback raised: the running trials finish, then the first such error is raised."""
        if self._callback_failed is None:
            self._callback_failed = error
            self.reason = f"the callback {name} raised {type(error).__name__}"

    def callback_stopped(self, name: str) -> None:
        """The callback ``name`` called ``study.stop()``."""
        if self.reason is None:
            self.reason = f"the callback {name} called study.stop()"

    def stop_with(self, error: UsageError, reason: str) -> None:
        """Stop the sweep because its input is wrong: cancel the running trials (with
        ``reason``); :meth:`raise_error` raises ``error`` once they are recorded."""
        if self._abort is None:
            self._abort = _Abort(error)
            for number in self._backend.running:
                self._backend.cancel(number, reason)

    def raise_error(self) -> None:
        """Raise what ended the sweep, if something did."""
        if self._abort is not None:
            raise self._abort.error
        if self._sampling_failed is not None:
            raise self._sampling_failed.error
        if self._callback_failed is not None:
            raise self._callback_failed

    def apply_interrupts(self) -> None:
        """Act on the interrupts counted since the last call."""
        if self.interrupts == 1 and self.reason is None:
            self.reason = "interrupted (Ctrl-C)"
            running = len(self._backend.running)
            self._stats.stopping = (
                f"stopping: waiting for {running} running trial{'s' if running != 1 else ''}; "
                "interrupt again (Ctrl-C) to stop them now"
            )
            self._reporter.note(
                "Interrupted (Ctrl-C): no new trials will start, running trials finish. "
                "Interrupt again to stop them now.",
                "warning",
            )
        if self.interrupts >= 2 and not self._hard_stop:
            self._hard_stop = True
            self.reason = "interrupted (Ctrl-C twice)"
            self._stats.stopping = "stopping now"
            for number in self._backend.running:
                self._backend.cancel(number, INTERRUPTED)

    @contextlib.contextmanager
    def signal_handlers(self) -> Iterator[None]:
        """Count SIGINT (Ctrl-C) and SIGTERM (as two) while the sweep runs, on the main
        thread; the handlers there before come back after."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_interrupt(signum: int, frame: Any) -> None:
            self.interrupts += 1

        def on_terminate(signum: int, frame: Any) -> None:
            self.interrupts = max(self.interrupts + 1, 2)

        previous = {
            signal.SIGINT: signal.signal(signal.SIGINT, on_interrupt),
            signal.SIGTERM: signal.signal(signal.SIGTERM, on_terminate),
        }
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
