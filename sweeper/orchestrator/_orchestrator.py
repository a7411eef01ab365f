"""The sweep loop: keep N trials in flight, answer their calls, tell every trial once.

The loop routes what happens to where it is handled: who asks for trials
(:mod:`~sweeper.orchestrator._producers`), when the sweep stops
(:mod:`~sweeper.orchestrator._stopping`), which attempt of a trial counts
(:mod:`~sweeper.orchestrator._attempts`), a worker's calls on the live trial
(:mod:`~sweeper.orchestrator._calls`), and a finished trial told to the study and the
tracker (:mod:`~sweeper.orchestrator._telling`).
"""

from __future__ import annotations

import collections
import contextlib
import copy
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from sweeper._cost import COST_KEY, CostMeter
from sweeper._errors import ConfigError, ObjectiveError
from sweeper._logging import get_logger
from sweeper.backends._base import Backend, LoadFailed, Notice, Output
from sweeper.channel._messages import Call
from sweeper.orchestrator._asker import Asked, Asker, Producer, SamplingFailed
from sweeper.orchestrator._attempts import Attempts
from sweeper.orchestrator._calls import answer_call
from sweeper.orchestrator._producers import make_producers, release, spawn_samplers
from sweeper.orchestrator._report import Reporter
from sweeper.orchestrator._stats import FinishedTrial, SweepStats
from sweeper.orchestrator._stopping import INTERRUPTED, Stopping
from sweeper.orchestrator._telling import (
    failure_kind,
    has_constraints,
    tell,
    track_finished,
    values_problem,
)
from sweeper.study._best import feasible
from sweeper.tracking._events import Logged, ParamsSet, Reported, TrialStarted
from sweeper.tracking._reconcile import ATTEMPTS_KEY
from sweeper.tracking._tracker import Tracker
from sweeper.trial._messages import TrialResult

logger = get_logger(__name__)

_POLL_SECONDS = 0.2
_RECENT_TRIALS = 20
_DURATIONS = 64
"""How many recent trial durations the rate at which slots free is estimated from."""

Callback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


@dataclass
class OpenStudy:
    """The study a sweep runs against, opened once the workers are ready."""

    study: optuna.Study
    storage: optuna.storages.BaseStorage
    study_id: int
    created: bool


