"""The trial channel over a queue with ``modal.Queue``'s API (``put``, ``get``, partitions).

Everything workers send goes to one partition (``UP``); the orchestrator reads it with
``get_many``. Replies to a worker go to a partition of its own attempt at its trial, so an
answer meant for a preempted container can never reach the one that replaced it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from typing import Any

from sweeper.channel._base import ChannelClosed, Transport

UP = "up"
"""The partition workers write to."""
HEARTBEAT_SECONDS = 10.0
REPLY_TIMEOUT = 600.0
"""How long a worker waits for an answer before it gives the trial up."""


def reply_partition(number: int, attempt: int) -> str:
    """Where the replies to attempt ``attempt`` at trial ``number`` go (under 64 bytes)."""
    return f"r{number}.{attempt:x}"


class QueueTransport(Transport):
    """A worker's end of the channel over a ``modal.Queue`` (or a stand-in with its API).

    ``queue`` is used from the worker's threads only through ``put`` and ``get``; it must be
    safe to share between threads, as ``modal.Queue`` is.
    """

    def __init__(
        self,
        queue_: Any,
        number: int,
        attempt: int,
        *,
        reply_timeout: float | None = None,
        heartbeat: float | None = None,
    ) -> None:
        reply_timeout = REPLY_TIMEOUT if reply_timeout is None else reply_timeout
        heartbeat = HEARTBEAT_SECONDS if heartbeat is None else heartbeat
        self._queue = queue_
        self._number = number
        self._attempt = attempt
        self._partition = reply_partition(number, attempt)
        self._reply_timeout = reply_timeout
        self._stop = threading.Event()
        self._beats: threading.Thread | None = None
        if heartbeat > 0:
            self._beats = threading.Thread(
                target=self._beat, args=(heartbeat,), name="sweeper-heartbeat", daemon=True
            )
            self._beats.start()

    def send(self, messages: Sequence[object]) -> None:
        try:
            self._queue.put(("calls", list(messages)), partition=UP)
        except ChannelClosed:
            raise
        except Exception as error:
            raise ChannelClosed(f"cannot reach the orchestrator: {error}") from None

    def receive(self, timeout: float | None = None) -> object:
        wait = self._reply_timeout if timeout is None else timeout
        try:
            return self._queue.get(partition=self._partition, timeout=wait)
        except queue.Empty:
            if timeout is not None:
                raise TimeoutError from None
            raise ChannelClosed(f"no answer from the orchestrator in {wait:.0f}s") from None
        except ChannelClosed:
            raise
        except Exception as error:
            raise ChannelClosed(f"cannot reach the orchestrator: {error}") from None

    def close(self) -> None:
        self._stop.set()

    def _beat(self, interval: float) -> None:
        """Tell the orchestrator this attempt is alive, so a lost one is noticed."""
        while not self._stop.wait(interval):
            try:
                self._queue.put(("beat", self._number, self._attempt), partition=UP)
            except Exception:
                return
