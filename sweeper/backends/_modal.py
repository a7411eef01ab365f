"""Modal backend: trials on Modal containers through ``Function.map``, kept exactly N in flight.

The seam to Modal is :class:`ModalSession` (an App running, a ``modal.Queue``, ``map`` and
``spawn``); :class:`ModalCloud` is the real one, tests put an in-process stand-in in its
place. Everything else here is ours:

- ``Function.map.aio`` is fed by an async generator that waits for the orchestrator to
  submit a trial, and the orchestrator asks the study for one only when a slot frees, so
  exactly ``parallel`` inputs are out (``order_outputs=False``, ``return_exceptions=True``).
- Results carry their trial number. A failure Modal returns without one (a lost container,
  Modal's own timeout) is given to the trial whose worker went quiet: workers announce
  themselves when they start and send heartbeats on the channel.
- A trial Modal restarts (preemption, ``--retries``) announces a new attempt and continues
  the same Optuna trial; the orchestrator drops what the old attempt still sends.
- Calls and replies travel over a ``modal.Queue`` (:mod:`sweeper.channel._queue`).
- All of this runs in one thread with its own event loop, so it works the same from a
  script, the CLI or inside Jupyter's running loop.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from sweeper._errors import BackendError
from sweeper._logging import get_logger
from sweeper.backends._base import Backend, Event, LoadFailed, Notice
from sweeper.channel import _queue
from sweeper.channel._messages import Call, Reply
from sweeper.channel._queue import UP, reply_partition
from sweeper.objective._ref import ObjectiveRef
from sweeper.trial._messages import TrialResult, TrialSpec

logger = get_logger(__name__)

STALE_HEARTBEATS = 2.5
"""A worker silent for this many heartbeats has probably lost its container."""
CHANNEL_WAIT_SECONDS = 30.0
"""How long one read of the trial channel waits for an item (a ``Queue.get`` must block
for a positive time: ``timeout=0`` sends Modal an already-expired, negative one)."""


def _stale_seconds() -> float:
    return STALE_HEARTBEATS * _queue.HEARTBEAT_SECONDS


class ModalSession(abc.ABC):
    """What the backend does with Modal while the sweep's App runs: the thinnest seam.

    ``queue`` has ``modal.Queue``'s API, sync and ``.aio``. ``map`` is
    ``Function.map.aio(inputs, order_outputs=False, return_exceptions=True)`` over the
    ``run_trial`` function: outputs in completion order, exceptions as values with no input
    index. ``spawn`` starts another of the App's functions (the Aim hub) and returns its
    call, which has ``get`` (with ``.aio``).
    """

    queue: Any

    @abc.abstractmethod
    def map(self, inputs: AsyncIterator[Any]) -> AsyncIterator[Any]: ...

    @abc.abstractmethod
    async def spawn(self, function: str, *args: Any) -> Any: ...


class ModalTransport(abc.ABC):
    """Opens a :class:`ModalSession` (runs the App) for the duration of a sweep."""

    @abc.abstractmethod
    def session(self) -> contextlib.AbstractAsyncContextManager[ModalSession]: ...

    @property
    @abc.abstractmethod
    def objective(self) -> ObjectiveRef:
        """The objective as containers load it."""

    @property
    @abc.abstractmethod
    def volume(self) -> str | None:
        """The Volume's name, for commits from containers."""


class ModalCloud(ModalTransport):
    """The real Modal: ``app.run()``, an ephemeral ``modal.Queue``, ``Function.map.aio``."""

    def __init__(self, deployment: Any) -> None:
        self._deployment = deployment

    @property
    def objective(self) -> ObjectiveRef:
        ref: ObjectiveRef = self._deployment.objective
        return ref

    @property
    def volume(self) -> str | None:
        name: str = self._deployment.settings.volume
        return name

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[ModalSession]:
        import modal

        deployment = self._deployment
        async with deployment.app.run(), modal.Queue.ephemeral() as channel:
            yield _CloudSession(deployment, channel)


class _CloudSession(ModalSession):
    def __init__(self, deployment: Any, channel: Any) -> None:
        self._deployment = deployment
        self.queue = channel

    def map(self, inputs: AsyncIterator[Any]) -> AsyncIterator[Any]:
        stream: AsyncIterator[Any] = self._deployment.run_trial.map.aio(
            inputs, order_outputs=False, return_exceptions=True
        )
        return stream

    async def spawn(self, function: str, *args: Any) -> Any:
        return await getattr(self._deployment, function).spawn.aio(*args)


@dataclass(frozen=True)
class _Beat:
    number: int
    attempt: int


