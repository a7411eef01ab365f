"""Modal backend: each trial is one call of the sweep's ``run_trial`` Modal function, N at once.

The seam to Modal is :class:`~sweeper.backends._modal_session.ModalSession` (an App
running, a ``modal.Queue``, and ``spawn`` of one of its functions); tests put an in-process
stand-in in the place of the real one. What a failed call means is said in
:mod:`sweeper.backends._modal_failures`; :mod:`sweeper.backends._modal_setup` makes the
backend from a sweep's options. This module is the client side of the sweep:

- A trial is handed to Modal as a call of its own (``Function.spawn``) the moment the
  orchestrator submits it, and the orchestrator submits one only when a slot frees, so
  exactly ``parallel`` inputs are out. Waiting on each call (``FunctionCall.get``) says which
  trial an output belongs to, whatever it is: the trial's result, or the failure Modal
  returns without an input index in a map (a container that died, Modal's timeout, an
  exception raised in the container outside the objective). A failed call frees its slot
  at once, and the reason says what happened, with the container's traceback when there is
  one. It costs the same two requests a trial as an input of one map did (the call with its
  input, then one long poll for its output), and a cancelled trial can be stopped: its
  call is cancelled and its container stopped, where an input of a map ran on.
- ``--retries``: a trial whose container failed is handed to Modal again, as the same Optuna
  trial, up to that many times (sweeper does this, not Modal, so it knows why). A trial
  Modal restarts by itself (preemption) continues the same way. Each restart is announced by
  the new container's first message; the backend adds its attempt number and why, and the
  orchestrator records it on the trial and drops what an older attempt still sends.
- What happens to a trial beyond its objective (failures, retries, restarts) goes to the
  trial's log file here, as the local workers' output does.
- Calls and replies travel over a ``modal.Queue`` (:mod:`sweeper.channel._queue`).
- All of this runs in one thread with its own event loop, so it works the same from a
  script, the CLI or inside Jupyter's running loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeper._errors import BackendError
from sweeper._logging import get_logger
from sweeper.backends._base import Backend, Event, LoadFailed, Notice
from sweeper.backends._modal_failures import (
    Failure,
    describe_failure,
    describe_session_error,
    failure_text,
    is_session_error,
    one_line,
)
from sweeper.backends._modal_session import ModalSession, ModalTransport
from sweeper.channel._messages import Call, Reply
from sweeper.channel._queue import UP, reply_partition
from sweeper.objective._ref import ObjectiveRef
from sweeper.trial._messages import TrialResult, TrialSpec

logger = get_logger(__name__)

CHANNEL_WAIT_SECONDS = 30.0
"""How long one read of the trial channel waits for an item (a ``Queue.get`` must block
for a positive time: ``timeout=0`` sends Modal an already-expired, negative one)."""
RETRY_DELAY_SECONDS = 1.0
"""How long a failed trial waits before it is handed to Modal again (``--retries``)."""
CANCEL_SECONDS = 30.0
"""How long cancelling a trial's call may take before its slot is given up on."""
RESTARTED_BY_MODAL = (
    "Modal ran its input again on a new container (the container was preempted or lost)"
)


@dataclass(frozen=True)
class _Failed:
    """A trial's call failed, and it will not be handed to Modal again."""

    number: int
    failure: Failure
    attempts: int


@dataclass(frozen=True)
class _Retrying:
    """A trial's call failed, and the trial is being handed to Modal again."""

    number: int
    failure: Failure
    try_number: int
    """The try that failed (1 for the first)."""


@dataclass(frozen=True)
class _Released:
    """A cancelled trial's call has ended: its slot is free."""

    number: int


@dataclass(frozen=True)
class _Cancelled:
    result: TrialResult


@dataclass(frozen=True)
class _SessionFailed:
    error: BaseException


class _Wake:
    """Ends a poll: a trial is ready to be submitted."""


@dataclass
class _Attempts:
    """What the backend knows of one trial's attempts (the orchestrator's thread's view)."""

    attempt: int = 0
    """Attempts so far: containers that started it, and tries that failed before one did."""
    started_try: int = 0
    """The latest try a container announced it started."""
    failed_try: int = 0
    retried_after: dict[int, str] = field(default_factory=dict)
    """Why each try after the first was made: the failure of the one before."""
    ids: set[int] = field(default_factory=set)
    """The attempt ids containers announced (a repeated announcement is not a restart)."""


