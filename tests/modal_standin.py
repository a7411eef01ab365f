"""An in-process stand-in for Modal's transport, for testing the Modal backend offline.

Only what crosses the network is replaced; the backend, the channel and the real
``run_trial`` function body (``Function.local()``) run as they do with Modal. The stand-in
behaves like Modal where it is awkward:

- ``spawn`` makes one call per trial, whose ``get`` returns its output or raises what it
  failed with (as ``modal.FunctionCall`` does); each input waits a random latency before it
  starts and its output another before it is returned;
- inputs, outputs and queue items go through a cloudpickle round trip;
- :class:`Faults` can lose a trial's container (its thread goes silent and its call fails
  with ``RemoteError("Runner failed with exit code: 137")``), preempt it (the same input
  starts again, as Modal restarts a preempted input), or let it run past the function's
  timeout (``FunctionTimeoutError``).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import queue
import random
import tempfile
import threading
import time
import warnings
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cloudpickle
import modal.exception

from sweeper.backends._modal_app import ModalDeployment
from sweeper.backends._modal_session import ModalSession, ModalTransport
from sweeper.objective._ref import ObjectiveRef


def round_trip(value: Any) -> Any:
    return cloudpickle.loads(cloudpickle.dumps(value))


class ContainerLost(ConnectionError):
    """What a worker in a lost or preempted container meets when it uses the network."""


# Threads whose container is gone (thread objects: idents are reused), and their attempts.
_DEAD: weakref.WeakSet[threading.Thread] = weakref.WeakSet()
_DEAD_ATTEMPTS: set[int] = set()
_ATTEMPT_OF: weakref.WeakKeyDictionary[threading.Thread, int] = weakref.WeakKeyDictionary()
_QUEUES: dict[int, FakeQueue] = {}


def _queue_by_id(key: int) -> FakeQueue:
    return _QUEUES[key]


def _check_alive(values: list[Any] = ()) -> None:  # type: ignore[assignment]
    """A dead container's threads (its heartbeats too) can no longer reach the queue."""
    if threading.current_thread() in _DEAD:
        raise ContainerLost("the container is gone")
    for value in values:
        attempt = None
        if isinstance(value, tuple) and value and value[0] == "calls" and value[1]:
            attempt = value[1][0].attempt
            _ATTEMPT_OF.setdefault(threading.current_thread(), attempt)
        elif isinstance(value, tuple) and value and value[0] == "beat":
            attempt = value[2]
        if attempt in _DEAD_ATTEMPTS:
            raise ContainerLost("the container is gone")


