"""The service: Modal's RPCs, grouped by the objects they act on.

Each group is a component with a method per RPC (``async def QueuePut(self, request,
context)``, or an async generator for streaming RPCs); :class:`Service` finds the method by
the RPC's name. All state lives on the server's event loop, so no locks are needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from grpclib import GRPCError, Status

from fake_modal._rpc import Rpc

if TYPE_CHECKING:
    from fake_modal._server import FakeModal


@dataclass
class Context:
    """Who sent a request: ``peer`` is ``"client"`` or a container's task id."""

    peer: str
    metadata: dict[str, Any]
    rpc: Rpc

    @property
    def from_container(self) -> bool:
        return self.rpc.from_container


class Ids:
    """Object ids with Modal's prefixes (``ap-1``, ``fu-2``, ...)."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)

    def new(self, prefix: str) -> str:
        return f"{prefix}-{next(self._counter)}"


def not_found(what: str) -> GRPCError:
    return GRPCError(Status.NOT_FOUND, what)


def invalid(what: str) -> GRPCError:
    return GRPCError(Status.INVALID_ARGUMENT, what)


class Component:
    """A group of RPCs and the state they share."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.server: FakeModal = service.server
        self.ids = service.ids

    def before(self, rpc: Rpc) -> None:
        """See every request as it arrives (before it is handled)."""

    async def shutdown(self) -> None:
        """Release what the component holds (the server is stopping)."""


class Service:
    """All of the components; ``handler(name)`` is the method that answers RPC ``name``."""

    def __init__(self, server: FakeModal) -> None:
        from fake_modal._apps import Apps
        from fake_modal._functions import Functions
        from fake_modal._images import Images
        from fake_modal._queues import Queues
        from fake_modal._tunnels import Tunnels
        from fake_modal._volumes import Volumes

        self.server = server
        self.ids = Ids()
        self.apps = Apps(self)
        self.images = Images(self)
        self.queues = Queues(self)
        self.volumes = Volumes(self)
        self.tunnels = Tunnels(self)
        self.functions = Functions(self)
        self._components: list[Component] = [
            self.apps,
            self.images,
            self.queues,
            self.volumes,
            self.tunnels,
            self.functions,
        ]
        self._handlers: dict[str, Callable[..., Any]] = {}
        for component in self._components:
            for name in dir(component):
                if name[:1].isupper() and callable(getattr(component, name)):
                    self._handlers[name] = getattr(component, name)

    def handler(self, name: str) -> Callable[..., Any] | None:
        return self._handlers.get(name)

    def before(self, rpc: Rpc) -> None:
        for component in self._components:
            component.before(rpc)

    async def shutdown(self) -> None:
        for component in reversed(self._components):
            await component.shutdown()


class Notifier:
    """Wakes the requests waiting for something to change (a queue item, an output)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait_until(self, predicate: Callable[[], Any], timeout: float | None) -> Any:
        """``predicate()`` once it is true, or its last value when ``timeout`` runs out."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return value
            event = self._event
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)