@dataclass(frozen=True)
class _Lost:
    """A failure Modal returned for some input, without saying which."""

    error: BaseException
    received: float


@dataclass(frozen=True)
class _Cancelled:
    result: TrialResult


@dataclass(frozen=True)
class _SessionFailed:
    error: BaseException


class _Wake:
    """Ends a poll: a trial is ready to be submitted."""


class ModalBackend(Backend):
    """Runs trials as inputs of the sweep's ``run_trial`` Modal function.

    ``make_request(spec)`` turns a trial into the function's input. The bookkeeping of the
    :class:`Backend` contract holds: one result per submitted trial, whatever Modal does.
    """

    def __init__(
        self,
        transport: ModalTransport,
        parallel: int,
        make_request: Callable[[TrialSpec, Any, ObjectiveRef, str | None], Any],
    ) -> None:
        super().__init__()
        self._transport = transport
        self._parallel = parallel
        self._make_request = make_request
        self._events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: ModalSession | None = None
        self._inputs: asyncio.Queue[Any] | None = None
        self._replies: asyncio.Queue[Reply] | None = None
        self._stop: asyncio.Event | None = None
        self._out: set[int] = set()  # inputs Modal still holds, finished or not
        self._submitted: dict[int, float] = {}
        self._last_seen: dict[int, float] = {}
        self._lost: list[_Lost] = []
        self._guessed: dict[int, _Lost] = {}
        self._winding_down = False
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
        now = time.monotonic()
        self._out.add(spec.number)
        self._submitted[spec.number] = now
        self._last_seen[spec.number] = now
        self._call_in_loop(self._put_input, request)

    def _reply(self, reply: Reply) -> None:
        self._call_in_loop(self._put_reply, reply)

    def _cancel(self, number: int, reason: str) -> None:
        # A Modal input cannot be stopped from here: the trial ends now, its container runs
        # on until Modal's timeout (set just after the trial's) and keeps its slot meanwhile.
        self._events.put(_Cancelled(TrialResult(number=number, state="FAIL", reason=reason)))

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
        self._attribute(events)
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
        now = time.monotonic()
        if isinstance(item, list):  # calls from a worker
            for call in item:
                if isinstance(call, Call):
                    self._last_seen[call.number] = now
            events.extend(item)
        elif isinstance(item, _Beat):
            self._last_seen[item.number] = now
        elif isinstance(item, _Cancelled):
            events.append(item.result)  # the input itself is still out
        elif isinstance(item, TrialResult):
            self._out.discard(item.number)
            guessed = self._guessed.pop(item.number, None)
            if guessed is not None:  # it was alive after all: the failure was another's
                self._lost.insert(0, guessed)
            if item.load_error is not None:
                events.append(LoadFailed(item.load_error))
            events.append(item)
        elif isinstance(item, _Lost):
            self._lost.append(item)
        elif isinstance(item, Notice):
            events.append(item)
        elif isinstance(item, _SessionFailed):
            raise BackendError(_describe_session_error(item.error)) from None

    def _attribute(self, events: list[Event]) -> None:
        """Give each failure Modal returned without an index to the trial it belongs to."""
        import modal.exception

        now = time.monotonic()
        while self._lost:
            lost = self._lost[0]
            candidates = sorted(self._out)
            if not candidates:
                logger.warning("Modal returned a failure for no trial in flight: %s", lost.error)
                self._lost.pop(0)
                continue
            number: int | None = None
            if len(candidates) == 1:
                number = candidates[0]
            elif isinstance(lost.error, modal.exception.FunctionTimeoutError):
                number = min(candidates, key=lambda n: self._submitted.get(n, now))
            else:
                quiet = _stale_seconds()
                stale = [n for n in candidates if now - self._last_seen.get(n, 0) > quiet]
                if len(stale) == 1:
                    number = stale[0]
                elif now - lost.received > quiet + _queue.HEARTBEAT_SECONDS:
                    # Nobody stood out in time: the quietest worker is the best guess. If
                    # Modal returns that trial's result later, the failure goes back here.
                    number = min(candidates, key=lambda n: self._last_seen.get(n, 0))
                    self._guessed[number] = lost
            if number is None:
                return  # wait for the heartbeats to tell
            self._lost.pop(0)
            self._out.discard(number)
            if number in self._running and number not in self._cancelled:
                events.append(
                    TrialResult(
                        number=number,
                        state="FAIL",
                        reason=f"its Modal container was lost ({_one_line(lost.error)})",
                        duration=now - self._submitted.get(number, now),
                    )
                )

    # -- the event loop thread -----------------------------------------------------------------

    def _run_loop(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as error:  # reported to the main thread, never lost
            self._events.put(_SessionFailed(error))

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._inputs = asyncio.Queue()
        self._replies = asyncio.Queue()
        self._stop = asyncio.Event()
        async with self._transport.session() as session:
            self._session = session
            tasks = [
                asyncio.ensure_future(self._consume_outputs(session)),
                asyncio.ensure_future(self._read_channel(session)),
                asyncio.ensure_future(self._send_replies(session)),
            ]
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                await self._inputs.put(None)
                await self._end_channel_read(session)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _requests(self) -> AsyncIterator[Any]:
        """The map's inputs: one per submitted trial, as the orchestrator submits them."""
        assert self._inputs is not None
        while True:
            request = await self._inputs.get()
            if request is None:
                return
            yield request

    async def _consume_outputs(self, session: ModalSession) -> None:
        try:
            async for output in session.map(self._requests()):
                if isinstance(output, TrialResult):
                    self._events.put(output)
                elif isinstance(output, BaseException):
                    self._events.put(_Lost(output, time.monotonic()))
                else:
                    logger.warning("run_trial returned %r", output)
        except asyncio.CancelledError:
            raise
        except BaseException as error:
            self._events.put(_SessionFailed(error))

    async def _read_channel(self, session: ModalSession) -> None:
        # One blocking get at a time on the one partition everything for the orchestrator
        # arrives on (workers' calls and heartbeats, the hub's messages): Modal answers it as
        # soon as an item is put, so waiting long costs no latency, only fewer requests.
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
        elif kind == "beat":
            self._events.put(_Beat(item[1], item[2]))
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

    async def _put_input(self, request: Any) -> None:
        assert self._inputs is not None
        await self._inputs.put(request)

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
                    f"({_one_line(error)})",
                    "warning",
                )
            )
            self._hub_closed.set()


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _describe_session_error(error: BaseException) -> str:
    try:
        import modal.exception

        if isinstance(error, modal.exception.AuthError):
            return (
                "Modal refused the credentials here. Run `modal setup` (or set MODAL_TOKEN_ID "
                "and MODAL_TOKEN_SECRET) and try again."
            )
    except ImportError:
        pass
    return f"the Modal app could not run: {_one_line(error)}"