class _Method:
    """A method with modal's two faces: ``q.get(...)`` and ``await q.get.aio(...)``."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self._function = function

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._function(*args, **kwargs)

    async def aio(self, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self._function, *args, **kwargs)


class FakeQueue:
    """``modal.Queue``'s API in memory: FIFO partitions, blocking gets with timeouts
    (``queue.Empty``), ``put_many``/``get_many``, per-item size limit, and a cloudpickle
    round trip of every item. Pickles by reference, like a Modal object handle."""

    MAX_ITEM_BYTES = 1024 * 1024

    def __init__(self, delay: float = 0.0) -> None:
        self._delay = delay
        self._late: collections.deque[tuple[float, str | None, list[bytes]]] = collections.deque()
        self._courier: threading.Thread | None = None
        self._condition = threading.Condition()
        self._partitions: dict[str | None, collections.deque[bytes]] = collections.defaultdict(
            collections.deque
        )
        self.put = _Method(self._put)
        self.put_many = _Method(self._put_many)
        self.get = _Method(self._get)
        self.get_many = _Method(self._get_many)
        self.puts = 0
        self.asked_suggestions: list[tuple[int, str]] = []
        _QUEUES[id(self)] = self

    def __reduce__(self) -> tuple[Any, ...]:
        return (_queue_by_id, (id(self),))

    def _put(
        self,
        value: Any,
        block: bool = True,
        timeout: float | None = None,
        *,
        partition: str | None = None,
        partition_ttl: int = 86400,
    ) -> None:
        self._put_many([value], partition=partition)

    def _put_many(
        self,
        values: list[Any],
        block: bool = True,
        timeout: float | None = None,
        *,
        partition: str | None = None,
        partition_ttl: int = 86400,
    ) -> None:
        _check_alive(values)
        if partition is not None and not 0 < len(partition.encode()) <= 64:
            raise modal.exception.InvalidError("partition key must be 1 to 64 bytes")
        for value in values:
            if isinstance(value, tuple) and value and value[0] == "calls":
                self.asked_suggestions.extend(
                    (call.number, call.args[0])
                    for call in value[1]
                    if call.wants_reply and call.method.startswith("suggest_")
                )
        encoded = [cloudpickle.dumps(v) for v in values]
        for item in encoded:
            if len(item) > self.MAX_ITEM_BYTES:
                raise modal.exception.RequestSizeError("queue items are limited to 1 MiB")
        if self._delay and partition == "up":
            self._delayed(partition, encoded)
        else:
            self._append(partition, encoded)

    def _delayed(self, partition: str | None, encoded: list[bytes]) -> None:
        """Deliver ``encoded`` after the delay, in the order it was put (as Modal keeps a
        partition's items in order), on one thread for the queue."""
        with self._condition:
            self._late.append((time.monotonic() + self._delay, partition, encoded))
            if self._courier is None:
                self._courier = threading.Thread(
                    target=self._deliver_late, name="standin-queue-delay", daemon=True
                )
                self._courier.start()
            self._condition.notify_all()

    def _deliver_late(self) -> None:
        while True:
            with self._condition:
                while not self._late:
                    self._condition.wait()
                due, partition, encoded = self._late[0]
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            with self._condition:
                self._late.popleft()
            self._append(partition, encoded)

    def _append(self, partition: str | None, encoded: list[bytes]) -> None:
        with self._condition:
            self._partitions[partition].extend(encoded)
            self.puts += 1
            self._condition.notify_all()

    def _get(
        self, block: bool = True, timeout: float | None = None, *, partition: str | None = None
    ) -> Any:
        values = self._get_many(1, block, timeout, partition=partition)
        return values[0] if values else None

    def _get_many(
        self,
        n_values: int,
        block: bool = True,
        timeout: float | None = None,
        *,
        partition: str | None = None,
    ) -> list[Any]:
        _check_alive()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            items = self._partitions[partition]
            while block and not items:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise queue.Empty
                self._condition.wait(remaining if remaining is not None else 1.0)
                _check_alive()
            taken = [items.popleft() for _ in range(min(n_values, len(items)))]
        return [cloudpickle.loads(item) for item in taken]


@dataclass
class Faults:
    """What goes wrong, by trial number."""

    lose: set[int] = field(default_factory=set)
    """Containers that die mid-trial (killed, as for running out of memory): the trial's
    call fails with ``RemoteError("Runner failed with exit code: 137")``."""
    crash_once: set[int] = field(default_factory=set)
    """Containers killed mid-trial the first time the trial runs (a retry runs it again)."""
    preempt: set[int] = field(default_factory=set)
    """Containers preempted mid-trial once: the same input starts again."""
    after: float = 0.3
    """Seconds into the trial when it happens."""
    latency: tuple[float, float] = (0.0, 0.05)
    """Random delay before an input starts, and before its output is returned."""
    slow_channel: float = 0.0
    """Extra delay of every message workers send on the queue, so results (which Modal
    returns through map) can arrive before the calls that came first."""


class StandInCall:
    """A call of a function, with ``modal.FunctionCall``'s API: ``get`` (and ``.aio``) waits
    for its output and raises what its input failed with; ``cancel`` stops it."""

    def __init__(self, on_done: Callable[[], None] = lambda: None) -> None:
        self._future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._future.add_done_callback(lambda _: on_done())
        self.get = _Get(self._future)
        self.cancel = _Method(self._cancel)
        self.cancelled = False
        self.thread: threading.Thread | None = None

    def resolve(self, value: Any) -> None:
        if not self._future.done():
            if isinstance(value, BaseException):
                self._future.set_exception(value)
            else:
                self._future.set_result(value)

    @property
    def done(self) -> bool:
        return self._future.done()

    def _cancel(self, terminate_containers: bool = False) -> None:
        self.cancelled = True
        if terminate_containers and self.thread is not None:
            _kill_thread(self.thread)
        self.resolve(modal.exception.RemoteError("cancelled"))


class _Get:
    """``call.get(timeout=...)`` and ``await call.get.aio(timeout=...)``, the latter
    cancellable (it waits on the future in the event loop, not in a thread)."""

    def __init__(self, future: concurrent.futures.Future[Any]) -> None:
        self._future = future

    def __call__(self, timeout: float | None = None) -> Any:
        try:
            return self._future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError from None

    async def aio(self, timeout: float | None = None) -> Any:
        waiting = asyncio.wrap_future(self._future)
        if timeout is None:
            return await waiting
        try:
            return await asyncio.wait_for(asyncio.shield(waiting), max(timeout, 0.0))
        except asyncio.TimeoutError:
            raise TimeoutError from None


def _kill_thread(thread: threading.Thread) -> None:
    """The container of ``thread`` is gone: it can no longer reach the queue."""
    _DEAD.add(thread)
    if thread in _ATTEMPT_OF:
        _DEAD_ATTEMPTS.add(_ATTEMPT_OF[thread])


class StandInSession(ModalSession):
    def __init__(self, deployment: ModalDeployment, faults: Faults) -> None:
        self._deployment = deployment
        self._faults = faults
        self.queue = FakeQueue(delay=faults.slow_channel)
        self.started: list[int] = []  # trial numbers, one per attempt
        self.spawned: list[tuple[str, tuple[Any, ...]]] = []
        self.calls: list[StandInCall] = []
        """The trials' calls, in the order they were made."""
        self.max_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._crashed: set[int] = set()
        self._threads: list[threading.Thread] = []
        self._mount: Path | None = None

    def _mounted(self, objective: ObjectiveRef) -> ObjectiveRef:
        """The image's files, where the container would have them (a folder here)."""
        if objective.path is None or self._deployment.images is None:
            return objective
        if self._mount is None:
            self._mount = Path(tempfile.mkdtemp(prefix="standin-image-"))
            for local, remote in self._deployment.images[0].files:
                target = self._mount / Path(remote).name
                if not target.exists():
                    target.symlink_to(Path(local).resolve())
        return replace(objective, path=str(self._mount / Path(objective.path).name))

    def _ended(self) -> None:
        with self._lock:
            self._in_flight -= 1

    async def spawn(self, function: str, *args: Any) -> Any:
        self.spawned.append((function, args))
        if function == "run_trial":
            with self._lock:
                self._in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self._in_flight)
            call = StandInCall(self._ended)
            self.calls.append(call)
            self._start(round_trip(args[0]), call, first=True)
            return call
        body = getattr(self._deployment, function).local
        hub = StandInCall()

        def run() -> None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # .local() says volumes are not mounted
                    body(*args)
            except Exception as error:
                hub.resolve(error)
            finally:
                hub.resolve(None)

        threading.Thread(target=run, name=f"standin-{function}", daemon=True).start()
        return hub

    def _start(self, request: Any, call: StandInCall, first: bool) -> None:
        number = request.spec.number
        request = replace(request, objective=self._mounted(request.objective))

        def deliver(value: Any) -> None:
            time.sleep(random.uniform(*self._faults.latency))
            call.resolve(round_trip(value))

        def attempt() -> None:
            time.sleep(random.uniform(*self._faults.latency))
            if call.done:  # cancelled before it started
                return
            self.started.append(number)
            ident = threading.current_thread()
            call.thread = ident
            fault = None
            if number in self._faults.lose:
                fault = "lose"
            elif number in self._faults.crash_once and number not in self._crashed:
                self._crashed.add(number)
                fault = "lose"
            elif number in self._faults.preempt and first:
                fault = "preempt"
            if fault is not None:
                threading.Timer(
                    self._faults.after, self._kill, (ident, fault, request, call, deliver)
                ).start()
            started = time.monotonic()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # .local() says volumes are not mounted
                    result = self._deployment.run_trial.local(request)
            except ContainerLost:
                return  # its container is gone; Modal deals with the input (see _kill)
            except Exception as error:  # what Modal would return as an exception value
                if ident not in _DEAD:
                    deliver(error)
                return
            if ident in _DEAD:
                return
            if time.monotonic() - started > self._deployment.settings.timeout:
                deliver(
                    modal.exception.FunctionTimeoutError("Task's current input hit its timeout")
                )
                return
            deliver(result)

        thread = threading.Thread(target=attempt, name=f"standin-trial-{number}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _kill(
        self,
        ident: threading.Thread,
        fault: str,
        request: Any,
        call: StandInCall,
        deliver: Callable[[Any], None],
    ) -> None:
        _kill_thread(ident)
        if fault == "lose":
            deliver(modal.exception.RemoteError("Runner failed with exit code: 137"))
        else:  # preempted: Modal runs the same input again on another container
            self._start(request, call, first=False)


class StandInTransport(ModalTransport):
    """Opens :class:`StandInSession`s over a real :class:`ModalDeployment`."""

    def __init__(self, deployment: ModalDeployment, faults: Faults | None = None) -> None:
        self.deployment = deployment
        self.faults = faults or Faults()
        self.sessions: list[StandInSession] = []

    @property
    def objective(self) -> ObjectiveRef:
        return self.deployment.objective

    @property
    def volume(self) -> str | None:
        return None

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[ModalSession]:
        session = StandInSession(self.deployment, self.faults)
        self.sessions.append(session)
        yield session


@contextlib.contextmanager
def fake_tunnels() -> Any:
    """``modal.forward`` without Modal: the 'public' URL is the local one."""

    @contextlib.contextmanager
    def forward(port: int, **kwargs: Any) -> Any:
        yield type("Tunnel", (), {"url": f"http://127.0.0.1:{port}"})()

    original = modal.forward
    modal.forward = forward
    try:
        yield
    finally:
        modal.forward = original
