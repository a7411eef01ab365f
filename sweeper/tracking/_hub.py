"""The local tracking hub: a process that owns the Aim repo and writes the events it is sent.

Started by :class:`~sweeper.tracking.Tracker` with ``main([..., FD, REPO])``. Writing in a
process of its own keeps Aim's work (and its imports) off the orchestrator, so tracking
does not hold up the sweep.

Messages in: a list of events (write them), or ``"close"`` (finish every run, answer
``("closed",)`` and exit). Messages out: ``("ready", path)`` or ``("failed", reason)`` first.
Events that arrive together are written together (:meth:`AimWriter.flush`), so the more
the hub is sent at once, the less each costs.

Once ready, the hub outlives the orchestrator: if that is killed, the hub still writes and
closes what it was sent (it holds the repo's lock meanwhile, which the next sweep's hub
waits for), and the rest is rebuilt from the storage when the study runs again.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection

from sweeper._process import child_main
from sweeper.tracking._writer import AimWriter, TrackingError

LOCK_WAIT = 60.0
"""How long a new hub waits for the repo's lock: the hub of a sweep that just ended may be
finishing what it was sent."""
_GATHER_SECONDS = 0.25
"""Events that keep arriving are written at least this often."""
ORPHAN_SECONDS = 300.0
"""A hub whose sweep went away exits after this long, written or not."""


def serve(connection: Connection, repo: str) -> None:
    try:
        writer = AimWriter(repo, lock_wait=LOCK_WAIT)
    except TrackingError as error:
        connection.send(("failed", str(error)))
        return
    outlive_parent()
    connection.send(("ready", str(writer.path)))
    try:
        while True:
            message = _receive(connection)
            gathered = time.monotonic()
            while message not in ("close", None):
                writer.apply(message)  # type: ignore[arg-type]
                if time.monotonic() - gathered > _GATHER_SECONDS or not connection.poll(0):
                    break
                message = _receive(connection)
            if message is None:  # the sweep is gone: finish what it sent
                _exit_after(ORPHAN_SECONDS)
                return
            if message == "close":
                writer.close()
                with contextlib.suppress(OSError):
                    connection.send(("closed",))
                return
            writer.flush()
    finally:
        writer.close()


def _receive(connection: Connection) -> object:
    try:
        return connection.recv()
    except (EOFError, OSError):
        return None


def _exit_after(seconds: float) -> None:
    timer = threading.Timer(seconds, os._exit, (1,))
    timer.daemon = True
    timer.start()


def outlive_parent() -> None:
    """Undo :func:`sweeper._process.die_with_parent` (Linux; elsewhere the hub still exits
    with the sweep, and what it had left is rebuilt by the next one)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, 0)  # PR_SET_PDEATHSIG: none
        except Exception:
            pass


def main(argv: Sequence[str]) -> None:
    child_main(lambda: serve(Connection(int(argv[1])), argv[2]))
