"""An in-process stand-in for Modal's transport, for testing the Modal backend offline.

Only what crosses the network is replaced; the backend, the channel and the real
``run_trial`` function body (``Function.local()``) run as they do with Modal. The stand-in
behaves like Modal where it is awkward:

- ``map`` yields outputs in completion order, never in input order, and exceptions as values
  with no input index; each input waits a random latency before it starts and its output
  another before it is returned;
- inputs, outputs and queue items go through a cloudpickle round trip;
- :class:`Faults` can lose a trial's container (its thread goes silent and ``map`` returns an
  exception with no index), preempt it (the same input starts again, as Modal restarts a
  preempted input), or let it run past the function's timeout (``FunctionTimeoutError``).
"""

from __future__ import annotations

import asyncio
import collections
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

from sweeper.backends._modal import ModalSession, ModalTransport
from sweeper.backends._modal_app import ModalDeployment
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
            threading.Timer(self._delay, self._append, (partition, encoded)).start()
        else:
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
    """Containers that die mid-trial, for good: map returns an exception without index."""
    preempt: set[int] = field(default_factory=set)
    """Containers preempted mid-trial once: the same input starts again."""
    after: float = 0.3
    """Seconds into the trial when it happens."""
    latency: tuple[float, float] = (0.0, 0.05)
    """Random delay before an input starts, and before its output is returned."""
    slow_channel: float = 0.0
    """Extra delay of every message workers send on the queue, so results (which Modal
    returns through map) can arrive before the calls that came first."""


class StandInSession(ModalSession):
    def __init__(self, deployment: ModalDeployment, faults: Faults) -> None:
        self._deployment = deployment
        self._faults = faults
        self.queue = FakeQueue(delay=faults.slow_channel)
        self.started: list[int] = []  # trial numbers, one per attempt
        self.spawned: list[tuple[str, tuple[Any, ...]]] = []
        self.max_in_flight = 0
        self._threads: list[threading.Thread] = []
        self._mount: Path | None = None

    def map(self, inputs: AsyncIterator[Any]) -> AsyncIterator[Any]:
        return self._map(inputs)

    async def _map(self, inputs: AsyncIterator[Any]) -> AsyncIterator[Any]:
        loop = asyncio.get_running_loop()
        outputs: asyncio.Queue[Any] = asyncio.Queue()
        in_flight = 0
        exhausted = False
        next_input = asyncio.ensure_future(anext(inputs, None))
        next_output = asyncio.ensure_future(outputs.get())
        while not exhausted or in_flight:
            waiting = [next_output] + ([] if exhausted else [next_input])
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if next_input in done:
                request = next_input.result()
                if request is None:
                    exhausted = True
                else:
                    in_flight += 1
                    self.max_in_flight = max(self.max_in_flight, in_flight)
                    self._start(round_trip(request), loop, outputs, first=True)
                    next_input = asyncio.ensure_future(anext(inputs, None))
            if next_output in done:
                in_flight -= 1
                output = next_output.result()
                await asyncio.sleep(random.uniform(*self._faults.latency))
                yield output
                next_output = asyncio.ensure_future(outputs.get())
        next_output.cancel()

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

    def _start(
        self,
        request: Any,
        loop: asyncio.AbstractEventLoop,
        outputs: asyncio.Queue[Any],
        first: bool,
    ) -> None:
        number = request.spec.number
        request = replace(request, objective=self._mounted(request.objective))
        deliver: Callable[[Any], None] = lambda value: loop.call_soon_threadsafe(  # noqa: E731
            outputs.put_nowait, round_trip(value)
        )

        def attempt() -> None:
            time.sleep(random.uniform(*self._faults.latency))
            self.started.append(number)
            ident = threading.current_thread()
            fault = None
            if number in self._faults.lose:
                fault = "lose"
            elif number in self._faults.preempt and first:
                fault = "preempt"
            if fault is not None:
                threading.Timer(
                    self._faults.after, self._kill, (ident, fault, request, loop, outputs, deliver)
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
        loop: asyncio.AbstractEventLoop,
        outputs: asyncio.Queue[Any],
        deliver: Callable[[Any], None],
    ) -> None:
        _DEAD.add(ident)
        if ident in _ATTEMPT_OF:
            _DEAD_ATTEMPTS.add(_ATTEMPT_OF[ident])
        if fault == "lose":
            deliver(modal.exception.ExecutionError("the container exited unexpectedly"))
        else:  # preempted: Modal runs the same input again on another container
            self._start(request, loop, outputs, first=False)

    async def spawn(self, function: str, *args: Any) -> Any:
        self.spawned.append((function, args))
        body = getattr(self._deployment, function).local
        done = threading.Event()

        def run() -> None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # .local() says volumes are not mounted
                    body(*args)
            finally:
                done.set()

        threading.Thread(target=run, name=f"standin-{function}", daemon=True).start()
        return done


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
