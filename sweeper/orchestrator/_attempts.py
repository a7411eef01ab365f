"""Which attempt of each running trial counts, and when its result may be told.

A trial restarted on a new worker (Modal preempted or retried its container) continues as
the same Optuna trial: the new attempt's ``started`` call takes over, and what an older
attempt still sends is dropped. A result is told only once every call its worker made
before it has been applied; on a transport where results and calls travel apart (Modal) the
result can arrive first, and waits for them (at most :data:`CALLS_GRACE` seconds).
"""

from __future__ import annotations

import time
from typing import Any

from sweeper.channel._messages import Call
from sweeper.trial._messages import TrialResult

CALLS_GRACE = 30.0
"""How long a result waits for the calls it counts that have not arrived."""


class Attempts:
    """The attempts of the running trials, their calls applied, and the results waiting for
    calls. Used from the orchestrator's thread only."""

    def __init__(self) -> None:
        self._current: dict[int, int] = {}
        self._applied: dict[int, int] = {}
        self._parked: dict[int, tuple[TrialResult, float]] = {}
        self._log: dict[int, list[dict[str, Any]]] = {}

    def accept(self, call: Call) -> bool:
        """Whether ``call`` is from its trial's current attempt (then it is counted as
        applied). A ``started`` call makes its attempt the current one."""
        number = call.number
        if call.method == "started":
            self._current[number] = call.attempt
            self._applied[number] = 0
        elif call.attempt != self._current.setdefault(number, call.attempt):
            return False
        self._applied[number] = self._applied.get(number, 0) + 1
        return True

    def record_start(
        self, number: int, worker: dict[str, Any], info: dict[str, Any]
    ) -> tuple[int, str | None, list[dict[str, Any]]]:
        """Note that an attempt of trial ``number`` started on ``worker`` (``info``: the
        attempt's number and why, as the backend says them). Returns the attempt's number,
        why it was made, and the trial's attempts so far."""
        log = self._log.setdefault(number, [])
        attempt = int(info.get("attempt") or len(log) + 1)
        why = info.get("why") or ("a new worker took it over" if attempt > 1 else None)
        log.append({"attempt": attempt, "worker": worker, "started": time.time(), "why": why})
        return attempt, why, log

    def park(self, result: TrialResult) -> bool:
        """Keep ``result`` back while calls of its attempt are missing; whether it was."""
        number = result.number
        current = self._current.get(number, result.attempt)
        if result.attempt == current and result.n_calls > self._applied.get(number, 0):
            self._parked[number] = (result, time.monotonic() + CALLS_GRACE)
            return True
        return False

    def ready(self, number: int) -> TrialResult | None:
        """The result kept back for trial ``number``, once all its calls are applied (it is
        no longer kept)."""
        parked = self._parked.get(number)
        if parked is not None and self._applied[number] >= parked[0].n_calls:
            del self._parked[number]
            return parked[0]
        return None

    def overdue(self) -> list[tuple[TrialResult, int]]:
        """The results kept back longer than :data:`CALLS_GRACE` (no longer kept), each with
        how many of its calls never arrived."""
        now = time.monotonic()
        due = []
        for number, (result, deadline) in list(self._parked.items()):
            if deadline <= now:
                del self._parked[number]
                due.append((result, result.n_calls - self._applied.get(number, 0)))
        return due

    @property
    def waiting(self) -> bool:
        """Whether a result is kept back."""
        return bool(self._parked)

    def finish(self, number: int) -> list[dict[str, Any]]:
        """Forget trial ``number``, told now; returns its attempts."""
        self._current.pop(number, None)
        self._applied.pop(number, None)
        return self._log.pop(number, [])
