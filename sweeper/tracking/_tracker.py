"""The orchestrator's side of tracking: queue events and hand them to the repo's writer.

``emit`` only appends to a queue: a background thread sends what has queued up, in
batches, to the one writer of the Aim repo (a local process, or the Aim hub container on
Modal). Nothing the writer does can slow down or stop the sweep: if it cannot start, or
goes away, tracking is switched off and the problem is reported once (``take_problem``).
"""

from __future__ import annotations

import collections
import os
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from subprocess import Popen
from typing import Any

from sweeper._logging import get_logger
from sweeper._process import spawn_python
from sweeper.tracking._events import Event

logger = get_logger(__name__)

_BATCH = 2000


class TrackingUnavailable(Exception):
    """The writer cannot be reached; the message says why."""


class Tracker:
    """Sends tracking events; the base class drops them (tracking off)."""

    enabled = False

    def start(self) -> None:
        """Start the writer; returns at once."""

    def emit(self, event: Event) -> None:
        """Queue ``event``; never blocks."""

    def take_problem(self) -> str | None:
        """What went wrong with tracking since the last call, if anything (each told once)."""
        return None

    def close(self, timeout: float = 600.0) -> None:
        """Send what is queued, let the writer finish every run, and stop it."""

    @property
    def backlog(self) -> int:
        """Events not sent to the writer yet."""
        return 0


class BatchingTracker(Tracker):
    """Queues events and sends them in batches from a thread of its own.

    Subclasses connect to a writer: ``_open`` (raise :class:`TrackingUnavailable`),
    ``_send(batch)``, ``_finish()`` (the writer has written everything when it returns).
    """

    enabled = True

    def __init__(self) -> None:
        self._queue: collections.deque[Event] = collections.deque()
        self._wake = threading.Event()
        self._closing = False
        self._problems: list[str] = []
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.sent = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sweeper-tracking", daemon=True)
        self._thread.start()

    def emit(self, event: Event) -> None:
        if self.enabled:
            self._queue.append(event)
            if len(self._queue) >= _BATCH:
                self._wake.set()

    @property
    def backlog(self) -> int:
        return len(self._queue)

    def take_problem(self) -> str | None:
        with self._lock:
            return self._problems.pop(0) if self._problems else None

    def close(self, timeout: float = 600.0) -> None:
        self._closing = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _fail(self, problem: str) -> None:
        self.enabled = False
        self._queue.clear()
        with self._lock:
            self._problems.append(f"tracking is off for this sweep: {problem}")

    def _run(self) -> None:
        try:
            self._open()
        except TrackingUnavailable as error:
            self._fail(str(error))
            return
        try:
            while True:
                self._wake.wait(0.2)
                self._wake.clear()
                closing = self._closing
                while self._queue:
                    batch = [self._queue.popleft() for _ in range(min(_BATCH, len(self._queue)))]
                    self._send(batch)
                    self.sent += len(batch)
                if closing:
                    self._finish()
                    break
        except TrackingUnavailable as error:
            self._fail(str(error))
        finally:
            self._cleanup()

    # -- hooks -----------------------------------------------------------------------------

    def _open(self) -> None:
        raise NotImplementedError

    def _send(self, batch: list[Event]) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError

    def _cleanup(self) -> None:
        """Release what ``_open`` took, on every exit path."""


class HubTracker(BatchingTracker):
    """Tracking into the Aim repo at ``repo``, written by a local hub process."""

    def __init__(self, repo: str | os.PathLike[str], *, log_path: str | os.PathLike[str]):
        super().__init__()
        self.repo = Path(repo)
        self._log_path = Path(log_path)
        self._process: Popen[bytes] | None = None
        self._connection: Connection | None = None

    def _open(self) -> None:
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(self._log_path, "ab") as log:
                self._process, self._connection = spawn_python(
                    "sweeper.tracking._hub", [str(self.repo)], env=os.environ, output=log
                )
        except OSError as error:
            raise TrackingUnavailable(f"cannot start the tracking process ({error})") from None
        status = self._receive()
        if status[0] != "ready":
            raise TrackingUnavailable(status[1])

    def _receive(self) -> Any:
        assert self._connection is not None
        try:
            return self._connection.recv()
        except (EOFError, OSError):
            raise TrackingUnavailable(
                f"the tracking process stopped; see {self._log_path}"
            ) from None

    def _send(self, batch: list[Event]) -> None:
        assert self._connection is not None
        try:
            self._connection.send(batch)
        except (EOFError, OSError) as error:
            raise TrackingUnavailable(
                f"the tracking process stopped ({error}); see {self._log_path}"
            ) from None

    def _finish(self) -> None:
        assert self._connection is not None
        try:
            self._connection.send("close")
        except (EOFError, OSError) as error:
            raise TrackingUnavailable(f"the tracking process stopped ({error})") from None
        self._receive()  # ("closed",): every run is finished and indexed

    def _cleanup(self) -> None:
        if self._connection is not None:
            self._connection.close()
        process = self._process
        if process is None:
            return
        deadline = time.monotonic() + 10
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if process.poll() is None:
            process.kill()
            process.wait()
