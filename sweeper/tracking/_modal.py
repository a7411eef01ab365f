"""Tracking on Modal: events go over the sweep's queue to the Aim hub container."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sweeper.tracking._events import Event
from sweeper.tracking._tracker import BatchingTracker, TrackingUnavailable

if TYPE_CHECKING:
    from sweeper.backends._modal import ModalBackend

HUB_CLOSE_SECONDS = 600.0


class ModalTracker(BatchingTracker):
    """Sends tracking events to the Aim hub, the one writer of the repo on the Volume.

    The hub is started in the sweep's App when tracking starts; it writes, commits the Volume
    every so often, and on close indexes and commits once more before the App stops.
    """

    def __init__(self, backend: ModalBackend) -> None:
        super().__init__()
        self._backend = backend

    def _open(self) -> None:
        from sweeper.backends._modal_app import new_secret

        try:
            self._backend.start_hub(new_secret())
        except Exception as error:
            raise TrackingUnavailable(f"the Aim hub cannot start ({error})") from None

    def _send(self, batch: list[Event]) -> None:
        self._backend.send_tracking(batch)

    def _finish(self) -> None:
        if not self._backend.close_hub(HUB_CLOSE_SECONDS):
            raise TrackingUnavailable(
                "the Aim hub did not finish writing in time; the last events may be missing"
            )
