"""What a sweep tells whoever shows it: the :class:`Reporter` the orchestrator talks to,
and the values it hands over when the sweep starts and ends.

The progress displays (:mod:`sweeper.progress`) implement it; the orchestrator knows
nothing of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sweeper._cost import Spend

if TYPE_CHECKING:
    from sweeper.orchestrator._stats import FinishedTrial, Snapshot


@dataclass(frozen=True)
class SweepInfo:
    """Shown once when the sweep starts."""

    objective: str
    study: str
    storage: str
    backend: str
    parallel: int
    directions: tuple[str, ...]
    sampler: str
    pruner: str
    n_trials: int | None
    timeout: float | None
    log_dir: str
    resumed_trials: int = 0


@dataclass(frozen=True)
class BestTrial:
    number: int
    values: tuple[float, ...]
    params: dict[str, Any]


@dataclass(frozen=True)
class SweepSummary:
    """Shown when the sweep ends."""

    study: str
    storage: str
    directions: tuple[str, ...]
    elapsed: float
    counts: dict[str, int]
    totals: dict[str, int]
    best: list[BestTrial] = field(default_factory=list)
    stop_reason: str | None = None
    log_dir: str | None = None
    aim_repo: str | None = None
    returned: int = 0
    """Trials asked ahead that never started, back in the study's queue (WAITING)."""
    spend: Spend | None = None
    """What the sweep's trials cost, when they cost anything (not on local workers)."""


class Reporter:
    """Receives what happens in a sweep and shows it. The base class shows nothing.

    Called from the orchestrator's thread only. ``update`` is called often (many times a
    second); implementations throttle their own redrawing.
    """

    def begin(self, info: SweepInfo) -> None:
        """The sweep starts."""

    def note(self, text: str, level: str = "info") -> None:
        """A message for the user: ``info``, ``warning`` or ``debug``."""

    def trial_output(self, number: int, text: str) -> None:
        """What trial ``number`` printed (its stdout and stderr, ``print`` and ``logging``),
        in pieces as it comes; the trial's log file keeps all of it."""

    def trial_finished(self, trial: FinishedTrial, snapshot: Snapshot, new_best: bool) -> None:
        """A trial was told to the study."""

    def trial_failed(self, trial: FinishedTrial, first_of_kind: bool) -> None:
        """A trial failed; ``first_of_kind`` is False when an earlier one failed the same way."""

    def update(self, snapshot: Snapshot) -> None:
        """The sweep's state, for live displays."""

    def end(self, summary: SweepSummary) -> None:
        """The sweep is over; show the summary."""

    def close(self) -> None:
        """Release the display; called on every exit path, after ``end`` if it was called."""
