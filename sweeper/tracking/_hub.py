"""The local tracking hub: a process that owns the Aim repo and writes the events it is sent.

Started by :class:`~sweeper.tracking.Tracker` with ``main([..., FD, REPO])``. Writing in a
process of its own keeps Aim's work (and its imports) off the orchestrator, so tracking
does not hold up the sweep. It exits when told to, or when the orchestrator goes away.

Messages in: a list of events (write them), or ``"close"`` (finish every run, answer
``("closed",)`` and exit). Messages out: ``("ready", path)`` or ``("failed", reason)`` first.
"""

from __future__ import annotations

from collections.abc import Sequence
from multiprocessing.connection import Connection

from sweeper._process import child_main
from sweeper.tracking._writer import AimWriter, TrackingError


def serve(connection: Connection, repo: str) -> None:
    try:
        writer = AimWriter(repo)
    except TrackingError as error:
        connection.send(("failed", str(error)))
        return
    connection.send(("ready", str(writer.path)))
    try:
        while True:
            try:
                message = connection.recv()
            except (EOFError, OSError):
                return
            if message == "close":
                writer.close()
                connection.send(("closed",))
                return
            writer.apply(message)
    finally:
        writer.close()


def main(argv: Sequence[str]) -> None:
    child_main(lambda: serve(Connection(int(argv[1])), argv[2]))