class ModalBackend(Backend):
    """Runs each trial as one call of the sweep's ``run_trial`` Modal function.

    ``make_request(spec, queue, objective, volume)`` turns a trial into the function's
    input. The bookkeeping of the :class:`Backend` contract holds: one result per submitted
    trial, whatever Modal does. ``retries`` is how many more times a trial whose container
    failed is handed to Modal.
    """

    def __init__(
        self,
        transport: ModalTransport,
        parallel: int,
        make_request: Callable[[TrialSpec, Any, ObjectiveRef, str | None], Any],
        *,
        retries: int = 0,
    ) -> None:
        super().__init__()
        self._transport = transport
        self._parallel = parallel
        self._make_request = make_request
        self._retries = retries
        self._events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: ModalSession | None = None
        self._replies: asyncio.Queue[Reply] | None = None
        self._stop: asyncio.Event | None = None
        # The orchestrator's thread:
        self._out: set[int] = set()  # trials whose call Modal still holds, finished or not
        self._submitted: dict[int, float] = {}
        self._attempts: dict[int, _Attempts] = {}
        self._winding_down = False
        # The event loop's thread:
        self._calls: dict[int, Any] = {}
        self._trial_tasks: set[asyncio.Task[None]] = set()
        self._cancelling: set[int] = set()
        self.hub_url: str | None = None
        self._hub_call: Any = None
        self._hub_closed = threading.Event()

    # -- hooks -----------------------------------------------------------------------------

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run_loop, name="sweeper-modal", daemon=True)
        self._thread.start()

    def _free_slots(self) -> int:
        if not self._ready.is_set() or self._winding_down:
            return 0
        return max(0, self._parallel - len(self._out))

    def _submit(self, spec: TrialSpec) -> None:
        request = self._make_request(
            spec, self._session_queue(), self._transport.objective, self._transport.volume
        )
        self._out.add(spec.number)
        self._submitted[spec.number] = time.monotonic()
        self._attempts[spec.number] = _Attempts()
        self._call_in_loop(self._run_trial, spec.number, request)

    def _reply(self, reply: Reply) -> None:
        self._call_in_loop(self._put_reply, reply)

    def _cancel(self, number: int, reason: str) -> None:
        # The trial ends now; its call is cancelled and its container stopped, and its slot
        # frees once Modal says the call has ended.
        self._events.put(_Cancelled(TrialResult(number=number, state="FAIL", reason=reason)))
        self._log(number, f"cancelled: {reason}; stopping its Modal container")
        self._call_in_loop(self._cancel_call, number)

    def _poll(self, timeout: float | None) -> list[Event]:
        events: list[Event] = []
        wait = timeout
        while True:
            try:
                item = self._events.get(timeout=wait) if wait else self._events.get_nowait()
            except queue.Empty:
                break
            wait = 0
            self._take(item, events)
        return events

    def _wind_down(self) -> None:
        self._winding_down = True

    def _wake(self) -> None:
        self._events.put(_Wake())

    def _close(self) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=120)

    # -- tracking through the hub ------------------------------------------------------------

    def start_hub(self, secret: str) -> None:
        """Start the Aim hub container; its UI address arrives as a Notice."""
        self._call_in_loop(self._spawn_hub, secret)

    def send_tracking(self, batch: list[Any]) -> None:
        from sweeper.backends._modal_app import TRACKING_PARTITION

        self._call_in_loop(self._put, batch, TRACKING_PARTITION)

    def close_hub(self, timeout: float) -> bool:
        """Tell the hub to finish (write, index, commit) and wait until it has."""
        from sweeper.backends._modal_app import TRACKING_PARTITION

        if self._hub_call is None and not self._ready.is_set():
            return True
        self._call_in_loop(self._put, "close", TRACKING_PARTITION)
        return self._hub_closed.wait(timeout)

    # -- the main thread's side ----------------------------------------------------------------

    def _session_queue(self) -> Any:
        assert self._session is not None
        return self._session.queue

    def _call_in_loop(self, function: Callable[..., Any], *args: Any) -> None:
        if self._loop is None:
            raise BackendError("the Modal session is not running")
        self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(function(*args)))

    def _take(self, item: Any, events: list[Event]) -> None:
        if isinstance(item, list):  # calls from a worker
            for call in item:
                announced = self._announced(call)
                if announced is not None:
                    events.append(announced)
        elif isinstance(item, _Cancelled):
            events.append(item.result)  # its call is still out until _Released
        elif isinstance(item, TrialResult):
            self._out.discard(item.number)
            self._attempts.pop(item.number, None)
            if item.state == "FAIL" and item.number not in self._cancelled:
                self._log(item.number, failure_text(item.reason, item.traceback))
            if item.load_error is not None:
                events.append(LoadFailed(item.load_error))
            events.append(item)
        elif isinstance(item, _Failed):
            self._out.discard(item.number)
            self._attempts.pop(item.number, None)
            reason = item.failure.reason
            if item.attempts > 1:
                reason += f" (attempt {item.attempts}; the trial's log has each one)"
            if item.number in self._running and item.number not in self._cancelled:
                self._log(item.number, failure_text(reason, item.failure.traceback))
                events.append(
                    TrialResult(
                        number=item.number,
                        state="FAIL",
                        reason=reason,
                        traceback=item.failure.traceback,
                        duration=time.monotonic() - self._submitted.get(item.number, 0.0),
                    )
                )
            self._submitted.pop(item.number, None)
        elif isinstance(item, _Retrying):
            self._retrying(item, events)
        elif isinstance(item, _Released):
            self._out.discard(item.number)
            self._attempts.pop(item.number, None)
            self._submitted.pop(item.number, None)
        elif isinstance(item, Notice):
            events.append(item)
        elif isinstance(item, _SessionFailed):
            raise BackendError(describe_session_error(item.error)) from None

    def _retrying(self, item: _Retrying, events: list[Event]) -> None:
        attempts = self._attempts.get(item.number)
        if attempts is None or item.number in self._cancelled:
            return
        if attempts.started_try < item.try_number:
            attempts.attempt += 1  # a try that failed before its container said anything
        attempts.failed_try = item.try_number
        attempts.retried_after[item.try_number + 1] = item.failure.reason
        retry = item.try_number
        text = (
            f"trial {item.number}: {item.failure.reason}; running it again "
            f"(retry {retry} of --retries {self._retries})"
        )
        self._log(item.number, failure_text(text, item.failure.traceback))
        events.append(Notice(text, "warning"))

    def _announced(self, call: Call) -> Call | None:
        """A ``started`` call, with the attempt number and why a restart happened (None for
        the announcement of a try that another has replaced, arriving late)."""
        if call.method != "started":
            return call
        attempts = self._attempts.get(call.number)
        if attempts is None or call.attempt in attempts.ids:
            return call
        attempts.ids.add(call.attempt)
        details = call.args[1] if len(call.args) > 1 and isinstance(call.args[1], dict) else {}
        try_number = int(details.get("try", 1))
        why: str | None = None
        if try_number < attempts.started_try:
            return None
        if try_number == attempts.started_try:
            why = RESTARTED_BY_MODAL
        elif try_number > 1:
            why = "retried after: " + attempts.retried_after.get(try_number, "a failure")
        attempts.started_try = try_number
        attempts.attempt += 1
        worker = call.args[0] if call.args else {}
        if attempts.attempt > 1:
            where = worker.get("modal_task") if isinstance(worker, dict) else None
            self._log(
                call.number,
                f"attempt {attempts.attempt} started"
                + (f" on Modal container {where}" if where else "")
                + (f": {why}" if why else ""),
            )
        info = {"attempt": attempts.attempt, "why": why, "try": try_number}
        return dataclasses.replace(call, args=(worker, info))

    def _log(self, number: int, text: str) -> None:
        """Add a line to the trial's log file (where local workers' output goes)."""
        spec = self._running.get(number)
        path = spec.log_path if spec is not None else None
        if not path:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as log:
                for line in text.rstrip().splitlines() or [""]:
                    log.write(f"[{stamp}] sweeper: {line}\n")
        except OSError as error:
            logger.debug("cannot write %s: %s", path, error)

    # -- the event loop thread -----------------------------------------------------------------

    def _run_loop(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as error:  # reported to the main thread, never lost
            self._events.put(_SessionFailed(error))

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._replies = asyncio.Queue()
        self._stop = asyncio.Event()
        async with self._transport.session() as session:
            self._session = session
            tasks = [
                asyncio.ensure_future(self._read_channel(session)),
                asyncio.ensure_future(self._send_replies(session)),
            ]
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                await self._end_channel_read(session)
                for task in [*tasks, *self._trial_tasks]:
                    task.cancel()
                await asyncio.gather(*tasks, *self._trial_tasks, return_exceptions=True)

    async def _run_trial(self, number: int, request: Any) -> None:
        """Hand the trial to Modal, and again after a failure while ``--retries`` allow;
        report how it ended."""
        task = asyncio.current_task()
        if task is not None:
            self._trial_tasks.add(task)
        try:
            await self._run_tries(number, request)
        finally:
            if task is not None:
                self._trial_tasks.discard(task)

    async def _run_tries(self, number: int, request: Any) -> None:
        assert self._session is not None
        try_number = 0
        while True:
            try_number += 1
            if try_number > 1 and hasattr(request, "try_number"):
                request = dataclasses.replace(request, try_number=try_number)
            try:
                call = await self._session.spawn("run_trial", request)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # Modal refuses calls: the App cannot run trials
                self._events.put(_SessionFailed(error))
                return
            self._calls[number] = call
            try:
                if number in self._cancelling:
                    await self._stop_call(call)
                output: Any = await call.get.aio()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                output = error
            finally:
                self._calls.pop(number, None)
            if number in self._cancelling:
                self._cancelling.discard(number)
                self._events.put(_Released(number))
                return
            if isinstance(output, TrialResult):
                self._events.put(output)
                return
            if is_session_error(output):
                self._events.put(_SessionFailed(output))
                return
            failure = (
                describe_failure(output)
                if isinstance(output, BaseException)
                else Failure(f"run_trial returned {output!r}, not a trial's result", retry=False)
            )
            if failure.retry and try_number <= self._retries:
                self._events.put(_Retrying(number, failure, try_number))
                await asyncio.sleep(RETRY_DELAY_SECONDS)
                if number in self._cancelling:
                    self._cancelling.discard(number)
                    self._events.put(_Released(number))
                    return
                continue
            self._events.put(_Failed(number, failure, try_number))
            return

    async def _cancel_call(self, number: int) -> None:
        self._cancelling.add(number)
        call = self._calls.get(number)
        if call is None:
            return
        await self._stop_call(call)
        await asyncio.sleep(CANCEL_SECONDS)
        if self._calls.get(number) is call:  # Modal has not ended it: give its slot up
            logger.warning(
                "trial %d: Modal has not stopped its cancelled call in %.0f s; its slot is "
                "given to another trial (the container may run until Modal's timeout)",
                number,
                CANCEL_SECONDS,
            )
            self._events.put(_Released(number))

    async def _stop_call(self, call: Any) -> None:
        try:
            await asyncio.wait_for(call.cancel.aio(terminate_containers=True), CANCEL_SECONDS)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # it ends with Modal's timeout instead
            logger.debug("cancelling a trial's Modal call: %s", error)

    async def _read_channel(self, session: ModalSession) -> None:
        # One blocking get at a time on the one partition everything for the orchestrator
        # arrives on (workers' calls, the hub's messages): Modal answers it as soon as an
        # item is put, so waiting long costs no latency, only fewer requests.
        while True:
            try:
                items = await session.queue.get_many.aio(
                    1000, partition=UP, timeout=CHANNEL_WAIT_SECONDS
                )
            except queue.Empty:
                continue
            except asyncio.CancelledError:
                raise
            except Exception as error:
                logger.debug("reading the trial channel: %s", error)
                await asyncio.sleep(1.0)
                continue
            for item in items:
                if item[0] == "end":  # the session ends: no further read to wait out
                    return
                self._route(item)

    async def _end_channel_read(self, session: ModalSession) -> None:
        """End the channel read in progress with an item of its own: cancelling it would do
        for Modal's client, but a queue whose ``get`` runs in a thread cannot be cancelled."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(session.queue.put.aio(("end",), partition=UP), 10)

    def _route(self, item: Any) -> None:
        kind = item[0]
        if kind == "calls":
            self._events.put(item[1])
        elif kind == "url":
            self.hub_url = item[1]
            self._events.put(Notice(f"Aim UI (live while the sweep runs): {item[1]}"))
        elif kind == "closed":
            self._hub_closed.set()

    async def _send_replies(self, session: ModalSession) -> None:
        assert self._replies is not None
        while True:
            reply = await self._replies.get()
            partition = reply_partition(reply.number, reply.attempt)
            try:
                await session.queue.put.aio(reply, partition=partition)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the worker times out waiting, and says so
                logger.warning("could not answer trial %d: %s", reply.number, error)

    async def _put_reply(self, reply: Reply) -> None:
        assert self._replies is not None
        await self._replies.put(reply)

    async def _put(self, item: Any, partition: str) -> None:
        assert self._session is not None
        await self._session.queue.put.aio(item, partition=partition)

    async def _spawn_hub(self, secret: str) -> None:
        assert self._session is not None
        try:
            self._hub_call = await self._session.spawn(
                "aim_hub", self._session.queue, secret, self._transport.volume
            )
        except Exception as error:
            self._events.put(
                Notice(
                    f"tracking is off for this sweep: the Aim hub did not start "
                    f"({one_line(error)})",
                    "warning",
                )
            )
            self._hub_closed.set()
