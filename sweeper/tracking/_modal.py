"""Tracking on Modal: events go over the sweep's queue to the Aim hub container.

The hub owns the repo on the Volume and cannot read the study's storage, which stays on
this machine: the reconcile is read here and sent to it as events (every finished trial's
record: the repo is not readable from here). A hub that dies is started again, once it is
certainly gone (two writers of one Volume would lose each other's work), and reconciled;
what it had not committed is rebuilt from the storage.
"""

from __future__ import annotations

import asyncio
import pickle
import time
from typing import TYPE_CHECKING, Any

from sweeper._logging import get_logger
from sweeper.tracking._events import Event, Rebuild, Reconcile
from sweeper.tracking._tracker import BatchingTracker, TrackingUnavailable

if TYPE_CHECKING:
    from sweeper.backends._modal import ModalBackend

logger = get_logger(__name__)

HUB_CLOSE_SECONDS = 600.0
MAX_ITEM_BYTES = 512 * 1024
"""A Modal Queue item is at most 1 MiB: batches are cut well below."""
_WAIT_SLICE = 5.0


class ModalTracker(BatchingTracker):
    """Sends tracking events to the Aim hub, the one writer of the repo on the Volume.

    The hub is started in the sweep's App when tracking starts; it writes, commits the Volume
    every so often, and on close indexes and commits once more before the App stops.
    """

    _restartable = True
    check_seconds = 10.0  # one request to Modal each time

    def __init__(self, backend: ModalBackend) -> None:
        super().__init__()
        self._backend = backend

    def _open(self) -> None:
        from sweeper.tracking._readonly import new_secret

        try:
            self._backend.start_hub(new_secret())
        except Exception as error:
            raise TrackingUnavailable(f"the Aim hub cannot start ({error})") from None

    def _send(self, batch: list[Event]) -> None:
        for part in split_for_queue(batch):
            self._backend.send_tracking(part)

    def _finish(self) -> None:
        if self._backend.close_hub(_WAIT_SLICE):  # asks the hub to close, once
            return
        closed = getattr(self._backend, "_hub_closed", None)
        deadline = time.monotonic() + HUB_CLOSE_SECONDS
        while closed is not None and time.monotonic() < deadline:
            if hub_has_ended(self._backend):  # its "closed" may still be on its way
                if closed.wait(_WAIT_SLICE):
                    return
                raise TrackingUnavailable("the Aim hub stopped before it finished writing")
            if closed.wait(_WAIT_SLICE):
                return
        raise TrackingUnavailable(
            "the Aim hub did not finish writing in time; the last events may be missing"
        )

    def _check(self) -> None:
        if hub_has_ended(self._backend):
            raise TrackingUnavailable("the Aim hub container stopped")

    def _cleanup(self) -> None:
        # A hub started again must not think the last one's "closed" is its own.
        closed = getattr(self._backend, "_hub_closed", None)
        if closed is not None and hub_has_ended(self._backend):
            closed.clear()


def hub_has_ended(backend: Any) -> bool:
    """Whether the backend's Aim hub call has returned or failed (its container is gone).

    Asks Modal for the spawned call's output without waiting, in the backend's event loop.
    """
    call, loop = getattr(backend, "_hub_call", None), getattr(backend, "_loop", None)
    if call is None or loop is None or loop.is_closed():
        return False

    async def ended() -> bool:
        try:
            await call.get.aio(timeout=0)
        except TimeoutError:  # Python's: no output yet (Modal's own TimeoutError is not one)
            return False
        except Exception:  # it failed, was killed, or its output expired
            return True
        return True

    try:
        return asyncio.run_coroutine_threadsafe(ended(), loop).result(timeout=30)
    except Exception as error:
        logger.debug("tracking: cannot tell whether the Aim hub runs: %s", error)
        return False


def split_for_queue(batch: list[Event], limit: int = MAX_ITEM_BYTES) -> list[list[Event]]:
    """``batch`` cut into parts that each pickle to at most ``limit`` bytes; a reconcile or
    rebuild too large for one item is cut into several of its kind."""
    if len(pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)) <= limit:
        return [batch]
    if len(batch) > 1:
        middle = len(batch) // 2
        return split_for_queue(batch[:middle], limit) + split_for_queue(batch[middle:], limit)
    event = batch[0]
    if isinstance(event, Rebuild) and len(event.records) > 1:
        middle = len(event.records) // 2
        halves = [event.records[:middle], event.records[middle:]]
        return [
            part
            for records in halves
            for part in split_for_queue([Rebuild(event.study, records)], limit)
        ]
    if isinstance(event, Reconcile) and (len(event.records) > 0 or len(event.finished) > 1):
        # The records go first, as rebuilds; the reconcile itself only needs the summaries.
        parts = (
            split_for_queue([Rebuild(event.study, event.records)], limit) if event.records else []
        )
        summaries = event.finished
        pieces = max(1, -(-len(pickle.dumps(summaries)) // (limit // 2)))
        size = -(-len(summaries) // pieces)
        chunks = [summaries[i : i + size] for i in range(0, len(summaries), size)] or [()]
        for index, chunk in enumerate(chunks):
            parts.append(
                [
                    Reconcile(
                        event.study,
                        event.directions,
                        tuple(chunk),
                        (),
                        retries=event.retries if index == len(chunks) - 1 else (),
                        part=index,
                        parts=len(chunks),
                    )
                ]
            )
        return parts
    logger.warning("tracking: a %s event is too large for Modal's queue; skipped", type(event))
    return []