class Orchestrator:
    """Runs trials of one study on a backend until the budget is spent or it is stopped.

    - Exactly ``parallel`` trials are in flight while the budget lasts (the backend's free
      slots). Trials are asked for ahead of demand, on a thread or in sampler processes of
      their own (see :mod:`sweeper.orchestrator._asker`), so a slot that frees never waits
      for a sampler call, and neither do reports, pruning decisions and tells.
    - Every asked trial is told exactly once: COMPLETE with its values, PRUNED, or FAIL with
      the reason (in the ``fail_reason`` system attribute, with the traceback).
    - Suggestions and pruning decisions are made here, by the study's sampler and pruner,
      against the live ``optuna.Trial``.
    - The first Ctrl-C stops asking and lets running trials finish; a second one (or SIGTERM)
      stops them at once. Either way every trial is recorded before ``run`` returns.
    - ``callbacks`` are called after each trial is told, as ``study.optimize`` calls them;
      ``study.stop()`` in one stops the sweep as the first Ctrl-C does.

    Not thread-safe: ``run`` is called once, from one thread.
    """

    def __init__(
        self,
        *,
        backend: Backend,
        open_study: Callable[[], OpenStudy],
        reporter: Reporter,
        stats: SweepStats,
        log_dir: Path,
        n_trials: int | None,
        timeout: float | None,
        trial_timeout: float | None,
        tracker: Tracker | None = None,
        checkpoints: Path | None = None,
        callbacks: Sequence[Callback] = (),
        storage_location: str | None = None,
        sampler_processes: int = 0,
        cost: CostMeter | None = None,
    ) -> None:
        self._backend = backend
        self._cost = cost if cost is not None else CostMeter(clock=backend.now)
        self._stop = Stopping(
            backend=backend,
            reporter=reporter,
            stats=stats,
            cost=self._cost,
            n_trials=n_trials,
            timeout=timeout,
        )
        self._attempts = Attempts()
        self._callbacks = tuple(callbacks)
        self._storage_location = storage_location
        self._sampler_processes = sampler_processes if storage_location else 0
        self._spawned: list[tuple[Any, Any]] = []
        self._news_at = 0.0
        self._last_note: str | None = None
        self._ask_again: float | None = None
        self._mixing = False
        self._polled_at = 0.0
        self._asker: Asker | None = None
        self._submitted: dict[int, float] = {}
        self._durations: collections.deque[float] = collections.deque(maxlen=_DURATIONS)
        self._returned = 0
        self._checkpoints = checkpoints
        self._tracker = tracker or Tracker()
        self._roots: dict[int, int] = {}
        self._proposals: dict[int, dict[str, Any]] = {}
        self._unrecorded: dict[int, str] = {}
        """Trials a call of which could not be stored, and why: they cannot count."""
        self._recent_space: dict[str, Any] = {}
        self._last_asked: dict[str, int] = {}
        self._open_study = open_study
        self._reporter = reporter
        self._stats = stats
        self._log_dir = log_dir
        self._n_trials = n_trials
        self._trial_timeout = trial_timeout
        self._opened: OpenStudy | None = None
        self._live: dict[int, optuna.Trial] = {}
        self._deadlines: dict[int, float] = {}
        self._asked = 0
        self._any_values = False
        self._constrained = False
        self._seen_failures: set[str] = set()
        self._refreshed = 0.0

    # -- public --------------------------------------------------------------------------

    @property
    def opened(self) -> OpenStudy | None:
        """The study, once the workers were ready and it was opened."""
        return self._opened

    @property
    def stop_reason(self) -> str | None:
        """Why the sweep stopped before its budget, if it did."""
        return self._stop.reason

    @property
    def interrupted(self) -> bool:
        return self._stop.interrupts > 0

    @property
    def returned(self) -> int:
        """Trials asked ahead that never ran, put back in the study's queue (WAITING)."""
        return self._returned

    def run(self) -> None:
        """Run the sweep; raise UsageError subclasses for bad input found on the way.

        Starts the backend; closing it is the caller's (after tracking has been flushed,
        since on Modal the tracking hub lives in the backend's App).
        """
        with self._stop.signal_handlers():
            self._backend.start()
            # They start up while the workers do.
            self._spawned = spawn_samplers(self._sampler_processes, self._log_dir)
            try:
                if not self._wait_for_workers():
                    return
                self._opened = self._open_study()
                study = self._opened.study
                prior = study.get_trials(deepcopy=False)
                self._any_values = any(t.state == TrialState.COMPLETE for t in prior)
                self._constrained = has_constraints(study.sampler) or any(
                    t.constraints for t in prior
                )
                self._asker = Asker(
                    self._producers(study), self._backend.wake, limit=self._n_trials
                )
            finally:
                release(self._spawned)
                self._spawned = []
            self._backend.watch_sampler(lambda: self._asker is not None and self._asker.busy)
            # As inside study.optimize: callbacks may call study.stop().
            study._stop_flag = False
            study._thread_local.in_optimize_loop = True
            try:
                self._asker.start()
                self._loop()
            finally:
                study._thread_local.in_optimize_loop = False
                self._returned = self._asker.close(self._opened.storage)
            self._backend.wind_down()

    def _producers(self, study: optuna.Study) -> list[Producer]:
        """Who asks for trials (see :mod:`sweeper.orchestrator._producers`)."""
        producers, self._spawned, self._mixing = make_producers(
            study,
            self._spawned,
            storage_location=self._storage_location,
            log_dir=self._log_dir,
            checkpoints=self._checkpoints,
        )
        return producers

    # -- the loop ------------------------------------------------------------------------

    def _wait_for_workers(self) -> bool:
        self._stats.waiting = "starting workers and loading the objective"
        while self._backend.free_slots() == 0:
            if self._stop.interrupted_while_starting():
                return False
            for event in self._backend.poll(_POLL_SECONDS):
                if isinstance(event, LoadFailed):
                    raise ObjectiveError(event.message)
                if isinstance(event, Notice):
                    self._reporter.note(event.text, event.level)
            self._reporter.update(self._stats.snapshot())
        self._stats.waiting = None
        return True

    def _loop(self) -> None:
        assert self._opened is not None
        assert self._asker is not None
        wound_down = False
        while True:
            self._stop.apply_interrupts()
            if not self._stopping():
                self._fill()
            elif not wound_down:
                wound_down = True
                self._asker.stop()
                self._backend.wind_down()
            if (
                not self._backend.running
                and not self._attempts.waiting
                and (self._stopping() or self._budget_spent())
            ):
                break
            events = self._backend.poll(self._poll_timeout())
            self._polled_at = self._backend.now()  # when these results arrived, near enough
            with self._deferred_params():  # the parameters in these events: one write
                for event in events:
                    self._handle(event)
            self._expire()
            self._release_parked()
            problem = self._tracker.take_problem()
            if problem is not None:
                self._reporter.note(problem, "warning")
            self._sampler_news()
            self._stats.running = len(self._backend.running)
            self._refresh()
        self._stop.raise_error()

    def _deferred_params(self) -> contextlib.AbstractContextManager[None]:
        assert self._opened is not None
        deferred = getattr(self._opened.storage, "deferred_params", None)
        return deferred() if deferred is not None else contextlib.nullcontext()

    def _refresh(self) -> None:
        """Show the state of the sweep; displays need no more than ten updates a second."""
        now = time.monotonic()
        if now - self._refreshed >= 0.1:
            self._refreshed = now
            self._reporter.update(self._stats.snapshot())

    def _stopping(self) -> bool:
        assert self._opened is not None
        return self._stop.stopping(self._asked, self._opened.study)

    def _budget_spent(self) -> bool:
        return self._stop.budget_spent(self._asked)

    def _poll_timeout(self) -> float:
        timeout = _POLL_SECONDS
        now = time.monotonic()
        if self._deadlines:
            timeout = min(timeout, max(0.0, min(self._deadlines.values()) - now))
        left = self._stop.time_left(now)
        if left is not None:
            timeout = min(timeout, left)
        if self._ask_again is not None:  # when the asker should deepen its pool
            timeout = min(timeout, max(0.0, self._ask_again - now))
        return timeout

    def _fill(self) -> None:
        assert self._opened is not None and self._asker is not None
        study = self._opened.study
        free = self._backend.free_slots()
        while free > 0 and not self._budget_spent():
            try:
                asked = self._asker.take()
            except SamplingFailed as failure:
                # No trial can be asked for: the running ones finish, then the error is
                # raised from run(), as study.optimize raises what its sampler raised.
                if failure.trace:
                    logger.debug("asking for a trial failed:\n%s", failure.trace)
                self._stop.sampler_failed(failure)
                return
            if asked is None:
                break  # the asker wakes the loop when one is ready
            self._submit(study, asked)
            free = self._backend.free_slots()
        now = self._backend.now()
        later = self._asker.want(free, self._expected_ends(), now, self._patience)
        self._ask_again = None if later is None else time.monotonic() + (later - now)
        self._stats.running = len(self._backend.running)

    def _submit(self, study: optuna.Study, asked: Asked) -> None:
        live, spec = asked.live, asked.spec
        self._live[live.number] = live
        self._asked += 1
        if spec.proposals:
            self._proposals[live.number] = {n: v for n, (_, v) in spec.proposals.items()}
        self._backend.submit(spec)
        self._cost.start(live.number)
        self._submitted[live.number] = self._backend.now()
        root = spec.root if spec.root is not None else live.number
        self._roots[live.number] = root
        self._tracker.emit(TrialStarted(study.study_name, root, live.number, time.time()))
        if self._trial_timeout is not None:
            self._deadlines[live.number] = time.monotonic() + self._trial_timeout

    @property
    def _patience(self) -> float:
        """How long a free slot waits for a GP suggestion in progress rather than take a TPE
        one: a quarter of a typical trial (a GP trial is worth about two TPE ones). None
        for other samplers: their filler is the same sampler."""
        if not self._durations or not self._mixing:
            return 0.0
        return 0.25 * statistics.median(self._durations)

    def _expected_ends(self) -> list[float]:
        """When the running trials may end, from how long recent trials ran: early rather
        than late (the first quartile), since a trial asked too early waits in the pool
        while one asked too late keeps a worker waiting."""
        if not self._durations:
            return []
        ordered = sorted(self._durations)
        early = ordered[len(ordered) // 4]
        return [started + early for started in self._submitted.values()]

    def _sampler_news(self) -> None:
        """Pass on what the sampler has to say (the auto sampler's choices; said once even
        when several sampler processes say it)."""
        assert self._asker is not None
        now = time.monotonic()
        if now - self._news_at < 0.25:
            return
        self._news_at = now
        for text in self._asker.take_notes():
            key = text.split(" from trial", 1)[0]
            if key != self._last_note:
                self._last_note = key
                self._reporter.note(text)

    def _remember_param(self, number: int, name: str, distribution: Any) -> None:
        """Note a parameter a trial asked for, so later trials get a value drawn ahead.

        The asker's thread reads ``_recent_space``: it is replaced by a new dict, never
        changed in place."""
        self._last_asked[name] = number
        if self._recent_space.get(name) != distribution:
            self._recent_space = {**self._recent_space, name: distribution}
            if self._asker is not None:
                self._asker.update_space(self._recent_space)

    def _forget_params(self, number: int) -> None:
        """Drop parameters no trial asked for in the last ``_RECENT_TRIALS`` trials."""
        horizon = number - _RECENT_TRIALS
        stale = [name for name, last in self._last_asked.items() if last < horizon]
        if stale:
            for name in stale:
                del self._last_asked[name]
            self._recent_space = {
                n: d for n, d in self._recent_space.items() if n in self._last_asked
            }
            if self._asker is not None:
                self._asker.update_space(self._recent_space)

    def _log_path(self, number: int) -> Path:
        return self._log_dir / f"trial-{number}.log"

    def _expire(self) -> None:
        now = time.monotonic()
        for number, deadline in list(self._deadlines.items()):
            if deadline <= now:
                del self._deadlines[number]
                self._backend.cancel(
                    number,
                    f"timed out: ran longer than the trial timeout of {self._trial_timeout:g}s",
                )

    # -- events --------------------------------------------------------------------------

    def _handle(self, event: Any) -> None:
        if isinstance(event, Call):
            self._on_call(event)
        elif isinstance(event, TrialResult):
            self._on_result(event)
        elif isinstance(event, Notice):
            self._reporter.note(event.text, event.level)
        elif isinstance(event, Output):
            self._reporter.trial_output(event.number, event.text)
        elif isinstance(event, LoadFailed):
            if self._any_values:  # it loaded before: a worker-specific problem
                self._reporter.note(event.message, "warning")
            else:
                self._stop.stop_with(ObjectiveError(event.message), "stopped: " + event.message)

    def _on_call(self, call: Call) -> None:
        live = self._live.get(call.number)
        if live is None:
            return
        # A worker (re)starting this trial: a restarted attempt (Modal preempted or retried
        # its container) takes over, and what the old one sends is dropped.
        if not self._attempts.accept(call):
            return
        if call.method == "started":
            self._record_start(call, live)
        self._apply_call(call, live)
        ready = self._attempts.ready(call.number)
        if ready is not None:
            self._finish(ready)

    def _record_start(self, call: Call, live: optuna.Trial) -> None:
        """Note the worker of this attempt. A restart (the backend's ``started`` call says
        the attempt and why) is recorded on the trial, and the new attempt's reports replace
        the old one's, in the storage and in Aim."""
        number = call.number
        worker = call.args[0] if call.args and isinstance(call.args[0], dict) else {}
        info = call.args[1] if len(call.args) > 1 and isinstance(call.args[1], dict) else {}
        attempt, why, log = self._attempts.record_start(number, worker, info)
        if attempt <= 1:
            return
        assert self._opened is not None
        self._opened.storage.set_trial_system_attr(live._trial_id, ATTEMPTS_KEY, log)
        live._cached_frozen_trial.intermediate_values.clear()  # reported again, not ignored
        root = self._roots.get(number, number)
        self._tracker.emit(
            TrialStarted(live.study.study_name, root, number, time.time(), attempt=attempt)
        )
        self._reporter.note(
            f"trial {number}: attempt {attempt} continues it as the same trial ({why})",
            "warning",
        )

    def _apply_call(self, call: Call, live: optuna.Trial) -> None:
        study, root = live.study.study_name, self._roots[call.number]
        if call.method == "log":
            metrics, step, context = call.args
            self._tracker.emit(Logged(study, root, metrics, step, context))
            return
        if not call.wants_reply and call.method.startswith("suggest_"):
            proposed = self._proposals.get(call.number, {})
            if call.args[0] in proposed:
                # The worker used the value proposed for it: record exactly that one.
                live._fixed_params.setdefault(call.args[0], proposed[call.args[0]])
        reply = answer_call(call, live)
        if call.wants_reply:
            self._backend.reply(reply)
        if reply.error is not None:
            if not call.wants_reply:  # the worker went on: its trial is no longer what it ran
                logger.warning("trial %d: %s failed: %s", call.number, call.method, reply.error)
                what = f"{call.method}({call.args[0]!r})" if call.args else call.method
                self._unrecorded.setdefault(
                    call.number, f"the sweep could not store its {what}: {reply.error!r}"
                )
            return
        if call.method.startswith("suggest_"):
            name = call.args[0]
            self._remember_param(call.number, name, live._cached_frozen_trial.distributions[name])
            self._tracker.emit(ParamsSet(study, root, {name: reply.value}))
        elif call.method == "report":
            self._tracker.emit(Reported(study, root, int(call.args[1]), float(call.args[0])))

    def _on_result(self, result: TrialResult) -> None:
        """Tell the trial, once every call its worker made before the result is applied.

        On a transport where results and calls travel apart (Modal), the result can arrive
        first; it waits a while for the calls it counts (see :class:`Attempts`).
        """
        if not self._attempts.park(result):
            self._finish(result)

    def _release_parked(self) -> None:
        for result, missing in self._attempts.overdue():
            logger.warning("trial %d: %d of its calls never arrived", result.number, missing)
            self._finish(result)

    def _finish(self, result: TrialResult) -> None:
        assert self._opened is not None
        attempts = self._attempts.finish(result.number)
        self._proposals.pop(result.number, None)
        live = self._live.pop(result.number)
        spend = self._cost.finish(result.number)
        cost = spend.record(self._cost.rate)
        self._opened.storage.set_trial_system_attr(live._trial_id, COST_KEY, cost)
        self._forget_params(result.number)
        submitted = self._submitted.pop(result.number, None)
        if submitted is not None:
            self._durations.append(self._polled_at - submitted)
        self._deadlines.pop(result.number, None)
        state, values = result.state, result.values
        reason, trace = result.reason, result.traceback
        if state == "COMPLETE" and values is not None:
            problem = self._check_values(values)
            if problem is not None:
                state, reason, values = "FAIL", problem, None
        unrecorded = self._unrecorded.pop(result.number, None)
        if unrecorded is not None and state != "FAIL":
            # The storage does not hold what the objective ran with: a value told for it
            # would mislead the sampler and the study's best.
            state, reason, values, trace = "FAIL", unrecorded, None, None
        interrupted = reason is not None and reason.startswith(INTERRUPTED)
        tell(
            self._opened.study,
            self._opened.storage,
            live,
            state,
            values,
            reason,
            trace,
            interrupted,
            self._log_path(live.number),
            worker=result.worker,
        )
        meets = state != "COMPLETE" or not self._constrained or self._feasible(live)
        finished = FinishedTrial(
            number=result.number,
            state=state,
            values=values,
            params=result.params if result.params is not None else live.params,
            duration=result.duration,
            reason=reason,
            traceback=trace,
            log_path=str(self._log_path(result.number)),
            cost=spend.usd,
            container_seconds=spend.seconds,
            attempts=max(1, len(attempts), attempts[-1]["attempt"] if attempts else 1),
            feasible=meets,
        )
        self._stats.running = len(self._backend.running)
        new_best = self._stats.record(finished)
        track_finished(
            self._tracker,
            self._stats,
            finished,
            self._roots.pop(result.number, result.number),
            result.worker,
            cost=cost,
            attempts=tuple(attempts) if finished.attempts > 1 else (),
        )
        if state == "FAIL" and not interrupted and not self._stop.aborting:
            key = failure_kind(reason, trace)
            first = key not in self._seen_failures
            self._seen_failures.add(key)
            self._reporter.trial_failed(finished, first)
            logger.debug(
                "Trial %d failed with parameters %s: %s", result.number, finished.params, reason
            )
        self._reporter.trial_finished(finished, self._stats.snapshot(), new_best)
        self._call_back(live)

    def _call_back(self, live: optuna.Trial) -> None:
        """Call the callbacks with the trial as it is now stored, as study.optimize does."""
        if not self._callbacks:
            return
        assert self._opened is not None
        study = self._opened.study
        frozen = study._storage.get_trial(live._trial_id)
        for callback in self._callbacks:
            name = getattr(callback, "__name__", None) or type(callback).__name__
            stopped = study._stop_flag
            try:
                callback(study, copy.deepcopy(frozen))
            except Exception as error:
                # As study.optimize raises it, after the running trials finish.
                logger.debug("the callback %s raised", name, exc_info=True)
                self._stop.callback_raised(name, error)
                return
            if study._stop_flag and not stopped:
                self._stop.callback_stopped(name)

    def _check_values(self, values: tuple[float, ...]) -> str | None:
        """Why ``values`` cannot be told to the study, or None. The first trial to return
        values sets the number of objectives; if it disagrees with the study's directions,
        the sweep stops with a usage error (the directions are wrong, not the trial)."""
        first = not self._any_values
        self._any_values = True
        directions = self._stats.directions
        reason = values_problem(values, directions)
        if reason is not None and first and len(values) != len(directions):
            self._stop.stop_with(
                ConfigError(
                    f"{reason}. Give --direction once per returned value (for example "
                    "--direction minimize --direction maximize)."
                ),
                "stopped: " + reason,
            )
        return reason

    def _feasible(self, live: optuna.Trial) -> bool:
        """Whether the trial just told meets the constraints its sampler stored for it."""
        assert self._opened is not None
        return feasible(self._opened.storage.get_trial(live._trial_id))
