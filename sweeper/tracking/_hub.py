"""The local tracking hub: a process that owns the Aim repo and writes the events it is sent.

Started by :class:`~sweeper.tracking.Tracker` with ``main([..., FD, REPO])``. Writing in a
process of its own keeps Aim's work (and its imports) off the orchestrator, so tracking
does not hold up the sweep.

Messages in: a list of events (write them), or ``"close"`` (finish every run, answer
``("closed",)`` and exit), or ``"idle"`` (the same, but then wait for ``"open"`` rather than
exit: a hub kept between the sweeps of a notebook, holding no lock meanwhile, answers
``"open"`` as it answered its start). Messages out: ``("ready", path)`` or
``("failed", reason)`` first, then ``("written", n)`` after each batch (``n`` trials
finished in it: the tracker bounds what is in flight with it). A thread reads the socket as
messages come, so the sweep's sends never wait for a batch being written; events that
arrived together are written together (:meth:`AimWriter.flush`), so the more the hub is
sent at once, the less each costs.

Once ready, the hub outlives the orchestrator: a sweep that stops waiting for Aim (or is
killed) leaves it to write and close what it was sent, holding the repo's lock meanwhile
(the next sweep's hub waits for it); anything it never got is rebuilt from the storage when
the study runs again.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from sweeper._process import child_main
from sweeper.tracking._events import TrialFinished
from sweeper.tracking._writer import AimWriter, TrackingError

LOCK_WAIT = 60.0
"""How long a new hub waits for the repo's lock: the hub of a sweep that just ended may be
finishing what it was sent."""
_GATHER_SECONDS = 0.25
"""Events that keep arriving are written at least this often."""
_GATHER_TRIALS = 100
"""At most this many finished trials are written in one batch."""
ORPHAN_SECONDS = 300.0
"""A hub whose sweep went away exits after this long, written or not."""
_END = object()


def serve(connection: Connection, repo: str) -> None:
    try:
        writer = AimWriter(repo, lock_wait=LOCK_WAIT)
    except TrackingError as error:
        connection.send(("failed", str(error)))
        return
    outlive_parent()
    connection.send(("ready", str(writer.path)))
    inbox: queue.Queue[Any] = queue.Queue()
    threading.Thread(target=_read, args=(connection, inbox), daemon=True).start()
    try:
        while True:
            message = inbox.get()
            finished = 0
            gathered = time.monotonic()
            while isinstance(message, list):
                writer.apply(message)
                finished += sum(isinstance(event, TrialFinished) for event in message)
                if finished >= _GATHER_TRIALS or time.monotonic() - gathered > _GATHER_SECONDS:
                    message = None
                    break
                try:
                    message = inbox.get_nowait()
                except queue.Empty:
                    message = None
            if message is _END:  # the sweep is gone: finish what it sent
                _exit_after(ORPHAN_SECONDS)
                return
            if message in ("close", "idle"):
                writer.close()
                with contextlib.suppress(OSError):
                    connection.send(("closed",))
                if message == "close" or inbox.get() != "open":  # "open": the next sweep
                    return
                try:
                    writer = AimWriter(repo, lock_wait=LOCK_WAIT)
                except TrackingError as error:
                    connection.send(("failed", str(error)))
                    return
                connection.send(("ready", str(writer.path)))
                continue
            writer.flush()
            with contextlib.suppress(OSError):
                connection.send(("written", finished))
    finally:
        writer.close()


def _read(connection: Connection, inbox: queue.Queue[Any]) -> None:
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            inbox.put(_END)
            return
        inbox.put(message)
        if message == "close":
            return


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
