"""The seam to Modal: what the Modal backend does with Modal while the sweep's App runs
(:class:`ModalSession`), and the real one (:class:`ModalCloud`). Tests put an in-process
stand-in in its place; everything above it is ours."""

from __future__ import annotations

import abc
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from sweeper.objective._ref import ObjectiveRef


class ModalSession(abc.ABC):
    """What the backend does with Modal while the sweep's App runs: the thinnest seam.

    ``queue`` has ``modal.Queue``'s API, sync and ``.aio``. ``spawn(function, *args)`` calls
    one of the App's functions (``run_trial`` for a trial, ``aim_hub``) and returns the call,
    with ``modal.FunctionCall``'s API (``.aio``): ``get()`` returns the function's output or
    raises what its input failed with (an exception raised in the container, with its
    traceback; ``RemoteError("Runner failed with exit code: N")`` for a container that died;
    ``FunctionTimeoutError``), and ``cancel(terminate_containers=...)`` stops it.
    """

    queue: Any

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
    """The real Modal: ``app.run()``, an ephemeral ``modal.Queue``, ``Function.spawn``."""

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

    async def spawn(self, function: str, *args: Any) -> Any:
        return await getattr(self._deployment, function).spawn.aio(*args)
