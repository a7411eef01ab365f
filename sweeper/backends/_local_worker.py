"""A local worker process: loads the objective once, then runs trials until told to stop.

Started by :class:`~sweeper.backends.LocalBackend` with ``main([..., FD])``, where FD is
its end of a socket pair.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection

from sweeper._errors import ObjectiveError
from sweeper._process import child_main
from sweeper.channel._base import ChannelClosed, Transport, TrialChannel
from sweeper.objective._ref import ObjectiveRef
from sweeper.trial._messages import TrialSpec
from sweeper.trial._runner import run_trial

CALL_BATCH_SECONDS = 0.2
"""How long a worker holds one-way calls (reports, logged metrics) to send them together."""


@dataclass(frozen=True)
class Init:
    """First message to a worker."""

    objective: ObjectiveRef
    slot: int


@dataclass(frozen=True)
class Ready:
    pid: int


@dataclass(frozen=True)
class Failed:
    message: str


class Stop:
    """Tells an idle worker to exit."""


class ConnectionTransport(Transport):
    """The trial channel over the worker's socket to the orchestrator."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def send(self, messages: Sequence[object]) -> None:
        try:
            self._connection.send(list(messages))
        except (OSError, EOFError):
            raise ChannelClosed("the orchestrator is gone") from None

    def receive(self, timeout: float | None = None) -> object:
        try:
            if timeout is not None and not self._connection.poll(timeout):
                raise TimeoutError
            return self._connection.recv()
        except (OSError, EOFError):
            raise ChannelClosed("the orchestrator is gone") from None


@contextlib.contextmanager
def _output_to(path: str | None) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2) to ``path``."""
    if path is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (target, *saved):
            os.close(fd)


def serve(connection: Connection) -> None:
    init = connection.recv()
    assert isinstance(init, Init)
    try:
        objective = init.objective.load()
    except ObjectiveError as error:
        traceback.print_exc()
        connection.send(Failed(str(error)))
        return
    except BaseException as error:  # a bug of ours, or a very odd objective
        traceback.print_exc()
        connection.send(
            Failed(f"the objective could not be loaded: {type(error).__name__}: {error}")
        )
        return
    connection.send(Ready(os.getpid()))
    transport = ConnectionTransport(connection)
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            return
        if isinstance(message, Stop):
            return
        assert isinstance(message, TrialSpec)
        channel = TrialChannel(
            transport, message.number, attempt=message.attempt, max_delay=CALL_BATCH_SECONDS
        )
        try:
            with _output_to(message.log_path):
                result = run_trial(objective, message, channel)
                if result.traceback:
                    sys.stderr.write(result.traceback)
        except ChannelClosed:
            return
        try:
            connection.send(result)
        except (OSError, EOFError):
            return


def main(argv: Sequence[str]) -> None:
    child_main(lambda: serve(Connection(int(argv[1]))))


if __name__ == "__main__":
    main(sys.argv)
