"""The study's storage, its samplers and pruners by name, and recovery of interrupted trials."""

from __future__ import annotations

from sweeper.study._components import PRUNERS, SAMPLERS, make_pruner, make_sampler
from sweeper.study._recovery import Recovery, SweepRecord, recover
from sweeper.study._storage import OpenedStorage, home, open_storage

__all__ = [
    "OpenedStorage",
    "PRUNERS",
    "Recovery",
    "SAMPLERS",
    "SweepRecord",
    "home",
    "make_pruner",
    "make_sampler",
    "open_storage",
    "recover",
]
