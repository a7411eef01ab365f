"""The worker's end of the trial channel.

A transport moves messages and nothing else: :meth:`Transport.send` and
:meth:`Transport.receive`. Everything above it (numbering calls, batching one-way calls,
matching replies, turning an orchestrator-side error back into an exception) is
:class:`TrialChannel`, shared by every backend.
"""

from __future__ import annotations

import abc
import threading
import time
from collections.abc import Sequence
from typing import Any

from sweeper._errors import SweeperError
from sweeper.channel._messages import Call, Reply


class ChannelClosed(SweeperError):
    """The orchestrator went away; the trial cannot continue."""


class Transport(abc.ABC):
    """Moves messages between one worker and the orchestrator.

    Contract: messages passed to :meth:`send` arrive in order; :meth:`receive` returns the
    next message addressed to this worker. A transport is used by one thread at a time.
    """

    @abc.abstractmethod
    def send(self, messages: Sequence[object]) -> None:
        """Send ``messages`` to the orchestrator, in order."""

    @abc.abstractmethod
    def receive(self, timeout: float | None = None) -> object:
        """Return the next message for this worker; raise ``TimeoutError`` after ``timeout``
        seconds and :class:`ChannelClosed` when the orchestrator is gone."""


class TrialChannel:
    """Calls on the orchestrator's live trial, made from a worker.

    One-way calls (``report``, ``set_user_attr``, suggestions answered locally) are queued and
    sent in batches: when a call needs an answer, when the trial ends, when ``max_batch``
    calls are waiting, or ``max_delay`` seconds after the oldest one was queued (a
    background thread sends it when nothing else does). With ``max_delay=0`` every call is
    sent at once.
    """

    def __init__(
        self,
        transport: Transport,
        number: int,
        *,
        attempt: int = 0,
        max_delay: float = 0.0,
        max_batch: int = 256,
    ) -> None:
        self._transport = transport
        self._number = number
        self._attempt = attempt
        self._max_delay = max_delay
        self._max_batch = max_batch
        self._seq = 0
        self._pending: list[Call] = []
        self._oldest = 0.0
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._flusher: threading.Thread | None = None
        if max_delay > 0:
            self._flusher = threading.Thread(
                target=self._flush_periodically, name="sweeper-channel-flush", daemon=True
            )
            self._flusher.start()

    @property
    def n_calls(self) -> int:
        """How many calls this channel has numbered so far."""
        return self._seq

    def notify(self, method: str, *args: Any, **kwargs: Any) -> None:
        """Queue a call whose answer the worker does not need."""
        with self._lock:
            self._seq += 1
            if not self._pending:
                self._oldest = time.monotonic()
            self._pending.append(
                Call(self._number, self._seq, method, args, kwargs, False, self._attempt)
            )
            if self._max_delay <= 0 or len(self._pending) >= self._max_batch:
                self._send_pending()

    def request(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Make a call and wait for its answer; an error on the orchestrator is raised here."""
        with self._lock:
            self._seq += 1
            seq = self._seq
            self._pending.append(
                Call(self._number, seq, method, args, kwargs, True, self._attempt)
            )
            self._send_pending()
            while True:
                message = self._transport.receive()
                if isinstance(message, Reply) and message.seq == seq:
                    break
        if message.error is not None:
            raise message.error
        return message.value

    def flush(self) -> None:
        """Send every queued call now."""
        with self._lock:
            self._send_pending()

    def close(self) -> None:
        """Send what is queued and stop the background sender."""
        self._closed.set()
        self.flush()
        if self._flusher is not None:
            self._flusher.join(timeout=5)

    def _send_pending(self) -> None:
        if self._pending:
            batch, self._pending = self._pending, []
            self._transport.send(batch)

    def _flush_periodically(self) -> None:
        while not self._closed.wait(self._max_delay / 2):
            with self._lock:
                if self._pending and time.monotonic() - self._oldest >= self._max_delay:
                    self._send_pending()
