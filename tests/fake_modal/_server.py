"""The server: modal_proto's ``ModalClient`` service on local unix sockets, run by grpclib in a
thread of its own, with every request recorded.

The local client reaches it on ``<root>/client.sock`` (``MODAL_SERVER_URL=unix://...``); each
container gets a socket of its own, so a request names its sender by the socket it came on,
and a container that a fault killed can no longer reach the server at all.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpclib.const
import grpclib.server
from grpclib import GRPCError, Status
from grpclib.exceptions import StreamTerminatedError
from h2.exceptions import StreamClosedError
from modal_proto import api_grpc

from fake_modal._faults import Faults
from fake_modal._rpc import CLIENT, Rpc
from fake_modal._service import Context, Service
from fake_modal._validate import problems_of

logger = logging.getLogger("fake_modal")

T = TypeVar("T")

TOKEN_ID = "ak-fake-modal"
TOKEN_SECRET = "as-fake-modal"


class _Names:
    """Stands in for a servicer so that the generated ``__mapping__`` names its handlers."""

    def __getattr__(self, name: str) -> str:
        return name


_HANDLERS: dict[str, grpclib.const.Handler] = api_grpc.ModalClientBase.__mapping__(_Names())  # type: ignore[arg-type]


class _Endpoint:
    """The service as one peer sees it (grpclib asks it for ``__mapping__``)."""

    def __init__(self, server: FakeModal, peer: str) -> None:
        self._server = server
        self._peer = peer

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return {
            path: grpclib.const.Handler(
                self._handler(handler.func, handler.cardinality),  # func is the RPC's name
                handler.cardinality,
                handler.request_type,
                handler.reply_type,
            )
            for path, handler in _HANDLERS.items()
        }

    def _handler(self, name: str, cardinality: grpclib.const.Cardinality) -> Any:
        server, peer = self._server, self._peer

        async def handle(stream: grpclib.server.Stream[Any, Any]) -> None:
            request = await stream.recv_message()
            assert request is not None
            rpc = server._arrived(name, request, peer)
            if rpc.dropped:
                raise GRPCError(Status.UNAVAILABLE, "the container is gone")
            if rpc.injected is not None:
                raise rpc.injected
            implementation = server.service.handler(name)
            if implementation is None:
                server.unimplemented.append(rpc)
                raise GRPCError(Status.UNIMPLEMENTED, f"the fake Modal server has no {name}")
            context = Context(peer=peer, metadata=dict(stream.metadata or {}), rpc=rpc)
            try:
                if cardinality is grpclib.const.Cardinality.UNARY_STREAM:
                    async for message in implementation(request, context):
                        await stream.send_message(message)
                else:
                    await stream.send_message(await implementation(request, context))
            except (GRPCError, asyncio.CancelledError):
                raise
            except (StreamClosedError, StreamTerminatedError, ConnectionError):
                rpc.abandoned = True  # the client gave up on it (a cancelled long poll)
            except Exception as error:
                logger.exception("fake Modal server: %s failed", name)
                server.errors.append((rpc, error))
                raise GRPCError(Status.INTERNAL, f"{type(error).__name__}: {error}") from None

        return handle


class FakeModal:
    """A fake Modal server for modal's own, unmodified client.

    Start it (a context manager), put :meth:`environ` in the environment, and ``app.run()``,
    ``Function.map``, ``modal.Queue`` and the rest talk to it; the functions' containers are
    processes on this machine that run modal's own container entrypoint against it.

    ``faults`` says what goes wrong (see :class:`Faults`); ``rpcs`` is every request received,
    ``invalid`` those Modal would not accept, ``errors`` requests the fake itself failed on,
    ``unimplemented`` requests for RPCs it has no answer to.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        faults: Faults | None = None,
        secrets: dict[str, dict[str, str]] | None = None,
        max_containers: int = 8,
        client_retries: bool = True,
        container_patches: dict[str, Any] | None = None,
        pythonpath: tuple[str, ...] = (),
    ) -> None:
        self._own_root = root is None
        # Unix socket paths are limited to about 100 bytes: keep them short.
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="fm-"))
        self.faults = faults if faults is not None else Faults()
        self.secrets = dict(secrets or {})
        """The Secrets that exist, by name (any other name is not found)."""
        self.max_containers = max_containers
        """Containers per function at most."""
        self.client_retries = client_retries
        """Whether maps retry failed inputs from the client (``sync_client_retries_enabled``),
        as Modal's maps do, or not at all."""
        self.timeouts: dict[str, float] = {}
        """Seconds an input of a function (by name) may run, instead of its own timeout."""
        self.container_patches = dict(container_patches or {})
        """Module attributes set in every container (``{"module:attribute": value}``)."""
        self.pythonpath = pythonpath
        """Extra import paths for containers (``PYTHONPATH``)."""
        self.rpcs: list[Rpc] = []
        self.errors: list[tuple[Rpc | None, BaseException]] = []
        self.unimplemented: list[Rpc] = []
        self._changed = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: dict[str, grpclib.server.Server] = {}
        self.service = Service(self)

    # -- life cycle ----------------------------------------------------------------------------

    def __enter__(self) -> FakeModal:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-modal", daemon=True)
        self._thread.start()
        ready.wait()
        self.call(self.listen(CLIENT, self.socket_path(CLIENT)))

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        try:
            self.call(self._shutdown(), timeout=60)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            self._loop = None
            if self._own_root:
                shutil.rmtree(self.root, ignore_errors=True)

    async def _shutdown(self) -> None:
        await self.service.shutdown()
        for peer in list(self._servers):
            await self.close_socket(peer)

    # -- sockets -------------------------------------------------------------------------------

    def socket_path(self, peer: str) -> Path:
        return self.root / f"{peer}.sock"

    def url_for(self, peer: str) -> str:
        return f"unix://{self.socket_path(peer)}"

    @property
    def url(self) -> str:
        """The address the local client is given (``MODAL_SERVER_URL``)."""
        return self.url_for(CLIENT)

    async def listen(self, peer: str, path: Path) -> None:
        server = grpclib.server.Server([_Endpoint(self, peer)])
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        await server.start(path=str(path))
        self._servers[peer] = server

    async def close_socket(self, peer: str) -> None:
        server = self._servers.pop(peer, None)
        if server is not None:
            server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 5)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path(peer).unlink()

    def add_secret(self, name: str, env: dict[str, str]) -> None:
        """Create a named Secret (as ``modal secret create`` would)."""

        async def add() -> None:
            self.service.images.add_secret(name, dict(env))

        self.call(add())

    def fetch(self, url: str, timeout: float = 30.0) -> tuple[int, bytes]:
        """GET a tunnel's URL (``https://127.0.0.1:port/...``), trusting the tunnels'
        certificate and no proxy; returns the status and the body."""
        import ssl
        import urllib.error
        import urllib.parse
        import urllib.request

        if urllib.parse.urlsplit(url).hostname != "127.0.0.1":
            raise ValueError(f"{url} is not a tunnel of the fake Modal server")
        context: ssl.SSLContext = self.call(self._client_ssl())
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )
        try:
            with opener.open(url, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    async def _client_ssl(self) -> Any:
        return self.service.tunnels.client_ssl()

    def environ(self) -> dict[str, str]:
        """What the local client needs in its environment to use this server."""
        return {
            "MODAL_SERVER_URL": self.url,
            "MODAL_TOKEN_ID": TOKEN_ID,
            "MODAL_TOKEN_SECRET": TOKEN_SECRET,
            "MODAL_ENVIRONMENT": "main",
        }

    # -- the server's thread -------------------------------------------------------------------

    def call(self, coroutine: Any, timeout: float | None = 60) -> Any:
        """Run a coroutine on the server's loop and return its result (from any thread)."""
        assert self._loop is not None, "the fake Modal server is not running"
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def _arrived(self, name: str, request: Any, peer: str) -> Rpc:
        rpc = Rpc(name=name, request=request, peer=peer)
        rpc.problems = problems_of(rpc)
        self.service.before(rpc)  # faults that trigger on requests drop them here
        with self._changed:
            self.rpcs.append(rpc)
            self._changed.notify_all()
        return rpc

    def notify(self) -> None:
        """Wake :meth:`wait_until` (the server calls it when its state changes)."""
        with self._changed:
            self._changed.notify_all()

    # -- for tests -----------------------------------------------------------------------------

    def wait_until(self, condition: Callable[[], T], timeout: float = 60.0) -> T:
        """Wait until ``condition()`` is true (checked whenever the server's state changes)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                value = condition()
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"the fake Modal server did not see {condition}")
                self._changed.wait(min(remaining, 0.5))

    def requests(self, name: str, *, peer: str | None = None) -> list[Any]:
        """The requests of one RPC, in arrival order (from one peer, if given)."""
        return [
            rpc.request
            for rpc in list(self.rpcs)
            if rpc.name == name and (peer is None or rpc.peer == peer)
        ]

    @property
    def invalid(self) -> list[Rpc]:
        """Requests that Modal's server would not accept as they are."""
        return [rpc for rpc in list(self.rpcs) if rpc.problems]

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[Rpc]]:
        """The requests received while the block runs."""
        start = len(self.rpcs)
        window: list[Rpc] = []
        try:
            yield window
        finally:
            window.extend(self.rpcs[start:])


def _close_env_client() -> None:
    """Forget modal's client from the environment (it is bound to one server's socket)."""
    from modal._utils.async_utils import synchronizer
    from modal.client import _Client

    client = _Client._client_from_env
    if client is not None:
        with contextlib.suppress(Exception):
            synchronizer._translate_out(client).close()
    _Client._client_from_env = None


@contextlib.contextmanager
def serving(monkeypatch: Any, **options: Any) -> Iterator[FakeModal]:
    """A started server, with the environment pointing modal's client at it (``monkeypatch``
    is pytest's, so the environment is restored after the test)."""
    with FakeModal(**options) as server:
        for key, value in server.environ().items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("MODAL_PROFILE", raising=False)
        monkeypatch.setenv("MODAL_CONFIG_PATH", str(server.root / "no-modal.toml"))
        _close_env_client()
        try:
            yield server
        finally:
            _close_env_client()