def settings_from(config: Any) -> Any:
    """The :class:`ModalSettings` a sweep's options ask for."""
    from sweeper.backends._modal_app import DEFAULT_TIMEOUT, ModalSettings

    gpu: str | list[str] | None = None
    if config.gpu:
        gpu = config.gpu[0] if len(config.gpu) == 1 else list(config.gpu)
    # Modal's own timeout comes a little after the sweep's, so the sweep reports it.
    timeout = int(config.trial_timeout) + 60 if config.trial_timeout else DEFAULT_TIMEOUT
    return ModalSettings(
        gpu=gpu,
        cpu=config.cpu,
        memory=config.memory,
        timeout=min(timeout, 24 * 3600),
        retries=config.retries or 0,
        secrets=tuple(config.secrets or ()),
        volume=config.volume or "sweeper",
        pip=tuple(config.pip or ()),
        requirements_file=config.requirements,
    )


def make_request(
    spec: TrialSpec, channel: Any, objective: ObjectiveRef, volume: str | None
) -> Any:
    """The ``run_trial`` input for one trial."""
    from sweeper.backends._modal_app import TrialRequest

    root = spec.root if spec.root is not None else spec.number
    return TrialRequest(
        spec=spec,
        objective=objective,
        queue=channel,
        study=spec.study_name,
        root=root,
        volume=volume,
    )


def make_modal_backend(objective: ObjectiveRef, config: Any, parallel: int) -> ModalBackend:
    """The Modal backend for a sweep, or a UsageError saying what is missing to run it."""
    from sweeper._errors import ConfigError

    try:
        from sweeper.backends import _modal_app
    except ImportError as error:
        raise ConfigError(
            f"the Modal backend needs the modal package ({error}): pip install modal"
        ) from None
    if not _modal_app.has_credentials():
        raise ConfigError(
            "--backend modal needs Modal credentials, and none are set up here. Run `modal "
            "setup` once (or set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET), then run again."
        )
    if config.requirements and not os.path.isfile(config.requirements):
        raise ConfigError(f"--requirements {config.requirements}: no such file.")
    deployment = _modal_app.build(settings_from(config), objective)
    return ModalBackend(ModalCloud(deployment), parallel, make_request)
