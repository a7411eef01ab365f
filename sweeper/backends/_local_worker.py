"""A local worker process: loads the objective once, then runs trials until told to stop.

Started by :class:`~sweeper.backends.LocalBackend` with ``main([..., FD])``, where FD is
its end of a socket pair.

While a trial runs, file descriptors 1 and 2 go to the trial's log file (so a crash's stack
is kept too), and a thread sends what is written there to the orchestrator, whole lines a
few times a second (:class:`_Forward`), to be shown where the sweep runs.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection

from sweeper._errors import ObjectiveError
from sweeper._process import child_main
from sweeper.backends._base import Output
from sweeper.channel._base import ChannelClosed, Transport, TrialChannel
from sweeper.objective._ref import ObjectiveRef
from sweeper.trial._messages import TrialSpec
from sweeper.trial._runner import run_trial

CALL_BATCH_SECONDS = 0.2
"""How long a worker holds one-way calls (reports, logged metrics) to send them together."""
OUTPUT_SECONDS = 0.25
"""How often a worker sends on what the running trial printed."""
OUTPUT_CHUNK = 64 * 1024
"""At most this much of a trial's output is sent at once; what is over is skipped (the log
keeps it)."""


@dataclass(frozen=True)
class Init:
    """First message to a worker."""

    objective: ObjectiveRef
    slot: int
    logging: tuple[int, str] | None = None
    """The level and format of the orchestrator's root logger, when it has handlers: the
    worker's is configured alike, so that ``logging`` in the objective shows as it would
    under ``study.optimize`` there."""


@dataclass(frozen=True)
class Ready:
    pid: int


@dataclass(frozen=True)
class Failed:
    message: str


class Stop:
    """Tells an idle worker to exit."""


class ConnectionTransport(Transport):
    """The trial channel over the worker's socket to the orchestrator.

    Sends are serialized by a lock: the trial's output is sent on the same socket from a
    thread of its own.
    """

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._lock = threading.Lock()

    def send(self, messages: Sequence[object]) -> None:
        try:
            with self._lock:
                self._connection.send(list(messages))
        except (OSError, EOFError):
            raise ChannelClosed("the orchestrator is gone") from None

    def send_one(self, message: object) -> None:
        """Send one message of the worker's own (not a trial channel's batch)."""
        try:
            with self._lock:
                self._connection.send(message)
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


class _Forward:
    """Sends what trial ``number`` writes to its log to the orchestrator: whole lines, every
    :data:`OUTPUT_SECONDS` from a thread, and the rest when the trial ends (:meth:`close`)."""

    def __init__(self, path: str, number: int, send: Callable[[Sequence[object]], None]) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._file.seek(0, os.SEEK_END)
        self._number = number
        self._send = send
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sweeper-output", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        self._pass_on(final=True)
        self._file.close()

    def _run(self) -> None:
        while not self._stop.wait(OUTPUT_SECONDS):
            self._pass_on(final=False)

    def _pass_on(self, *, final: bool) -> None:
        try:
            data = self._file.read(OUTPUT_CHUNK)
            if len(data) == OUTPUT_CHUNK:  # more than anyone reads: the log has it
                skipped = self._file.seek(0, os.SEEK_END) - self._file.tell()
                if skipped > 0:
                    data += f"\n[... {skipped} bytes: see the log ...]\n".encode()
        except (OSError, ValueError):
            return
        text = self._pending + self._decoder.decode(data, final=final)
        cut = len(text) if final else text.rfind("\n") + 1
        text, self._pending = text[:cut], text[cut:]
        if "\r" in self._pending:  # a progress bar redrawn in place: only its last state
            self._pending = self._pending[self._pending.rfind("\r") + 1 :]
        if len(self._pending) > OUTPUT_CHUNK:
            text, self._pending = text + self._pending + "\n", ""
        if text:
            with contextlib.suppress(ChannelClosed):
                self._send([Output(self._number, text)])


def _configure_logging(config: tuple[int, str] | None) -> None:
    if config is not None and not logging.getLogger().handlers:
        level, format = config
        logging.basicConfig(level=level, format=format)


def serve(connection: Connection) -> None:
    init = connection.recv()
    assert isinstance(init, Init)
    _configure_logging(init.logging)
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
                forward = (
                    _Forward(message.log_path, message.number, transport.send)
                    if message.log_path
                    else None
                )
                try:
                    result = run_trial(objective, message, channel)
                finally:
                    if forward is not None:
                        forward.close()
                if result.traceback:  # in the log, not shown as output: it is shown as such
                    sys.stderr.write(result.traceback)
        except ChannelClosed:
            return
        try:
            transport.send_one(result)
        except ChannelClosed:
            return


def main(argv: Sequence[str]) -> None:
    child_main(lambda: serve(Connection(int(argv[1]))))


if __name__ == "__main__":
    main(sys.argv)
