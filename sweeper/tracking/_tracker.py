"""The orchestrator's side of tracking: queue events and hand them to the repo's writer.

``emit`` only appends to a queue: a background thread sends what has queued up, in
batches, to the tracking hub process (which alone writes the Aim repo). Nothing the hub
does can slow down or stop the sweep: if it cannot start, or dies, tracking is switched
off and the problem is reported once (``take_problem``).
"""

from __future__ import annotations

import collections
import os
import threading
import time
from pathlib import Path

from sweeper._logging import get_logger
from sweeper._process import spawn_python
from sweeper.tracking._events import Event

logger = get_logger(__name__)

_BATCH = 2000


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


class HubTracker(Tracker):
    """Tracking into the Aim repo at ``repo``, written by a local hub process."""

    enabled = True

    def __init__(self, repo: str | os.PathLike[str], *, log_path: str | os.PathLike[str]):
        self.repo = Path(repo)
        self._log_path = Path(log_path)
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
        """Events not sent to the writer yet."""
        return len(self._queue)

    def take_problem(self) -> str | None:
        with self._lock:
            return self._problems.pop(0) if self._problems else None

    def close(self, timeout: float = 600.0) -> None:
        self._closing = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the sending thread ----------------------------------------------------------------

    def _fail(self, problem: str) -> None:
        self.enabled = False
        self._queue.clear()
        with self._lock:
            self._problems.append(f"tracking is off for this sweep: {problem}")

    def _run(self) -> None:
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(self._log_path, "ab") as log:
                process, connection = spawn_python(
                    "sweeper.tracking._hub", [str(self.repo)], env=os.environ, output=log
                )
        except OSError as error:
            self._fail(f"cannot start the tracking process ({error})")
            return
        try:
            status = connection.recv()
        except (EOFError, OSError):
            status = ("failed", f"the tracking process exited; see {self._log_path}")
        if status[0] != "ready":
            self._fail(status[1])
            process.wait()
            return
        try:
            while True:
                self._wake.wait(0.2)
                self._wake.clear()
                closing = self._closing
                while self._queue:
                    batch = [self._queue.popleft() for _ in range(min(_BATCH, len(self._queue)))]
                    connection.send(batch)
                    self.sent += len(batch)
                if closing:
                    connection.send("close")
                    connection.recv()  # ("closed",): every run is finished and indexed
                    break
        except (EOFError, OSError) as error:
            self._fail(f"the tracking process stopped ({error}); see {self._log_path}")
        finally:
            connection.close()
            deadline = time.monotonic() + 10
            while process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if process.poll() is None:
                process.kill()
                process.wait()
