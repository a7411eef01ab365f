"""``python -m sweeper track --repair``: make an Aim repo agree with the storage, on demand.

A sweep reconciles the repo when it starts, trusting the writer's ledger for what it
wrote. A repair trusts nothing: for every finished trial it opens the run and compares its
state and curve with the storage, checks that the index lists it, rebuilds what differs,
and removes runs that claim a trial another run already shows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sweeper.tracking._reconcile import lag, plan

if TYPE_CHECKING:
    import optuna


LOCK_WAIT = 10.0
"""How long a repair waits for the repo's writer to finish (a sweep's, in the background)."""


@dataclass
class RepairReport:
    study: str
    finished: int
    rebuilt: int
    duplicates: int
    lagging_before: int


def repair(
    storage: optuna.storages.BaseStorage,
    studies: Sequence[str],
    repo: str | os.PathLike[str],
) -> list[RepairReport]:
    """Repair ``repo`` for each of ``studies``; raises TrackingError if a sweep is writing it."""
    from sweeper.tracking._writer import AimWriter

    reports = []
    writer = AimWriter(repo, verify=True, lock_wait=LOCK_WAIT)
    try:
        for study in studies:
            before = len(lag(storage, study, Path(repo)))
            event = plan(storage, study)  # every record: the runs are checked one by one
            rebuilt, duplicates = writer.stats.rebuilt, writer.stats.duplicates
            writer.remove_duplicates(study)
            writer.apply([event])
            writer.flush()
            reports.append(
                RepairReport(
                    study=study,
                    finished=len({s.root for s in event.finished}),
                    rebuilt=writer.stats.rebuilt - rebuilt,
                    duplicates=writer.stats.duplicates - duplicates,
                    lagging_before=before,
                )
            )
    finally:
        writer.close()
    return reports
