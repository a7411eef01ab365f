"""The worker's end of the trial channel.

A transport moves messages and nothing else: :meth:`Transport.send` and
:meth:`Transport.receive`. Everything above it (numbering calls, batching one-way calls,
matching replies, turning an orchestrator-side error back into an exception) is
:class:`TrialChannel`, shared by every backend.
"""

from __future__ import annotations

import abc
import contextlib
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

    One-way calls (``report``, ``log``, ``set_user_attr``, suggestions answered locally) are
    queued and sent in batches: when a call needs an answer, when the trial ends, when
    ``max_batch`` calls are waiting, or ``max_delay`` seconds after the oldest one was queued
    (one background thread per process sends those). With ``max_delay=0`` every call is
    sent at once. Calls reach the orchestrator in the order they were made.
    """

    def __init__(
        self,
        transport: Transport,
        number: int,
        *,
        attempt: int = 0,
        max_delay: float = 0.0,
        max_batch: int = 256,
        cheap_sends: bool = True,
    ) -> None:
        self.cheap_sends = cheap_sends
        """Whether a send costs next to nothing (a local pipe), so that what should be
        recorded even if the worker dies a moment later is sent at once; where a send is a
        network round trip (a Modal queue), it goes with the next message instead."""
        self._transport = transport
        self._number = number
        self._attempt = attempt
        self._max_delay = max_delay
        self._max_batch = max_batch
        self._seq = 0
        self._pending: list[Call] = []
        self._oldest = 0.0
        self._lock = threading.Lock()

    @property
    def n_calls(self) -> int:
        """How many calls this channel has numbered so far."""
        return self._seq

    def notify(self, method: str, *args: Any, urgent: bool = False, **kwargs: Any) -> None:
        """Queue a call whose answer the worker does not need.

        An ``urgent`` call goes out at once (with what is queued before it): use it for what
        must be recorded even if the worker dies a moment later, such as a parameter the
        objective has just been given.
        """
        with self._lock:
            self._seq += 1
            first = not self._pending
            self._pending.append(
                Call(self._number, self._seq, method, args, kwargs, False, self._attempt)
            )
            if urgent or self._max_delay <= 0 or len(self._pending) >= self._max_batch:
                self._send_pending()
            elif first:
                self._oldest = time.monotonic()
                _flusher().watch(self)

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

    def flush(self, older_than: float = 0.0) -> None:
        """Send the queued calls now (only if the oldest has waited ``older_than`` seconds)."""
        with self._lock:
            if self._pending and time.monotonic() - self._oldest >= older_than:
                self._send_pending()

    def close(self) -> None:
        """Send what is queued; the trial is over."""
        self.flush()

    @property
    def waiting(self) -> bool:
        return bool(self._pending)

    def _send_pending(self) -> None:
        if self._pending:
            batch, self._pending = self._pending, []
            self._transport.send(batch)


class _Flusher:
    """One thread per process that sends batches nobody else sent in time."""

    def __init__(self) -> None:
        self._channels: set[TrialChannel] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        threading.Thread(target=self._run, name="sweeper-channel-flush", daemon=True).start()

    def watch(self, channel: TrialChannel) -> None:
        with self._lock:
            self._channels.add(channel)
        self._wake.set()

    def _run(self) -> None:
        while True:
            with self._lock:
                channels = list(self._channels)
            if not channels:
                self._wake.wait()
                self._wake.clear()
                continue
            delay = min(c._max_delay for c in channels)
            time.sleep(delay / 2)
            for channel in channels:
                # An error here is the worker's own thread's to meet and report.
                with contextlib.suppress(Exception):
                    channel.flush(older_than=channel._max_delay)
                if not channel.waiting:
                    with self._lock:
                        self._channels.discard(channel)


_FLUSHER: _Flusher | None = None
_FLUSHER_LOCK = threading.Lock()


def _flusher() -> _Flusher:
    global _FLUSHER
    with _FLUSHER_LOCK:
        if _FLUSHER is None:
            _FLUSHER = _Flusher()
        return _FLUSHER
