"""What the orchestrator needs from a place that runs trials."""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from sweeper._logging import get_logger
from sweeper.channel._messages import Call, Reply
from sweeper.trial._messages import TrialResult, TrialSpec

logger = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the user should hear about (a worker died and was replaced, ...)."""

    text: str
    level: str = "info"


@dataclass(frozen=True, slots=True)
class LoadFailed:
    """A worker could not load the objective; the message is one line, for the user."""

    message: str


@dataclass(frozen=True, slots=True)
class Output:
    """What a running trial printed (stdout and stderr), whole lines as they come; its log
    file keeps all of it."""

    number: int
    text: str


Event = Call | TrialResult | Notice | LoadFailed | Output


class Backend(abc.ABC):
    """Runs trials on workers; the orchestrator's only view of them.

    Contract (the orchestrator relies on each point, and the contract tests check them):

    - Every trial passed to :meth:`submit` yields exactly one :class:`TrialResult` from
      :meth:`poll`, whatever happens to its worker: a lost worker, a timeout or
      :meth:`cancel` yield a FAIL result with the reason. A second result for the same trial
      (a worker that was cancelled but answered anyway) is dropped here.
    - A trial's calls come out of :meth:`poll` in the order the worker made them, and before
      its result when the transport can promise it (results carry ``n_calls`` otherwise, and
      calls that come after the result are passed on too).
    - :meth:`submit` is called only while :meth:`free_slots` is positive.
    - :meth:`close` is called on every exit path, may be called twice, and leaves no worker
      running.
    - Everything is called from the orchestrator's thread, except :meth:`wake`, which any
      thread may call.

    Subclasses fill in the ``_hooks``; the public methods here do the bookkeeping.
    """

    def __init__(self) -> None:
        self._running: dict[int, TrialSpec] = {}
        self._cancelled: dict[int, str] = {}
        self._closed = False

    # -- public, with bookkeeping ------------------------------------------------------

    def start(self) -> None:
        """Start the workers (returns before they are ready; see :meth:`free_slots`)."""
        self._start()

    @property
    def running(self) -> Sequence[int]:
        """Numbers of the trials submitted and not yet finished."""
        return list(self._running)

    def free_slots(self) -> int:
        """How many trials may be submitted now."""
        if self._closed:
            return 0
        return self._free_slots()

    def submit(self, spec: TrialSpec) -> None:
        if spec.number in self._running:
            raise RuntimeError(f"trial {spec.number} is already running")
        self._running[spec.number] = spec
        self._submit(spec)

    def reply(self, reply: Reply) -> None:
        if reply.number in self._running and reply.number not in self._cancelled:
            self._reply(reply)

    def cancel(self, number: int, reason: str) -> None:
        """Stop trial ``number`` now; it finishes as FAIL with ``reason``."""
        if number in self._running and number not in self._cancelled:
            self._cancelled[number] = reason
            self._cancel(number, reason)

    def wind_down(self) -> None:
        """No more trials will be submitted: let idle workers go and do not replace lost ones.

        Running trials carry on; :meth:`poll` still reports their results.
        """
        self._wind_down()

    def poll(self, timeout: float | None) -> list[Event]:
        """Events since the last call, waiting up to ``timeout`` seconds for the first."""
        events: list[Event] = []
        for event in self._poll(timeout):
            if isinstance(event, TrialResult):
                if event.number not in self._running:
                    logger.debug("dropping a second result for trial %d", event.number)
                    continue
                self._running.pop(event.number)
                reason = self._cancelled.pop(event.number, None)
                if reason is not None:
                    event = replace(
                        event, state="FAIL", values=None, reason=reason, traceback=None
                    )
            events.append(event)
        return events

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close()

    def wake(self) -> None:
        """Make a :meth:`poll` in progress return now (from any thread): a trial is ready to
        be submitted."""
        self._wake()

    def now(self) -> float:
        """The clock trials run on, in seconds: ``time.monotonic()``, except on a simulated
        backend, whose trials take simulated time."""
        return time.monotonic()

    def watch_sampler(self, busy: Callable[[], bool]) -> None:  # noqa: B027 - optional
        """Learn how to see whether the orchestrator is in a sampler call. Real backends need
        not know; a simulated one (the capacity benchmark) must not skip its simulated time
        while the sampler works."""

    # -- hooks ---------------------------------------------------------------------------

    @abc.abstractmethod
    def _start(self) -> None: ...

    @abc.abstractmethod
    def _free_slots(self) -> int: ...

    @abc.abstractmethod
    def _submit(self, spec: TrialSpec) -> None: ...

    @abc.abstractmethod
    def _reply(self, reply: Reply) -> None: ...

    @abc.abstractmethod
    def _cancel(self, number: int, reason: str) -> None:
        """Stop the trial; a result for it must still come out of :meth:`_poll`."""

    @abc.abstractmethod
    def _poll(self, timeout: float | None) -> list[Event]: ...

    @abc.abstractmethod
    def _close(self) -> None: ...

    def _wind_down(self) -> None:  # noqa: B027 - an optional hook
        """Release what idle workers hold; by default nothing."""

    @abc.abstractmethod
    def _wake(self) -> None:
        """Make a :meth:`_poll` in progress return; called from any thread."""
